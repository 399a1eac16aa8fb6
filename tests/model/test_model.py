import math

import pytest
import torch
import torchvision

from retinanet import ModelConfig, build_model, get_model
from retinanet.model.backbone import FrozenBatchNorm2d


def _tiny(**kw):
    cfg = dict(backbone="resnet18", num_classes=3, min_size=128, max_size=128, size_divisor=128, freeze_at=0, norm="bn")
    cfg.update(kw)
    return build_model(ModelConfig(**cfg))


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 20, 60, 70], [70, 70, 120, 110]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def test_train_forward_backward_and_contract():
    torch.manual_seed(0)
    model = _tiny().train()
    losses = model([torch.rand(3, 128, 128), torch.rand(3, 100, 128)], _targets())
    assert set(losses) == {"cls", "box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    (losses["cls"] + losses["box"]).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0
    assert model.head.box_pred.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad is not None


def test_images_without_boxes_are_all_background():
    torch.manual_seed(0)
    model = _tiny().train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model([torch.rand(3, 128, 128)] * 2, [empty, empty])
    assert losses["box"].item() == 0.0
    # all anchors background at prior π = 0.01, normalizer clamped to 1: the sum of
    # FL over every anchor and class, -0.75 * 0.01^2 * log(0.99) each
    n = model.anchor_generator([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], (128, 128))[0].shape[0]
    expected = 2 * n * 3 * -(0.75 * 0.01**2 * math.log(0.99))
    assert losses["cls"].item() == pytest.approx(expected, rel=0.05)
    losses["cls"].backward()


def test_eval_contract_boxes_in_input_coordinates():
    torch.manual_seed(0)
    model = _tiny(score_thresh=0.0, detections_per_img=50).eval()
    with torch.no_grad():
        dets = model([torch.rand(3, 64, 96), torch.rand(3, 200, 150)])
    assert len(dets) == 2
    for d, (h, w) in zip(dets, [(64, 96), (200, 150)]):
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape == (50, 4) and d["scores"].shape == (50,) and d["labels"].dtype == torch.int64
        assert (d["boxes"][:, 0::2] <= w + 1e-3).all() and (d["boxes"][:, 1::2] <= h + 1e-3).all()
        assert (d["boxes"] >= 0).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all()


def test_batch_tensor_and_uint8_input():
    torch.manual_seed(0)
    model = _tiny(score_thresh=0.0).eval()
    x = torch.rand(2, 3, 128, 128)
    as_uint8 = (x[0] * 255).round().to(torch.uint8)
    with torch.no_grad():
        a = model(x)
        b = model([as_uint8, x[1]])
        c = model([as_uint8.float() / 255, x[1]])  # what the uint8 image must mean: k / 255
    assert torch.allclose(a[1]["scores"], b[1]["scores"])  # a batch tensor is a list of its images
    # The uint8 image itself: the same detections as its float image k / 255 (without the / 255
    # every pixel would be 255x too bright and nothing would match).
    assert len(b[0]["scores"]) > 0
    assert torch.equal(b[0]["labels"], c[0]["labels"])
    assert torch.allclose(b[0]["scores"], c[0]["scores"]) and torch.allclose(b[0]["boxes"], c[0]["boxes"])


@pytest.mark.parametrize("name", ["retinanet_r18_fpn", "retinanet_r50_fpn"])
def test_prior_probability_init(name):
    # §3.3: a fresh model predicts foreground probability ~π = 0.01 at every anchor
    torch.manual_seed(0)
    model = get_model(name, num_classes=20, min_size=256, max_size=256).eval()
    feats = model.fpn(model.backbone(model.preprocess([torch.rand(3, 256, 256), torch.rand(3, 256, 256)])[0]))
    with torch.no_grad():
        cls_logits, _ = model.head(feats)
    mean_p = cls_logits.sigmoid().mean().item()
    assert abs(mean_p - 0.01) < 0.002, mean_p


def test_freezing_and_norms():
    model = _tiny(freeze_at=2, norm="bn")
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert not model.backbone.conv1.weight.requires_grad
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())
    assert isinstance(model.backbone.bn1, FrozenBatchNorm2d)
    assert isinstance(model.backbone.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(model.backbone.layer2[0].bn1, torch.nn.BatchNorm2d)
    gn = _tiny(norm="gn", head_norm="gn")
    assert isinstance(gn.backbone.bn1, torch.nn.GroupNorm)
    assert isinstance(gn.head.cls_subnet[0][1], torch.nn.GroupNorm)
    model = _tiny(freeze_at=5)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_p6_from_c5_or_p5():
    assert _tiny(p6_from="c5").fpn.p6.in_channels == 512
    assert _tiny(p6_from="p5").fpn.p6.in_channels == 256


def test_loss_normalizers_differ_as_defined():
    torch.manual_seed(0)
    batch_model = _tiny().train()
    image_model = _tiny(loss_normalizer="image").train()
    image_model.load_state_dict(batch_model.state_dict())
    imgs = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    tg = [_targets()[0], {"boxes": torch.tensor([[5.0, 5, 100, 120]]), "labels": torch.tensor([1])}]
    crit = batch_model.criterion
    torch.manual_seed(1)
    lb = batch_model(imgs, tg)
    torch.manual_seed(1)
    li = image_model(imgs, tg)
    # recompute by hand from the per-image pieces
    feats = batch_model.fpn(batch_model.backbone(batch_model.preprocess(imgs)[0]))
    cls, box = batch_model.head(feats)
    anchors, _ = batch_model.anchor_generator([tuple(f.shape[-2:]) for f in feats], (128, 128))
    per = [crit(cls[i : i + 1], box[i : i + 1], anchors, tg[i : i + 1]) for i in range(2)]
    _, _, fg = crit.assign(anchors, tg)
    n = fg.sum(1).float()
    torch.testing.assert_close(li["cls"], (per[0]["cls"] + per[1]["cls"]) / 2)
    torch.testing.assert_close(lb["cls"], (per[0]["cls"] * n[0] + per[1]["cls"] * n[1]) / n.sum())
    torch.testing.assert_close(lb["box"], (per[0]["box"] * n[0] + per[1]["box"] * n[1]) / n.sum())


def test_bad_targets_get_clear_errors():
    model = _tiny().train()
    img = [torch.rand(3, 128, 128)]
    # device-side asserts (no synchronisation in the training step): RuntimeError on the CPU
    with pytest.raises(RuntimeError, match="degenerate"):
        model(img, [{"boxes": torch.tensor([[10.0, 10, 5, 20]]), "labels": torch.tensor([0])}])
    with pytest.raises(RuntimeError, match="labels must be in"):
        model(img, [{"boxes": torch.tensor([[10.0, 10, 50, 20]]), "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="needs targets"):
        model(img)
    with pytest.raises(ValueError, match="expected shape"):
        model.eval()([torch.rand(1, 64, 64)])


def test_overfits_one_image():
    # FPN + head learn one image: the summed loss must fall well below its start. (Without
    # warmup, lr 0.01 on a single image diverges: the background sum over thousands of anchors
    # is divided by a handful of positives; the training recipe warms up for this reason.)
    torch.manual_seed(0)
    model = _tiny(freeze_at=5).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    img = [torch.rand(3, 128, 128)]
    tg = [_targets()[0]]
    history = []
    for _ in range(30):
        losses = model(img, tg)
        loss = losses["cls"] + losses["box"]
        history.append(loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    assert history[-1] < 0.7 * history[0], history


def test_retinanet_r34_fpn_is_resnet34_and_predicts():
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(0)
    model = get_model("retinanet_r34_fpn", num_classes=4, min_size=64, max_size=64, score_thresh=0.0)
    bb = model.backbone
    # ResNet-34: basic blocks, 3-4-6-3 per stage, torchvision's tensors without the classifier
    # (21.27 M convolution weights; the frozen BatchNorms hold theirs as buffers)
    assert [len(bb.layer1), len(bb.layer2), len(bb.layer3), len(bb.layer4)] == [3, 4, 6, 3]
    assert all(isinstance(b, BasicBlock) for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4) for b in layer)
    assert sum(p.numel() for p in bb.parameters()) == 21_267_648
    reference = torchvision.models.resnet34().state_dict()
    shapes = {k: v.shape for k, v in reference.items() if not k.startswith("fc.") and "num_batches" not in k}
    assert {k: v.shape for k, v in bb.state_dict().items()} == shapes
    assert bb.out_channels == (128, 256, 512) and model.fpn.lateral[0].in_channels == 128
    assert model.head.cls_score.out_channels == 9 * 4
    with torch.no_grad():
        (det,) = model.eval()([torch.rand(3, 64, 64)])
    assert det["boxes"].shape == (100, 4) and det["labels"].max() < 4
    assert torch.isfinite(det["boxes"]).all() and (det["boxes"] >= 0).all() and (det["boxes"] <= 64).all()
    assert (det["scores"][:-1] >= det["scores"][1:]).all() and (det["scores"] > 0).all()

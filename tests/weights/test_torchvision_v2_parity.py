"""Parity with torchvision's retinanet_resnet50_fpn_v2 (P6 from C5, GroupNorm head, GIoU loss):
same weights, same detections and training losses; the GIoU loss itself."""

import pytest
import torch
import torchvision
from helpers import assert_same_detections

from retinanet import from_torchvision, get_model, load_model
from retinanet.model.assignment import BoxCoder, Matcher
from retinanet.model.backbone import freeze_batchnorm
from retinanet.model.config import torchvision_v2_config
from retinanet.model.criterion import RetinaNetCriterion
from retinanet.weights.torchvision import convert_torchvision_state_dict, torchvision_version


@pytest.fixture(scope="module")
def tv_v2():
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        for m in tv.modules():  # non-trivial normalisation parameters, so that their conversion matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        head = tv.head.classification_head.cls_logits
        head.bias.copy_(torch.randn_like(head.bias) - 1)  # detections at every score, none saturated
        tv.head.regression_head.bbox_reg.weight.mul_(3)
    return freeze_batchnorm(tv)  # as torchvision builds its published (pretrained) model


def test_v2_is_read_from_the_keys_and_configured_like_torchvision(tv_v2):
    state = tv_v2.state_dict()
    assert torchvision_version(state) == 2
    ours = from_torchvision(state)
    assert ours.config == torchvision_v2_config(91)
    cfg = ours.config
    assert (cfg.p6_from, cfg.head_norm, cfg.box_loss, cfg.anchor_style) == ("c5", "gn", "giou", "torchvision")
    # v2's head convs have no bias: ours are zero, every other tensor is torchvision's
    converted = convert_torchvision_state_dict(state)
    assert torch.equal(converted["head.cls_subnet.0.0.bias"], torch.zeros(256))
    mine = ours.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in converted.items())
    # the named variant is the same architecture
    assert get_model("retinanet_r50_fpn_v2", num_classes=91).config == cfg.replace(pretrained_backbone=False)


@pytest.mark.slow
def test_v2_inference_parity_two_sizes(tv_v2):
    tv = tv_v2.eval()
    tv.score_thresh = 0.0
    ours = from_torchvision(tv.state_dict(), score_thresh=0.0).eval()
    torch.manual_seed(1)
    images = [torch.rand(3, 300, 400), torch.rand(3, 480, 360)]  # two sizes, one padded batch
    with torch.no_grad():
        expected = tv(images)
        got = ours(images)
    for a, b in zip(expected, got):
        assert len(a["boxes"]) == 300
        assert_same_detections(a, b)


@pytest.mark.slow
def test_v2_training_loss_parity_with_giou(tv_v2):
    tv = tv_v2.train()
    ours = from_torchvision(tv.state_dict()).train()
    torch.manual_seed(2)
    images = [torch.rand(3, 320, 427), torch.rand(3, 256, 320)]
    targets = [
        {
            "boxes": torch.tensor([[20.0, 30, 200, 220], [150, 100, 410, 300], [5, 5, 30, 25]]),
            "labels": torch.tensor([1, 17, 60]),
        },
        {"boxes": torch.tensor([[40.0, 50, 120, 200]]), "labels": torch.tensor([3])},
    ]
    expected = tv(images, targets)
    got = ours(images, targets)
    torch.testing.assert_close(got["cls"], expected["classification"], rtol=1e-4, atol=0)
    torch.testing.assert_close(got["box"], expected["bbox_regression"], rtol=1e-4, atol=0)


def test_giou_box_loss_is_torchvisions_on_decoded_boxes():
    # By hand: [0,0,2,2] vs [1,1,3,3]: IoU 1/7, enclosing box 9, union 7 -> GIoU 1/7 - 2/9, loss 1 - GIoU.
    a, b = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    assert torchvision.ops.generalized_box_iou_loss(a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-6)

    torch.manual_seed(3)
    xy = torch.rand(50, 2) * 200
    anchors = torch.cat([xy, xy + 20 + torch.rand(50, 2) * 60], 1)
    gt = anchors + torch.randn(50, 4) * 4  # each anchor's ground truth near it: all foreground
    gt = torch.cat([gt[:, :2], torch.maximum(gt[:, 2:], gt[:, :2] + 5)], 1)
    deltas = torch.randn(1, 50, 4) * 0.2
    crit = RetinaNetCriterion(Matcher(0.5, 0.4, True), BoxCoder(), box_loss="giou")
    targets = [{"boxes": gt, "labels": torch.zeros(50, dtype=torch.long)}]
    losses = crit(torch.zeros(1, 50, 2), deltas, anchors, targets)
    _, matched, fg = crit.assign(anchors, targets)
    assert fg.sum() >= 40
    pred = BoxCoder().decode(deltas[0][fg[0]], anchors[fg[0]])
    expected = torchvision.ops.generalized_box_iou_loss(pred, matched[0][fg[0]], reduction="sum") / fg.sum()
    torch.testing.assert_close(losses["box"], expected, rtol=1e-6, atol=0)


def test_published_v2_weights_name(torch_home, tv_v2):
    from pathlib import Path

    from retinanet.utils.download import cached_path
    from retinanet.weights.zoo import TORCHVISION_COCO_V2_URL

    path = Path(cached_path(TORCHVISION_COCO_V2_URL))
    path.parent.mkdir(parents=True)
    torch.save(tv_v2.state_dict(), path)
    a = load_model("torchvision-coco-v2")
    b = get_model("retinanet_r50_fpn_v2", weights="torchvision-coco")
    assert a.model.config == b.config == torchvision_v2_config(91)
    assert a.labels_are_category_ids and a.class_names[1] == "person"
    # fine-tuning from v2: a 3-class model keeps every tensor but the class layer
    three = load_model("torchvision-coco-v2", num_classes=3)
    assert set(three.report.reinitialised) == {"head.cls_score.weight", "head.cls_score.bias"}

"""grouped_nms against torchvision's batched_nms: the same kept indices in the same order."""

import pytest
import torch
from torchvision.ops import batched_nms

from retinanet.model.assignment import BoxCoder
from retinanet.model.postprocess import grouped_nms, postprocess_detections


def random_boxes(n: int, num_groups: int, seed: int, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300 + offset
    wh = torch.rand(n, 2, generator=g) * 60 + 2
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, num_groups, (n,), generator=g)
    return boxes, scores, groups


@pytest.mark.parametrize(
    "n,num_groups,chunk", [(3000, 728, 256), (3000, 728, 7), (5000, 3, 256), (400, 1, 64), (2000, 2000, 256)]
)
def test_grouped_nms_equals_batched_nms(n, num_groups, chunk):
    boxes, scores, groups = random_boxes(n, num_groups, seed=n + num_groups)
    ref = batched_nms(boxes, scores, groups, 0.5)
    got = grouped_nms(boxes, scores, groups, 0.5, chunk_size=chunk)
    assert 0 < ref.numel() < n or num_groups == n  # the case has work: some boxes suppressed
    assert torch.equal(got, ref)


def test_grouped_nms_negative_coordinates_and_large_groups_ids():
    boxes, scores, groups = random_boxes(1500, 50, seed=3, offset=-400.0)
    groups = groups * 100_000 + 7  # sparse, large group ids
    assert torch.equal(grouped_nms(boxes, scores, groups, 0.4, chunk_size=100), batched_nms(boxes, scores, groups, 0.4))


def test_grouped_nms_hand_case_and_empty():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # Boxes 0 and 1 overlap at IoU 81/119 = 0.68 in the same group: 1 goes. Box 2 is box 0 in another group: stays.
    assert grouped_nms(boxes, scores, torch.tensor([0, 0, 1, 0]), 0.5, chunk_size=2).tolist() == [0, 2, 3]
    assert grouped_nms(boxes, scores, torch.tensor([0, 0, 1, 0]), 0.7).tolist() == [0, 1, 2, 3]
    empty = grouped_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0


def _torchvision_postprocess(cls, box, anchors, per_level, image_sizes, score_thresh, topk, nms_thresh, per_img):
    """torchvision's per-image RetinaNet post-processing on the same head outputs and anchors."""
    from types import SimpleNamespace

    from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
    from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

    settings = SimpleNamespace(
        box_coder=TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)),
        score_thresh=score_thresh,
        topk_candidates=topk,
        nms_thresh=nms_thresh,
        detections_per_img=per_img,
    )
    head = {"cls_logits": list(cls.split(per_level, dim=1)), "bbox_regression": list(box.split(per_level, dim=1))}
    split_anchors = [list(anchors.split(per_level))] * cls.shape[0]
    return TorchvisionRetinaNet.postprocess_detections(settings, head, split_anchors, image_sizes)


def _sorted(d):
    """Detections in one canonical order (score, then label, then box), so that tied scores compare."""
    keys = [(-s, lab, *b) for s, lab, b in zip(d["scores"].tolist(), d["labels"].tolist(), d["boxes"].tolist())]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return {k: v[order] for k, v in d.items()}


def _head_outputs():
    """Two images, K = 3 classes, three levels of 60, 20 and 6 anchors. Image 0 has many scores
    above 0.05 (its top-k of 40 and its cap of 25 bind), image 1 few (the threshold decides).
    Ties: anchor 3 has one logit for all three classes, three anchors of level 1 share a logit,
    and anchors 10 and 11 are one box with one delta and one logit, ranked 40th and 41st of
    image 0's level 0: a top-k of 40 keeps either, the same detection."""
    g = torch.Generator().manual_seed(0)
    per_level = [60, 20, 6]
    n, k = sum(per_level), 3
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 40 + 8
    anchors = torch.cat((xy, xy + wh), 1)
    cls = torch.randn(2, n, k, generator=g) * 1.5 - 2.5
    cls[1] -= 3.0  # image 1: few candidates above the threshold
    box = torch.randn(2, n, 4, generator=g) * 0.3
    cls[:, 3] = 1.25  # three tied classes of one anchor
    cls[:, [62, 67, 71], 1] = 0.75  # tied across anchors of level 1
    anchors[11] = anchors[10]
    box[:, 11] = box[:, 10]
    cls[0, 10:12] = -8.0
    others = cls[0, :60].flatten().sort(descending=True).values
    cls[0, 10:12, 0] = (others[38] + others[39]) / 2  # between the 39th and the 40th of the others
    box[0, 5, 2:] = 9.0  # a huge box: dw, dh clipped at log(1000/16), the box clipped to the image
    return cls, box, anchors, per_level


@pytest.mark.parametrize("topk,per_img", [(40, 25), (1000, 25), (40, 1000)])
def test_postprocess_detections_equals_torchvision(topk, per_img):
    cls, box, anchors, per_level = _head_outputs()
    image_sizes = [(180, 230), (240, 160)]
    got = postprocess_detections(
        cls, box, anchors, per_level, torch.tensor(image_sizes), BoxCoder(), 0.05, topk, 0.5, per_img
    )
    ref = _torchvision_postprocess(cls, box, anchors, per_level, image_sizes, 0.05, topk, 0.5, per_img)
    uncapped = _torchvision_postprocess(cls, box, anchors, per_level, image_sizes, 0.05, topk, 0.5, 10_000)
    above = (cls.sigmoid() > 0.05).flatten(2).sum(-1)  # (image, anchor): pairs above the threshold
    level0 = above[:, :60].sum(1).tolist()
    # The case exercises what it claims: image 0 has more candidates above 0.05 on level 0 than a
    # top-k of 40 keeps; image 1 fewer (the threshold cuts its top-k); the cap of 25 cuts image 0 only.
    assert level0[0] > 40 > level0[1] > 0
    assert len(uncapped[0]["scores"]) > 25 > len(uncapped[1]["scores"]) > 0
    assert len(ref[0]["scores"]) == min(per_img, len(uncapped[0]["scores"]))
    for r, o in zip(ref, got):
        assert (o["scores"][:-1] >= o["scores"][1:]).all()
        assert o["labels"].dtype == torch.int64
        r, o = _sorted(r), _sorted(o)
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["scores"], r["scores"], rtol=0, atol=1e-7)
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=0, atol=1e-4)
    # the tied classes of anchor 3 (score sigmoid(1.25)) are all detections of image 0
    tied = got[0]["scores"] == torch.sigmoid(torch.tensor(1.25))
    assert sorted(got[0]["labels"][tied].tolist()) == [0, 1, 2]
    # the duplicate pair at the top-k boundary: one detection (NMS or the top-k drops the other)
    duplicate = (got[0]["scores"] == cls[0, 10, 0].sigmoid()).sum().item()
    assert duplicate == (1 if per_img == 1000 else 0)

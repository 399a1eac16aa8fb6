import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from retinanet.model.assignment import BACKGROUND, IGNORE, BoxCoder, Matcher, pad_targets, pairwise_iou


def _random_boxes(n, size=200.0, gen=None):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 2 + 4
    return torch.cat([xy, xy + wh], 1)


def test_pairwise_iou_matches_torchvision_and_batches():
    g = torch.Generator().manual_seed(0)
    a, b = _random_boxes(7, gen=g), _random_boxes(11, gen=g)
    assert torch.equal(pairwise_iou(a, b), box_iou(a, b))
    batched = pairwise_iou(torch.stack([a, a.flip(0)]), b)
    assert torch.equal(batched[1], box_iou(a.flip(0), b))


def test_matcher_thresholds_hand_built():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 4.5], [0, 0, 10, 3], [50, 50, 60, 60]])
    gt = torch.tensor([[[0.0, 0, 10, 10]]])
    # IoUs with the box: 1.0, 0.7, 0.45, 0.3, 0.0
    m = Matcher(0.5, 0.4, allow_low_quality_matches=False)(gt, torch.ones(1, 1, dtype=torch.bool), anchors)
    assert m.tolist() == [[0, 0, IGNORE, BACKGROUND, BACKGROUND]]


def test_low_quality_match_rescues_a_small_box():
    anchors = torch.tensor([[0.0, 0, 32, 32], [100, 100, 132, 132]])
    gt = torch.tensor([[[0.0, 0, 12, 12]]])  # IoU 144/1024 = 0.14 with the first anchor only
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert Matcher(allow_low_quality_matches=False)(gt, valid, anchors).tolist() == [[BACKGROUND, BACKGROUND]]
    assert Matcher(allow_low_quality_matches=True)(gt, valid, anchors).tolist() == [[0, BACKGROUND]]


def test_matcher_equals_torchvision_per_image_and_ignores_padding():
    g = torch.Generator().manual_seed(1)
    anchors = _random_boxes(500, gen=g)
    boxes = [_random_boxes(n, gen=g) for n in (5, 0, 9)]
    targets = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.int64)} for b in boxes]
    pb, _, valid = pad_targets(targets)
    ours = Matcher(0.5, 0.4, True)(pb, valid, anchors)
    tv = TVMatcher(0.5, 0.4, allow_low_quality_matches=True)
    for i, b in enumerate(boxes):
        if len(b) == 0:
            assert (ours[i] == BACKGROUND).all()
        else:
            assert torch.equal(ours[i], tv(box_iou(b, anchors)))


def test_box_coder_round_trip_and_torchvision_equality():
    g = torch.Generator().manual_seed(2)
    anchors, boxes = _random_boxes(100, gen=g), _random_boxes(100, gen=g)
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    deltas = coder.encode(boxes, anchors)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-4, rtol=0)
    tv = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(deltas, tv.encode_single(boxes, anchors))
    torch.testing.assert_close(coder.decode(deltas, anchors), tv.decode_single(deltas, anchors))
    weighted = BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(weighted.decode(weighted.encode(boxes, anchors), anchors), boxes, atol=1e-4, rtol=0)


def test_box_coder_hand_values_and_clip():
    coder = BoxCoder()
    anchor = torch.tensor([0.0, 0, 10, 20])
    box = torch.tensor([5.0, 0, 15, 40])  # centre (10, 20) vs (5, 10); size 10x40 vs 10x20
    torch.testing.assert_close(coder.encode(box, anchor), torch.tensor([0.5, 0.5, 0.0, math.log(2)]))
    huge = coder.decode(torch.tensor([0.0, 0, 100, 100]), anchor)
    assert torch.isfinite(huge).all()
    assert (huge[2] - huge[0]).item() == pytest.approx(1000 / 16 * 10, rel=1e-6)  # exp(clip) * width

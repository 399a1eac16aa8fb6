"""OHEM over anchors (Table 1(d)): selection by loss, NMS, quotas, and the loss on the kept anchors."""

import pytest
import torch
import torch.nn.functional as F

from retinanet.model.assignment import BACKGROUND, IGNORE, BoxCoder, Matcher
from retinanet.model.criterion import RetinaNetCriterion
from retinanet.model.ohem import anchor_ce, select_hard_examples


def disjoint_anchors(n: int) -> torch.Tensor:
    """n 10x10 boxes in a row, 20 px apart: no two overlap, so NMS suppresses nothing."""
    x = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], 1)


def test_anchor_ce_is_the_sum_of_sigmoid_ce_over_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 4) * 3
    labels = torch.tensor([[0, 3, BACKGROUND, IGNORE, 1, BACKGROUND, 2], [BACKGROUND] * 6 + [3]])
    onehot = F.one_hot(labels.clamp(min=0), 4).float() * (labels >= 0)[..., None]
    expected = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(-1)
    torch.testing.assert_close(anchor_ce(logits, labels), expected, rtol=1e-6, atol=1e-6)


def test_keeps_the_highest_loss_anchors_and_never_ignored_ones():
    anchors = disjoint_anchors(6)
    scores = torch.tensor([[0.1, 5.0, 3.0, 9.0, 0.5, 4.0]])
    labels = torch.tensor([[BACKGROUND, BACKGROUND, 0, IGNORE, BACKGROUND, 1]])
    keep = select_hard_examples(scores, anchors, labels, batch_size=3, nms_thresh=0.7)
    # 9.0 is ignored; the three highest of the rest are 5.0, 4.0, 3.0.
    assert keep.tolist() == [[False, True, True, False, False, True]]


def test_nms_suppresses_the_lower_loss_of_two_overlapping_anchors():
    anchors = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [40.0, 0, 50, 10], [80.0, 0, 90, 10]])
    # IoU(0, 1) = 90 / 110 = 0.82: suppressed at 0.7, both kept at 0.9.
    scores = torch.tensor([[2.0, 3.0, 1.0, 0.5]])
    labels = torch.full((1, 4), BACKGROUND)
    assert select_hard_examples(scores, anchors, labels, 2, nms_thresh=0.7).tolist() == [[False, True, True, False]]
    assert select_hard_examples(scores, anchors, labels, 2, nms_thresh=0.9).tolist() == [[True, True, False, False]]


def test_one_to_three_quota_per_image():
    anchors = disjoint_anchors(12)
    scores = torch.arange(12, dtype=torch.float32).flip(0).repeat(3, 1)  # anchor 0 has the highest loss
    labels = torch.full((3, 12), BACKGROUND)
    labels[0, [5, 7, 9]] = 0  # 3 positives, but batch 8 allows 8 * 0.25 = 2
    labels[1, 10] = 2  # 1 positive -> 3 negatives
    keep = select_hard_examples(scores, anchors, labels, batch_size=8, nms_thresh=0.7, pos_fraction=0.25)
    assert keep[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # positives 5, 7 + 6 negatives
    assert keep[1].nonzero().flatten().tolist() == [0, 1, 2, 10]
    assert not keep[2].any()  # no positive: no negatives either (SSD)
    plain = select_hard_examples(scores, anchors, labels, batch_size=8, nms_thresh=0.7)
    assert plain.sum(1).tolist() == [8, 8, 8]


def test_ohem_criterion_trains_only_the_kept_anchors():
    torch.manual_seed(0)
    anchors = disjoint_anchors(40)
    targets = [
        {"boxes": anchors[[3, 17]] + 0.5, "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    crit = RetinaNetCriterion(
        Matcher(0.5, 0.4, True), BoxCoder(), cls_loss="ohem", alpha=None, ohem_batch_size=5, ohem_nms_thresh=0.7
    )
    logits = (torch.randn(2, 40, 3) * 2).requires_grad_()
    deltas = torch.zeros(2, 40, 4, requires_grad=True)
    out = crit(logits, deltas, anchors, targets)
    out["cls"].backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert touched.sum(1).tolist() == [5, 5]
    # The loss is the mean over the 10 kept anchors of their CE summed over classes.
    labels, _, _ = crit.assign(anchors, targets)
    expected = anchor_ce(logits.detach(), labels)[touched].sum() / 10
    torch.testing.assert_close(out["cls"].detach(), expected)
    # Image 1 has no boxes: its kept anchors are its 5 highest-CE ones (no two anchors overlap).
    ce = anchor_ce(logits.detach(), labels)
    assert set(touched[1].nonzero().flatten().tolist()) == set(ce[1].topk(5).indices.tolist())


def test_ohem_model_option_trains():
    from retinanet import get_model

    torch.manual_seed(0)
    model = get_model(
        "retinanet_r18_fpn",
        num_classes=3,
        fpn_channels=32,
        head_convs=1,
        min_size=128,
        max_size=128,
        cls_loss="ohem",
        focal_alpha=None,
        ohem_batch_size=64,
        ohem_pos_fraction=0.25,
    )
    images = torch.rand(2, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[50.0, 40, 120, 100]]), "labels": torch.tensor([2])},
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    first = None
    for _ in range(8):
        losses = model(images, targets)
        loss = losses["cls"] + losses["box"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and float(loss.detach()) < first


def test_ohem_config_validation():
    from retinanet.model.config import ModelConfig

    with pytest.raises(ValueError, match="ohem_pos_fraction"):
        ModelConfig(cls_loss="ohem", ohem_pos_fraction=1.5)
    with pytest.raises(ValueError, match="ohem_batch_size"):
        ModelConfig(cls_loss="ohem", ohem_batch_size=0)

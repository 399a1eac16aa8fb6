"""RetinaNetCriterion's FL* and L1 options against the losses written out by hand on its own
anchor assignment, and one training step of a model with FL*."""

import math

import pytest
import torch
import torch.nn.functional as F

from retinanet import ModelConfig, build_model
from retinanet.model import losses as loss_module
from retinanet.model.anchors import AnchorGenerator
from retinanet.model.assignment import IGNORE, BoxCoder, Matcher
from retinanet.model.criterion import RetinaNetCriterion
from retinanet.model.losses import fl_star_loss_from_labels

SHAPES = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # P3-P7 of a 128 px input
K = 3


@pytest.fixture(autouse=True)
def eager_losses(monkeypatch):
    # The eager loss kernels: compiling them costs seconds, and the compiled path has its own
    # tests (tests/model/test_losses.py).
    monkeypatch.setenv(loss_module.NO_COMPILE_ENV, "1")


def _anchors():
    return AnchorGenerator((32.0, 64.0, 128.0, 256.0, 512.0), 3, (0.5, 1.0, 2.0))(SHAPES, (128, 128))[0]


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 20, 60, 70], [70, 64, 124, 110]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[30.0, 8, 90, 120]]), "labels": torch.tensor([1])},
    ]


def _criterion(**kw):
    return RetinaNetCriterion(Matcher(0.5, 0.4, True), BoxCoder(), **kw)


def _head_outputs(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cls = (torch.randn(2, n, K, generator=g, dtype=dtype) * 2 - 2).requires_grad_()
    box = (torch.randn(2, n, 4, generator=g, dtype=dtype) * 0.3).requires_grad_()
    return cls, box


def fl_star_by_hand(logits, anchor_labels, gamma, beta):
    """FL* = -log σ(γ x_t + β) / γ, x_t = x for the one-hot target class, -x elsewhere, summed
    over every class of every anchor not ignored, divided by the batch's foreground count."""
    target = F.one_hot(anchor_labels.clamp(min=0), K).to(logits.dtype) * (anchor_labels >= 0)[..., None]
    x_t = torch.where(target == 1, logits, -logits)
    per = -F.logsigmoid(gamma * x_t + beta) / gamma
    per = per * (anchor_labels != IGNORE)[..., None]
    return per.sum() / (anchor_labels >= 0).sum().clamp(min=1)


def l1_by_hand(deltas, anchors, matched, fg):
    """|predicted - encoded (dx, dy, dw, dh)| summed over the foreground anchors' four deltas,
    divided by their count."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = matched[..., 2] - matched[..., 0], matched[..., 3] - matched[..., 1]
    gx, gy = matched[..., 0] + gw / 2, matched[..., 1] + gh / 2
    target = torch.stack(((gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)), -1)
    return (deltas - target).abs().sum(-1)[fg].sum() / fg.sum()


def test_fl_star_through_the_criterion_equals_the_loss_by_hand():
    anchors = _anchors().double()
    cls, box = _head_outputs(anchors.shape[0])
    crit = _criterion(cls_loss="fl_star", fl_star_gamma=3.0, fl_star_beta=0.5)
    labels, _, fg = crit.assign(anchors, _targets())
    # the assignment has all three kinds of anchor, foreground in both images
    assert (fg.sum(1) > 0).all() and (labels == IGNORE).any() and (labels == -1).any()
    got = crit(cls, box, anchors, _targets())["cls"]
    expected = fl_star_by_hand(cls, labels, 3.0, 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)  # predictions cast to float32
    # the library's per-image FL*, normalised by the same count
    per_image = fl_star_loss_from_labels(cls, labels, 3.0, 0.5)
    torch.testing.assert_close(got, per_image.sum() / fg.sum(), rtol=1e-10, atol=0)
    # its closed-form gradient is the derivative of the formula
    (g_got,) = torch.autograd.grad(got, cls)
    (g_hand,) = torch.autograd.grad(expected, cls)
    torch.testing.assert_close(g_got, g_hand, rtol=1e-8, atol=1e-12)
    assert g_got[labels == IGNORE].abs().max() == 0 and g_got.abs().sum() > 0
    # and it is not the focal loss that the default criterion computes
    focal = _criterion()(cls, box, anchors, _targets())["cls"]
    assert abs(focal.item() - got.item()) > 0.1 * got.item()


def test_l1_box_loss_through_the_criterion_equals_the_loss_by_hand():
    anchors = _anchors().double()
    cls, box = _head_outputs(anchors.shape[0], seed=1)
    crit = _criterion(box_loss="l1")
    _, matched, fg = crit.assign(anchors, _targets())
    got = crit(cls, box, anchors, _targets())["box"]
    expected = l1_by_hand(box, anchors, matched, fg)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)  # predictions cast to float32
    # a box loss of |d| - 0.5 β or 0.5 d² / β (smooth L1, β = 0.11) would be another number
    smooth = _criterion(box_loss="smooth_l1")(cls, box, anchors, _targets())["box"]
    assert smooth.item() < got.item() - 0.02
    (g,) = torch.autograd.grad(got, box)
    # the gradient of |d| / n_fg: ±1 / n_fg on every foreground delta, 0 on the other anchors
    assert g[~fg].abs().max() == 0
    torch.testing.assert_close(g[fg].abs(), torch.full_like(g[fg], 1 / fg.sum().item()))


def test_a_training_step_with_fl_star():
    torch.manual_seed(0)
    cfg = dict(backbone="resnet18", num_classes=K, min_size=128, max_size=128, size_divisor=128, freeze_at=0)
    model = build_model(ModelConfig(**cfg, norm="bn", cls_loss="fl_star", fl_star_gamma=2.0, fl_star_beta=1.0))
    model.train()
    seen = {}
    criterion = model.criterion

    def recording(cls_logits, box_deltas, anchors, targets):
        seen.update(cls=cls_logits, anchors=anchors, targets=targets)
        return criterion(cls_logits, box_deltas, anchors, targets)

    model.criterion = recording
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    losses = model(images, _targets())
    assert all(math.isfinite(v.item()) for v in losses.values())
    labels, _, _ = criterion.assign(seen["anchors"], seen["targets"])
    torch.testing.assert_close(losses["cls"], fl_star_by_hand(seen["cls"].float(), labels, 2.0, 1.0), rtol=1e-5, atol=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    (losses["cls"] + losses["box"]).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0 and model.backbone.conv1.weight.grad.abs().sum() > 0
    before = model.head.cls_score.weight.detach().clone()
    opt.step()
    assert not torch.equal(model.head.cls_score.weight, before)

"""Tests of retinanet.model.losses: the focal loss family (Lin et al. 2017, §3, appendices A/B).

Every test runs on both the compiled (torch.compile / inductor) and the forced-eager path.
Dense inputs are 2-D, with two different sizes >= 2 and (where reduced) more than 4096
elements, so that one dynamic-shape graph per kernel serves every test: a new rank, a size-1
dim, equal sizes ("duck sizing") or a small reduction would each recompile, at seconds apiece.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math

import pytest
import torch
import torchvision

from retinanet.model import losses
from retinanet.model.assignment import BACKGROUND, IGNORE
from retinanet.model.losses import (
    fl_star_loss,
    fl_star_loss_from_labels,
    focal_loss_from_labels,
    l1_loss,
    sigmoid_cross_entropy,
    sigmoid_focal_loss,
    smooth_l1_loss,
)

LN10 = math.log(10.0)
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)


@contextlib.contextmanager
def _one_thread():
    # Small eager ops on a shared 2-core box: OpenMP barriers under contention cost far more
    # than the ops themselves. Compiled kernels are never built inside this (their thread count
    # is fixed at code generation), only eager references and the eager path.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(params=["compiled", "eager"])
def path(request, monkeypatch):
    monkeypatch.delenv(losses.NO_COMPILE_ENV, raising=False)
    if request.param == "eager":
        monkeypatch.setenv(losses.NO_COMPILE_ENV, "1")
        with _one_thread():
            yield request.param
        return
    yield request.param
    assert not losses._compile_failed, "torch.compile failed; the eager fallback was used"


def _rand(shape, seed, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _binary(shape, seed, p=0.1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def _value_and_grad(fn, x, *args, weights=None, **kw):
    x = x.detach().clone().requires_grad_()
    out = fn(x, *args, **kw)
    (out if weights is None else out * weights).sum().backward()
    return out.detach(), x.grad


# ---------------------------------------------------------------- worked example: a hard and an easy example (§3.2)
def test_worked_example(path):
    """p_t = 0.11 (hard) and p_t = 0.89 (easy): CE and FL(γ=2, no α), natural and base-10 logs."""
    x = torch.full((2, 4), math.log(0.11 / 0.89))  # p = σ(x) = 0.11
    y = torch.tensor([[1.0, 0.0] * 2] * 2)  # y=1: p_t = 0.11; y=0: p_t = 0.89
    ce, ce_grad = _value_and_grad(sigmoid_cross_entropy, x, y, reduction="none")
    fl, fl_grad = _value_and_grad(sigmoid_focal_loss, x, y, alpha=None, gamma=2.0, reduction="none")
    ce, fl = ce[0, :2].double(), fl[0, :2].double()
    # Appendix B at these points: dCE/dx = s(p_t - 1); dFL/dx = s(1-p_t)^2 (2 p_t ln p_t + p_t - 1).
    torch.testing.assert_close(ce_grad[0, :2], torch.tensor([-0.89, 0.11]))
    dfl = [
        +1 * 0.89**2 * (2 * 0.11 * math.log(0.11) + 0.11 - 1),  # y = 1, p_t = 0.11
        -1 * 0.11**2 * (2 * 0.89 * math.log(0.89) + 0.89 - 1),  # y = 0, p_t = 0.89
    ]
    torch.testing.assert_close(fl_grad[0, :2], torch.tensor(dfl))
    torch.testing.assert_close(ce, torch.tensor([2.2072749, 0.1165338], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(fl, torch.tensor([1.7483825, 0.0014101], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        ce / LN10, torch.tensor([0.958607315, 0.050609993], dtype=torch.float64), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        fl / LN10, torch.tensor([0.759312854, 0.000612381], dtype=torch.float64), rtol=0, atol=1e-6
    )
    # The paper's point: the hard/easy ratio goes from ~19 (CE) to ~1240 (FL).
    assert 18.5 < (ce[0] / ce[1]).item() < 19.5
    assert 1235 < (fl[0] / fl[1]).item() < 1245


# ---------------------------------------------------------------- torchvision parity
PARITY_X = _rand((1000, 80), seed=1)
PARITY_Y = _binary((1000, 80), seed=2)


@functools.lru_cache(maxsize=None)
def _torchvision_reference(alpha, gamma, reduction, dtype):
    """torchvision's value and gradient, computed once for both paths."""
    tv_alpha = -1.0 if alpha is None else alpha  # torchvision disables α with alpha < 0
    with _one_thread():
        return _value_and_grad(
            torchvision.ops.sigmoid_focal_loss,
            PARITY_X.to(dtype),
            PARITY_Y.to(dtype),
            alpha=tv_alpha,
            gamma=gamma,
            reduction=reduction,
        )


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.5, 0.0), (None, 0.0), (0.75, 0.5), (0.25, 5.0)])
def test_matches_torchvision(path, alpha, gamma):
    for reduction in ("none", "mean", "sum"):
        v, g = _value_and_grad(sigmoid_focal_loss, PARITY_X, PARITY_Y, alpha=alpha, gamma=gamma, reduction=reduction)
        assert v.dtype == torch.float32 and g.dtype == torch.float32
        # torchvision in float64 is the exact reference; in float32 its 1 - p_t cancels.
        rv, rg = _torchvision_reference(alpha, gamma, reduction, torch.float64)
        torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=1e-7 * rv.abs().max().item())
        torch.testing.assert_close(g.double(), rg, rtol=1e-5, atol=1e-7 * rg.abs().max().item())
        if reduction != "none":  # and against torchvision's own float32 numbers
            fv, fg = _torchvision_reference(alpha, gamma, reduction, torch.float32)
            torch.testing.assert_close(v, fv, rtol=1e-5, atol=0)
            torch.testing.assert_close(g, fg, rtol=1e-5, atol=1e-6 * fg.abs().max().item())


# ---------------------------------------------------------------- appendix B closed forms
def test_gradients_match_appendix_b_float64(path):
    x = _rand((100, 50), seed=3, scale=4.0)
    y = _binary((100, 50), seed=4, p=0.3)
    x64, y64 = x.double(), y.double()
    s = 2 * y64 - 1
    xt = s * x64
    pt = torch.sigmoid(xt)
    alpha, gamma, beta = 0.25, 2.0, 1.0
    at = torch.where(y64 > 0, alpha, 1 - alpha)
    closed = {
        "ce": s * (pt - 1),
        "fl": s * at * (1 - pt) ** gamma * (gamma * pt * torch.log(pt) + pt - 1),
        "fl*": s * (torch.sigmoid(gamma * xt + beta) - 1),
    }
    # The closed forms themselves are the derivatives of the naive float64 formulas.
    naive = {
        "ce": lambda v: -torch.log(torch.sigmoid(s * v)),
        "fl": lambda v: -at * (1 - torch.sigmoid(s * v)) ** gamma * torch.log(torch.sigmoid(s * v)),
        "fl*": lambda v: -torch.log(torch.sigmoid(gamma * s * v + beta)) / gamma,
    }
    ours = {
        "ce": lambda v: sigmoid_cross_entropy(v, y, alpha=None),
        "fl": lambda v: sigmoid_focal_loss(v, y, alpha=alpha, gamma=gamma),
        "fl*": lambda v: fl_star_loss(v, y, gamma=gamma, beta=beta),
    }
    for name, ref in closed.items():
        _, auto = _value_and_grad(naive[name], x64)
        torch.testing.assert_close(auto, ref, rtol=1e-12, atol=1e-14)
        value, grad = _value_and_grad(ours[name], x)
        torch.testing.assert_close(value.double(), naive[name](x64).sum(), rtol=1e-5, atol=0)
        torch.testing.assert_close(grad.double(), ref, rtol=1e-5, atol=1e-7)


def test_fl_star_reductions(path):
    x = _rand((300, 20), seed=5)
    y = _binary((300, 20), seed=6)
    ref = -torch.nn.functional.logsigmoid(2.0 * (2 * y.double() - 1) * x.double() + 1.0) / 2.0
    s = 2 * y.double() - 1
    dref = s * (torch.sigmoid(2.0 * s * x.double() + 1.0) - 1)  # appendix B, per element
    for reduction, r, scale in (("none", ref, 1.0), ("mean", ref.mean(), 1 / x.numel()), ("sum", ref.sum(), 1.0)):
        v, g = _value_and_grad(fl_star_loss, x, y, gamma=2.0, beta=1.0, reduction=reduction)
        torch.testing.assert_close(v.double(), r, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g.double(), dref * scale, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- numerical stability
def test_extreme_logits_are_finite(path):
    x = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.0]] * 2)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]] * 2)
    for gamma in GAMMAS:
        for fn in (
            lambda v: sigmoid_focal_loss(v, y, alpha=0.25, gamma=gamma, reduction="none"),
            lambda v: sigmoid_focal_loss(v, y, alpha=None, gamma=gamma, reduction="none"),
            lambda v: fl_star_loss(v, y, gamma=max(gamma, 0.5), beta=1.0, reduction="none"),
        ):
            v, g = _value_and_grad(fn, x)
            assert torch.isfinite(v).all() and torch.isfinite(g).all(), (gamma, v, g)
        v, g = _value_and_grad(sigmoid_focal_loss, x, y, alpha=None, gamma=gamma, reduction="none")
        # Hard mistakes (x_t = -100): (1 - p_t)^γ = 1, loss = 100, dFL/dx = s·(γ p_t log p_t - 1).
        torch.testing.assert_close(v[0, 1], torch.tensor(100.0))
        torch.testing.assert_close(v[0, 2], torch.tensor(100.0))
        torch.testing.assert_close(g[0, 1], torch.tensor(-1.0))
        torch.testing.assert_close(g[0, 2], torch.tensor(1.0))
        # Confident and right (x_t = +100): loss and gradient vanish.
        assert v[0, 0].abs() < 1e-30 and v[0, 3].abs() < 1e-30
        assert g[0, 0].abs() < 1e-30 and g[0, 3].abs() < 1e-30
        # x = 0: p_t = 1/2, FL = 2^-γ ln 2.
        torch.testing.assert_close(v[0, 4], torch.tensor(math.log(2.0) * 2.0**-gamma))
    v, g = _value_and_grad(fl_star_loss, x, y, gamma=2.0, beta=1.0, reduction="none")
    torch.testing.assert_close(v[0, 1], torch.tensor(99.5))  # -log σ(-199) / 2
    torch.testing.assert_close(g[0, 1], torch.tensor(-1.0))


# ---------------------------------------------------------------- label-based fast path
@pytest.mark.parametrize("kind", ["fl", "fl*"])
def test_labels_match_dense_one_hot(path, kind):
    b, n, k = 3, 500, 20
    x = _rand((b, n, k), seed=7)
    g = torch.Generator().manual_seed(8)
    labels = torch.randint(-2, k, (b, n), generator=g)
    labels[:, :50] = BACKGROUND
    labels[:, 50:80] = IGNORE
    weights = torch.tensor([1.0, 0.5, 2.0])  # a distinct grad_output per image

    if kind == "fl":
        ours = lambda v: focal_loss_from_labels(v, labels, alpha=0.25, gamma=2.0)  # noqa: E731
        dense = lambda v, t: sigmoid_focal_loss(v, t, alpha=0.25, gamma=2.0)  # noqa: E731
    else:
        ours = lambda v: fl_star_loss_from_labels(v, labels, gamma=2.0, beta=1.0)  # noqa: E731
        dense = lambda v, t: fl_star_loss(v, t, gamma=2.0, beta=1.0)  # noqa: E731
    v, grad = _value_and_grad(ours, x, weights=weights)
    assert v.shape == (b,) and v.dtype == torch.float32

    one_hot = torch.zeros(b, n, k)
    fg = labels >= 0
    one_hot[fg, labels[fg]] = 1.0
    xr = x.detach().clone().requires_grad_()
    ref = torch.stack([dense(xr[i][labels[i] != IGNORE], one_hot[i][labels[i] != IGNORE]) for i in range(b)])
    (ref * weights).sum().backward()
    torch.testing.assert_close(v, ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, xr.grad, rtol=1e-5, atol=1e-7)
    assert (grad[labels == IGNORE] == 0).all()


# ---------------------------------------------------------------- low precision
def test_bf16_inputs(path):
    x = _rand((1000, 80), seed=9).to(torch.bfloat16)
    y = _binary((1000, 80), seed=10)
    v, g = _value_and_grad(sigmoid_focal_loss, x, y)
    rv, rg = _value_and_grad(sigmoid_focal_loss, x.float(), y)
    assert v.dtype == torch.float32 and g.dtype == torch.bfloat16
    # Internals run in float32 on the same (bf16-representable) values: the loss is fp32-exact,
    # the gradient differs only by its final rounding to bf16.
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=0)
    torch.testing.assert_close(g.float(), rg, rtol=1e-2, atol=1e-3)

    # Under autocast, a bf16 head output feeds the loss and gradients reach fp32 weights.
    lin = torch.nn.Linear(16, 80)
    inp = _rand((256, 16), seed=11, scale=1.0)
    t = _binary((256, 80), seed=12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(inp)
        loss = sigmoid_focal_loss(logits, t)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    w_bf16 = lin.weight.grad.clone()
    lin.zero_grad()
    ref = sigmoid_focal_loss(lin(inp), t)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)
    torch.testing.assert_close(w_bf16, lin.weight.grad, rtol=5e-2, atol=5e-2 * w_bf16.abs().max())


# ---------------------------------------------------------------- autograd plumbing
def test_no_grad_and_retained_graph(path):
    x = _rand((200, 30), seed=13)
    y = _binary((200, 30), seed=14)
    _, ref = _value_and_grad(sigmoid_focal_loss, x, y)
    with torch.no_grad():
        nv = sigmoid_focal_loss(x.clone().requires_grad_(), y)
    xr = x.clone().requires_grad_()
    v = sigmoid_focal_loss(xr, y)
    torch.testing.assert_close(nv, v.detach())
    (g1,) = torch.autograd.grad(v, xr, retain_graph=True)
    (g2,) = torch.autograd.grad(v, xr, grad_outputs=torch.tensor(3.0))  # recomputed
    torch.testing.assert_close(g1, ref)
    torch.testing.assert_close(g2, 3 * ref)


def test_compile_failure_falls_back_once(monkeypatch, caplog):
    monkeypatch.delenv(losses.NO_COMPILE_ENV, raising=False)
    monkeypatch.setattr(losses, "_compile_failed", False)  # restored after the test

    def broken(*args):
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setitem(losses._compiled, losses._k_sum_grad, broken)
    monkeypatch.setitem(losses._compiled, losses._k_none_grad, broken)
    x = _rand((500, 10), seed=15)
    y = _binary((500, 10), seed=16)
    with caplog.at_level(logging.WARNING, logger="retinanet.model.losses"):
        v1, g1 = _value_and_grad(sigmoid_focal_loss, x, y)
        v2, g2 = _value_and_grad(sigmoid_focal_loss, x, y, reduction="none")
    assert losses._compile_failed
    assert len([r for r in caplog.records if "torch.compile failed" in r.message]) == 1
    rv, rg = _value_and_grad(torchvision.ops.sigmoid_focal_loss, x, y, reduction="sum")
    torch.testing.assert_close(v1, rv, rtol=1e-5, atol=0)
    torch.testing.assert_close(g1, rg, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(v2.sum(), rv, rtol=1e-5, atol=0)


def test_argument_checks():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError):
        sigmoid_focal_loss(x, torch.zeros(4, 2))
    with pytest.raises(ValueError):
        sigmoid_focal_loss(x, torch.zeros(4, 3), reduction="max")
    with pytest.raises(ValueError):
        fl_star_loss(x, torch.zeros(4, 3), gamma=0.0)
    with pytest.raises(ValueError):
        focal_loss_from_labels(x.view(1, 4, 3), torch.zeros(1, 3, dtype=torch.int64))


# ---------------------------------------------------------------- box regression losses
def test_smooth_l1_and_l1():
    inp = torch.tensor([[0.0, 0.05, -0.2, 1.0], [0.3, -0.1, 0.0, 2.0]], requires_grad=True)
    tgt = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    d = (inp - tgt).detach().abs()
    beta = 0.11
    ref = torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=beta, reduction="none"), ref)
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=beta), ref.sum())
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=beta, reduction="mean"), ref.mean())
    # β = 0 is exactly L1, with finite gradients even at d = 0.
    s0 = smooth_l1_loss(inp, tgt, beta=0.0)
    assert torch.equal(s0, l1_loss(inp, tgt)) and s0.item() == pytest.approx(d.sum().item())
    s0.backward()
    assert torch.isfinite(inp.grad).all()
    assert torch.equal(l1_loss(inp, tgt, reduction="none"), d)

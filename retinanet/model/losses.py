"""Losses of RetinaNet: the focal loss and its relatives (Lin et al. 2017, §3 and appendices A/B).

With x a logit, y in {0, 1} its binary target, s = 2y - 1 (the paper's y in {-1, +1}),
x_t = s·x and p_t = σ(x_t):

- CE(p_t)  = -α_t log(p_t)                       (§3.1; α off: plain CE)
- FL(p_t)  = -α_t (1 - p_t)^γ log(p_t)           (§3.2, eq. 5; γ = 0 is α-balanced CE)
- FL*(x_t) = -log(σ(γ x_t + β)) / γ              (appendix A)

and the closed-form gradients of appendix B:

- dCE/dx  = s·α_t·(p_t - 1)
- dFL/dx  = s·α_t·(1 - p_t)^γ·(γ p_t log(p_t) + p_t - 1)
- dFL*/dx = s·(p*_t - 1),  p*_t = σ(γ x_t + β)

All three are one formula: with z = a·x_t + b, P = σ(z), loss = -c_t·(1 - P)^g·log(P) and
dloss/dx = s·c_t·a·(1 - P)^g·(g·P·log(P) + P - 1), where FL/CE take (a, b, g, c_t) = (1, 0, γ, α_t)
and FL* takes (γ, β, 0, 1/γ). The elementwise math is written once (:func:`_terms`) and run
through ``torch.compile(dynamic=True)``: on CPU inductor emits one vectorised OpenMP loop that
reads (logits, targets) once and writes only the reduced loss and, when a gradient is wanted, the
gradient (see :func:`_precompute_grad`; backward then just scales it in place). Nothing else of
full size is materialised. The hyper-parameters travel as a small tensor, not Python floats, so
changing α/γ/β never recompiles (a float γ in ``pow`` would be specialised, one graph per value).

If compilation fails (no C++ compiler, unsupported backend, ...), one warning is logged and the
same closed-form math runs eagerly from then on. ``RETINANET_NO_COMPILE=1`` forces the eager path.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .assignment import BACKGROUND, IGNORE

__all__ = [
    "sigmoid_focal_loss",
    "sigmoid_cross_entropy",
    "fl_star_loss",
    "focal_loss_from_labels",
    "fl_star_loss_from_labels",
    "smooth_l1_loss",
    "l1_loss",
]

_log = logging.getLogger(__name__)

NO_COMPILE_ENV = "RETINANET_NO_COMPILE"
_REDUCTIONS = ("none", "mean", "sum")

# Sanity: the label kernels rely on these two being the only negative values.
assert BACKGROUND == -1 and IGNORE == -2


# --------------------------------------------------------------------------------------------
# Elementwise math, written once. Run compiled (fused) or eagerly (fallback).
# --------------------------------------------------------------------------------------------
def _terms(x: torch.Tensor, t: torch.Tensor, params: torch.Tensor, need_grad: bool):
    """Per-element loss and (optionally) d loss / d x of the generalised focal loss.

    ``params`` = [c_pos, c_neg, g, a, b] (see the module docstring). Returns float32/64 tensors.
    """
    cd = params.dtype
    x = x.to(cd)
    t = t.to(cd)
    c_pos, c_neg, g, a, b = params[0], params[1], params[2], params[3], params[4]
    s = 2.0 * t - 1.0
    z = a * (s * x) + b
    # One exp(-|z|) feeds log σ(z), log σ(-z), σ(z) and σ(-z): never exp of a large positive
    # number, so ±100 logits give no inf/NaN, and 1 - p_t is σ(-z), not a cancelling 1 - σ(z).
    e = torch.exp(-z.abs())
    l1pe = torch.log1p(e)
    log_p = torch.clamp(z, max=0.0) - l1pe  # log σ(z) = log p_t
    log_q = torch.clamp(-z, max=0.0) - l1pe  # log σ(-z) = log(1 - p_t)
    # (1 - p_t)^g as exp(g·log(1 - p_t)): reuses log_q, exact 1 for g = 0, finite for q = 0,
    # and g stays a runtime value (pow with a specialised float exponent would recompile per γ).
    mod = torch.exp(g * log_q)
    c_t = c_neg + t * (c_pos - c_neg)
    cm = c_t * mod
    loss = -cm * log_p
    if not need_grad:
        return loss, None
    r = 1.0 / (1.0 + e)
    pos = z >= 0
    p = torch.where(pos, r, e * r)  # σ(z)
    q = torch.where(pos, e * r, r)  # σ(-z), keeps full relative precision of p_t - 1 = -q
    grad = (s * a) * cm * (g * p * log_p - q)
    return loss, grad


def _label_targets(x: torch.Tensor, labels: torch.Tensor):
    # Built inside the kernel: an index comparison, never a materialised (B, N, K) one-hot.
    k = torch.arange(x.shape[-1], device=x.device)
    return labels.unsqueeze(-1) == k, labels != IGNORE


def _per_image(loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # Reduce over K first (same loop nest as the elementwise pass, so inductor fuses it with
    # the gradient store: no full-size temporaries), mask ignored anchors per row, then sum the
    # (B, N) row sums. A direct sum over (N, K) made inductor materialise two (B, N, K) buffers
    # and run a second pass: ~1.6x slower on CPU.
    return torch.where(valid, loss.sum(-1), 0.0).sum(-1)


# Kernels: one small function per pass. Separate functions (= separate code objects) also keep
# each one's dynamo recompile budget to itself.
def _k_sum(x, t, params):
    return _terms(x, t, params, False)[0].sum()


def _k_none(x, t, params):
    return _terms(x, t, params, False)[0]


def _k_sum_grad(x, t, params):
    loss, grad = _terms(x, t, params, True)
    return loss.sum(), grad.to(x.dtype)


def _k_none_grad(x, t, params):
    loss, grad = _terms(x, t, params, True)
    return loss, grad.to(x.dtype)


def _k_grad(x, t, params, go):
    grad = _terms(x, t, params, True)[1]
    return (grad * go.to(params.dtype)).to(x.dtype)


def _k_labels_sum(x, labels, params):
    t, valid = _label_targets(x, labels)
    return _per_image(_terms(x, t, params, False)[0], valid)


def _k_labels_sum_grad(x, labels, params):
    t, valid = _label_targets(x, labels)
    loss, grad = _terms(x, t, params, True)
    return _per_image(loss, valid), torch.where(valid.unsqueeze(-1), grad, 0.0).to(x.dtype)


def _k_labels_grad(x, labels, params, go):
    t, valid = _label_targets(x, labels)
    grad = _terms(x, t, params, True)[1] * go.to(params.dtype)[:, None, None]
    return torch.where(valid.unsqueeze(-1), grad, 0.0).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Compiled-or-eager dispatch.
# --------------------------------------------------------------------------------------------
_compiled: dict[Callable, Callable] = {}
_compile_failed = False


def _compile_disabled() -> bool:
    return os.environ.get(NO_COMPILE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def compiled_kernel_active() -> bool:
    """Whether the focal-loss kernels run compiled in this process: compilation is not disabled
    (``RETINANET_NO_COMPILE``) and has not failed (after a failure they stay eager for good). True
    before the first call too, which is when compilation is attempted."""
    return not (_compile_failed or _compile_disabled())


def _run(fn: Callable, *args):
    """Run ``fn`` compiled; on the first compile failure, warn once and go eager for good."""
    global _compile_failed
    # Detached views: the kernels are called under no_grad anyway, and a requires_grad flag
    # would only add a dynamo guard (a recompile between training and evaluation calls).
    args = tuple(a.detach() for a in args)
    if _compile_failed or _compile_disabled() or torch.compiler.is_compiling():
        # Inside an outer torch.compile region the eager math is traced (and fused) by it.
        return fn(*args)
    cfn = _compiled.get(fn)
    if cfn is None:
        cfn = _compiled[fn] = torch.compile(fn, dynamic=True)
    try:
        return cfn(*args)
    except torch.OutOfMemoryError:
        raise  # not a compilation problem; the eager path would need even more memory
    except Exception as exc:  # noqa: BLE001 - any compiler/backend failure means "go eager"
        _compile_failed = True
        _log.warning(
            "retinanet.losses: torch.compile failed (%s: %s); using the eager focal-loss path.",
            type(exc).__name__,
            exc,
        )
        return fn(*args)


def _params(c_pos, c_neg, g, a, b, x: torch.Tensor) -> torch.Tensor:
    # float64 stays float64; everything narrower (bf16/fp16 under autocast) computes in float32.
    cd = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.tensor([c_pos, c_neg, g, a, b], dtype=cd, device=x.device)


def _alpha_weights(alpha: float | None) -> tuple[float, float]:
    if alpha is None:
        return 1.0, 1.0
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
    return float(alpha), 1.0 - float(alpha)


def _no_autocast(x: torch.Tensor):
    # The kernels up-cast themselves; autocast must not re-cast their internals to low precision.
    return torch.autocast(device_type=x.device.type, enabled=False)


def _precompute_grad(logits: torch.Tensor) -> bool:
    """Whether forward should also produce the gradient (to be scaled in place by backward).

    Measured on a 2-core CPU, 200k x 80 logits: the fused pass is compute-bound (exp, log1p,
    exp, division per element), and computing loss + gradient in one forward pass, then a cheap
    in-place ``grad *= grad_output`` in backward, beat "forward loss only, recompute everything in
    backward" by ~1.5x end to end (scripts/bench_focal_loss.py prints both). The price is one
    logits-sized tensor held from forward to backward. On accelerators the kernels are
    memory-bound, where both schemes move the same bytes, so there we save only the inputs and
    recompute.
    """
    return logits.requires_grad and torch.is_grad_enabled() and logits.device.type == "cpu"


class _DenseFn(torch.autograd.Function):
    """Fused loss over a dense binary target. Saves the inputs, plus the gradient on CPU."""

    @staticmethod
    def forward(ctx, logits, targets, params, reduction, precompute):
        ctx.save_for_backward(logits, targets, params)
        ctx.reduction = reduction
        ctx.grad = None
        with _no_autocast(logits):
            if precompute:
                kernel = _k_none_grad if reduction == "none" else _k_sum_grad
                loss, ctx.grad = _run(kernel, logits, targets, params)
            else:
                loss = _run(_k_none if reduction == "none" else _k_sum, logits, targets, params)
        return loss / logits.numel() if reduction == "mean" else loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        logits, targets, params = ctx.saved_tensors
        if ctx.reduction == "mean":
            grad_out = grad_out / logits.numel()
        # The precomputed gradient is handed over (and scaled in place) once; a second backward
        # through a retained graph finds it gone and recomputes from the saved inputs.
        grad, ctx.grad = ctx.grad, None
        if grad is not None:
            return grad.mul_(grad_out), None, None, None, None
        with _no_autocast(logits):
            grad = _run(_k_grad, logits, targets, params, grad_out)
        return grad, None, None, None, None


class _LabelFn(torch.autograd.Function):
    """Fused per-image loss from per-anchor labels. Saves the inputs, plus the gradient on CPU."""

    @staticmethod
    def forward(ctx, logits, labels, params, precompute):
        ctx.save_for_backward(logits, labels, params)
        ctx.grad = None
        with _no_autocast(logits):
            if precompute:
                loss, ctx.grad = _run(_k_labels_sum_grad, logits, labels, params)
                return loss
            return _run(_k_labels_sum, logits, labels, params)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        logits, labels, params = ctx.saved_tensors
        grad, ctx.grad = ctx.grad, None
        if grad is not None:
            return grad.mul_(grad_out[:, None, None]), None, None, None
        with _no_autocast(logits):
            grad = _run(_k_labels_grad, logits, labels, params, grad_out)
        return grad, None, None, None


def _check_dense(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, N, K) and labels (B, N), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """Focal loss FL(p_t) = -α_t (1 - p_t)^γ log(p_t) (Lin et al. 2017, §3.2, eq. 5).

    Args:
        logits: raw scores x, any shape (e.g. (B, N, K) with no background class).
        targets: binary targets y in {0, 1}, same shape as ``logits`` (float, int or bool; soft
            targets are not supported: the closed forms assume y is exactly 0 or 1).
        alpha: weight α of the positives (1 - α for negatives); ``None`` disables α weighting
            (torchvision's ``alpha < 0``). α = 0.25 with γ = 2 is the paper's best (Table 1b).
        gamma: focusing parameter γ >= 0; γ = 0 gives α-balanced cross entropy (§3.1).
        reduction: ``"none"`` (per-element, shape of ``logits``), ``"mean"`` or ``"sum"`` (scalar).

    Returns:
        The loss in float32 for float32/bf16/fp16 logits (float64 for float64). The gradient
        w.r.t. ``logits`` (in their dtype) is the closed form of appendix B,
        dFL/dx = s·α_t·(1 - p_t)^γ·(γ p_t log(p_t) + p_t - 1) with s = 2y - 1; ``targets`` get none.

    Forward and backward are each one fused pass (see the module docstring); only the inputs are
    saved for backward.
    """
    _check_dense(logits, targets, reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    a_pos, a_neg = _alpha_weights(alpha)
    params = _params(a_pos, a_neg, float(gamma), 1.0, 0.0, logits)
    return _DenseFn.apply(logits, targets, params, reduction, _precompute_grad(logits))


def sigmoid_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Binary cross entropy CE(p_t) = -α_t log(p_t) on logits (§3.1); ``alpha=None``: plain CE.

    Same shapes and targets as :func:`sigmoid_focal_loss`; it is the focal loss with γ = 0, and its
    gradient is dCE/dx = s·α_t·(p_t - 1) (appendix B).
    """
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=0.0, reduction=reduction)


def fl_star_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    beta: float = 1.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """FL* of appendix A: FL* = -log(p*_t) / γ with p*_t = σ(γ x_t + β), x_t = ±x by target.

    Same shapes and targets as :func:`sigmoid_focal_loss`. γ = 2, β = 1 are the paper's values
    (comparable to FL). Gradient (appendix B): dFL*/dx = s·(p*_t - 1), s = 2y - 1.
    """
    _check_dense(logits, targets, reduction)
    if gamma <= 0:
        raise ValueError(f"FL* needs gamma > 0, got {gamma}")
    params = _params(1.0 / gamma, 1.0 / gamma, 0.0, float(gamma), float(beta), logits)
    return _DenseFn.apply(logits, targets, params, reduction, _precompute_grad(logits))


def focal_loss_from_labels(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Per-image focal loss summed over all non-ignored anchors and classes (§4, "Loss").

    Args:
        logits: (B, N, K) class logits of N anchors, K classes (no background class).
        labels: (B, N) integer; k >= 0: foreground of class k (one-hot target), ``BACKGROUND``
            (-1): all-zero target, ``IGNORE`` (-2): contributes nothing (loss and gradient 0).
        alpha, gamma: as in :func:`sigmoid_focal_loss`.

    Returns:
        (B,) float32 (float64 for float64 logits): sum of FL over the image's anchors and classes.
        The caller normalises (the paper divides by the number of foreground anchors). The
        one-hot target and the per-element loss are never materialised; the gradient w.r.t.
        ``logits`` is the appendix-B closed form (zero on ignored anchors).
    """
    _check_labels(logits, labels)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    a_pos, a_neg = _alpha_weights(alpha)
    params = _params(a_pos, a_neg, float(gamma), 1.0, 0.0, logits)
    return _LabelFn.apply(logits, labels, params, _precompute_grad(logits))


def fl_star_loss_from_labels(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 2.0,
    beta: float = 1.0,
) -> torch.Tensor:
    """Per-image FL* (appendix A) from per-anchor labels; as :func:`focal_loss_from_labels`."""
    _check_labels(logits, labels)
    if gamma <= 0:
        raise ValueError(f"FL* needs gamma > 0, got {gamma}")
    params = _params(1.0 / gamma, 1.0 / gamma, 0.0, float(gamma), float(beta), logits)
    return _LabelFn.apply(logits, labels, params, _precompute_grad(logits))


def smooth_l1_loss(
    input: torch.Tensor, target: torch.Tensor, beta: float = 0.11, reduction: str = "sum"
) -> torch.Tensor:
    """Smooth L1 (Huber-like) box-regression loss (§4): 0.5 d²/β if |d| < β else |d| - 0.5 β.

    ``beta=0`` is exactly L1 (no division). β = 0.11 is Detectron's RetinaNet default.
    Shapes: ``input`` and ``target`` alike, e.g. (M, 4) box deltas of M foreground anchors.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta == 0:
        return F.l1_loss(input, target, reduction=reduction)
    return F.smooth_l1_loss(input, target, beta=beta, reduction=reduction)


def l1_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """L1 box-regression loss |input - target| (same shapes), an alternative to smooth L1."""
    return F.l1_loss(input, target, reduction=reduction)

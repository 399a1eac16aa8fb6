"""Fast paths for a RetinaNet: the same model and the same results, computed faster.

- :func:`fold_batchnorm` (inference): a frozen BatchNorm right after a convolution is an affine
  map per output channel, so it folds into the convolution, W' = W·s, b' = (b - μ)·s + β with
  s = γ / √(σ² + ε) (computed in float64, rounded once). torchvision's FrozenBatchNorm2d is
  plain tensor math (``x * scale + bias``): two passes over every activation of the 53 norms of
  a ResNet-50, which folding removes. GroupNorm normalises with statistics of its input and
  cannot be folded; it is left as it is.
- :func:`absorb_frozen_batchnorm` (training): the same algebra, applied at every call to the
  live (trainable) weight, so gradients reach W; the BatchNorm modules stay in place as holders
  of their buffers, so state dicts and optimizers are unchanged.
- channels_last: NHWC activations are oneDNN's native layout on CPU (no reorder around each
  convolution), and the head's (B, A·K, H, W) -> (B, H·W·A, K) flatten becomes a view.
- dtype (bf16/fp16): backbone, FPN and head in low precision; pre- and post-processing (resize,
  anchors, decode, NMS) stay float32, the head outputs are cast back to float32.
- :func:`compile_modules`: ``torch.compile`` of backbone, FPN and head (the dense, static-shape
  part; pre/post-processing have data-dependent shapes) with a fallback to eager when
  compilation fails, and a one-time warning.

:func:`optimize_for_inference` combines them on a copy of the model; tests/test_fast.py checks
that each gives the plain model's detections (and losses, for training).
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from ..model.backbone import ResNetBackbone

__all__ = [
    "fold_batchnorm",
    "absorb_frozen_batchnorm",
    "set_network_dtype",
    "to_channels_last",
    "compile_modules",
    "is_compiled",
    "FrozenBNConv2d",
    "optimize_for_inference",
    "optimize_for_training",
    "NETWORK_PARTS",
]

log = logging.getLogger(__name__)

# The dense part of a RetinaNet: what runs per pixel and is worth a layout, a dtype or a compiler.
NETWORK_PARTS = ("backbone", "fpn", "head")

# Modules whose forward applies a child `convN` and then, directly on its output, `bnN`
# (torchvision's ResNet blocks, our backbone's stem), and `nn.Sequential`s in which a conv is
# followed by a norm (torchvision's `downsample`). Only these are folded: for any other module
# the attribute names say nothing about the order of the calls in its forward.
_NAMED_PAIR_MODULES = (BasicBlock, Bottleneck, ResNetBackbone)


def _is_foldable_norm(m: nn.Module) -> bool:
    if isinstance(m, FrozenBatchNorm2d):
        return True
    # A BatchNorm2d normalises with its running statistics only in eval mode (and only if it
    # keeps them): then it is as frozen as FrozenBatchNorm2d.
    return isinstance(m, nn.BatchNorm2d) and not m.training and m.track_running_stats and m.running_var is not None


def _conv_norm_pairs(module: nn.Module):
    """(conv name, norm name) of the conv -> norm pairs directly inside `module`."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for a, b in zip(names, names[1:]):
            if type(children[a]) in (nn.Conv2d, FrozenBNConv2d) and _is_foldable_norm(children[b]):
                yield a, b
    elif isinstance(module, _NAMED_PAIR_MODULES):
        for name, conv in children.items():
            # FrozenBNConv2d: a norm absorbed for training (absorb_frozen_batchnorm) folds as well
            if name.startswith("conv") and type(conv) in (nn.Conv2d, FrozenBNConv2d):
                norm_name = "bn" + name[len("conv") :]
                if norm_name in children and _is_foldable_norm(children[norm_name]):
                    yield name, norm_name


def _norm_scale_shift(norm: nn.Module, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(s, t) with norm(x) = s·x + t per channel."""
    mean, var = norm.running_mean.to(dtype), norm.running_var.to(dtype)
    weight = norm.weight.to(dtype) if norm.weight is not None else torch.ones_like(var)
    bias = norm.bias.to(dtype) if norm.bias is not None else torch.zeros_like(var)
    scale = weight * torch.rsqrt(var + norm.eps)
    return scale, bias - mean * scale


def _conv_args(conv: nn.Conv2d) -> dict:
    """The constructor arguments of a conv of `conv`'s geometry (bias and device left out)."""
    names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
    return {name: getattr(conv, name) for name in names}


def _folded_conv(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    fused = nn.Conv2d(**_conv_args(conv), bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        # float64: the folded weights are rounded once, not after each of the products.
        scale, shift = _norm_scale_shift(norm, torch.float64)
        w = conv.weight.to(torch.float64) * scale.view(-1, 1, 1, 1)
        b = shift if conv.bias is None else conv.bias.to(torch.float64) * scale + shift
        fused.weight.copy_(w)
        fused.bias.copy_(b)
    fused.weight.requires_grad_(conv.weight.requires_grad)
    fused.bias.requires_grad_(conv.weight.requires_grad)
    return fused


def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every frozen BatchNorm (FrozenBatchNorm2d, or an eval-mode BatchNorm2d with
    running statistics) that directly follows a Conv2d into that conv; the norm becomes
    ``nn.Identity``. For inference: the folded weights are constants (a training step would
    update W but not the folded W·s; see :func:`absorb_frozen_batchnorm`). Returns the number of
    norms folded. The state dict changes (conv biases appear, norm buffers go)."""
    count = 0
    for parent in list(module.modules()):
        for conv_name, bn_name in list(_conv_norm_pairs(parent)):
            setattr(parent, conv_name, _folded_conv(getattr(parent, conv_name), getattr(parent, bn_name)))
            setattr(parent, bn_name, nn.Identity())
            count += 1
    return count


class _AbsorbedNorm(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d whose affine map is applied by the preceding conv: the identity here.
    It still owns its buffers, so the state dict keeps its keys and a checkpoint loaded later
    updates the statistics that the conv reads."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class FrozenBNConv2d(nn.Conv2d):
    """conv(x, W) followed by a frozen BatchNorm, computed as conv(x, W·s) + t.

    The product W·s costs C_out·C_in·k² multiplications per call, against two passes over the
    (B, C_out, H, W) activation for the norm (and one more in backward). W is the original
    Parameter (same object: an optimizer built before keeps working) and gets the exact gradient
    of the composition through the product. The price: where W is trainable, W·s is a
    weight-sized tensor kept for the conv's backward (~0.1 GB for ResNet-50's res3-res5).
    """

    def __init__(self, conv: nn.Conv2d, norm: _AbsorbedNorm):
        super().__init__(**_conv_args(conv), bias=conv.bias is not None, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        # Not a submodule: the norm stays registered where it was (its state-dict keys).
        self.__dict__["norm"] = norm

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = _norm_scale_shift(self.norm, self.weight.dtype)
        bias = shift if self.bias is None else self.bias * scale + shift
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), bias)


def _absorbed(norm: nn.Module) -> _AbsorbedNorm:
    new = _AbsorbedNorm(norm.weight.shape[0], eps=norm.eps)
    # The very same buffer tensors: loading a state dict into the model fills them in place.
    for name in ("weight", "bias", "running_mean", "running_var"):
        setattr(new, name, getattr(norm, name))
    return new


def absorb_frozen_batchnorm(module: nn.Module) -> int:
    """Apply, in place, each FrozenBatchNorm2d that follows a conv inside that conv
    (:class:`FrozenBNConv2d`), for training and inference alike. Trainable BatchNorm2d is left
    alone (its statistics change in training). Parameters, their identities and the state dict
    keys are unchanged. Returns the number of norms absorbed."""
    count = 0
    for parent in list(module.modules()):
        for conv_name, bn_name in list(_conv_norm_pairs(parent)):
            norm = getattr(parent, bn_name)
            if not isinstance(norm, FrozenBatchNorm2d) or isinstance(norm, _AbsorbedNorm):
                continue
            norm = _absorbed(norm)
            setattr(parent, bn_name, norm)
            setattr(parent, conv_name, FrozenBNConv2d(getattr(parent, conv_name), norm))
            count += 1
    return count


# ------------------------------------------------------------------------------ layout, dtype
def _prepare_input(module: nn.Module, args: tuple, dtype: torch.dtype | None, channels_last: bool):
    (x, *rest) = args
    x = x.to(dtype=dtype or x.dtype, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    return (x, *rest)


def _float_outputs(module: nn.Module, args: tuple, out):
    return tuple(o.float() for o in out)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Backbone, FPN and head weights and the backbone's input in channels_last, in place."""
    for part in NETWORK_PARTS:
        getattr(model, part).to(memory_format=torch.channels_last)
    _set_input_hook(model, channels_last=True)
    return model


def set_network_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Backbone, FPN and head in `dtype` (their input cast to it, the head outputs cast back to
    float32), in place. Preprocessing, anchors and post-processing stay float32."""
    for part in NETWORK_PARTS:
        getattr(model, part).to(dtype)
    _set_input_hook(model, dtype=dtype)
    if dtype != torch.float32 and not getattr(model, "_fast_output_hook", None):
        model._fast_output_hook = model.head.register_forward_hook(_float_outputs)
    return model


def _set_input_hook(model: nn.Module, dtype: torch.dtype | None = None, channels_last: bool | None = None) -> None:
    # One pre-hook on the backbone carries both conversions (a second call updates it): the
    # model's own preprocess builds a contiguous float32 batch and stays untouched.
    state = getattr(model, "_fast_input", {"dtype": None, "channels_last": False})
    if dtype is not None:
        state["dtype"] = dtype
    if channels_last is not None:
        state["channels_last"] = channels_last
    old = getattr(model, "_fast_input_hook", None)
    if old is not None:
        old.remove()
    model._fast_input = state
    model._fast_input_hook = model.backbone.register_forward_pre_hook(
        functools.partial(_prepare_input, dtype=state["dtype"], channels_last=state["channels_last"])
    )


# ------------------------------------------------------------------------------ torch.compile
class _CompiledForward:
    """A module's forward run through torch.compile, with a fallback to the eager forward.

    Compilation is lazy (it happens at the first call), so failures surface at call time. An
    exception from the compiled call is a compilation failure when the eager forward then
    succeeds on the same inputs: compilation is given up for good, with one warning. When the
    eager forward fails too, the inputs are at fault: its error is raised and compilation stays.
    """

    def __init__(self, module: nn.Module, **compile_kwargs):
        self.eager = module.forward
        self.name = type(module).__name__
        self.compiled = None
        try:
            self.compiled = torch.compile(self.eager, **compile_kwargs)
        except Exception as exc:  # noqa: BLE001 - no compiler for this platform/build: eager
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        self.compiled = None
        log.warning("torch.compile of %s failed (%s: %s); running it eagerly.", self.name, type(exc).__name__, exc)

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise  # not a compilation problem; eager would need as much memory
        except Exception as exc:  # noqa: BLE001 - any compiler/backend failure means "go eager"
            out = self.eager(*args, **kwargs)  # raises if the inputs, not the compiler, are at fault
            self._give_up(exc)
            return out


def compile_modules(model: nn.Module, parts: tuple[str, ...] = NETWORK_PARTS, **compile_kwargs) -> nn.Module:
    """torch.compile the forward of each of `parts` (default backbone, FPN, head), in place, with
    the eager fallback of :class:`_CompiledForward`. State dict keys are unchanged. Compile
    last: a compiled model cannot be deep-copied."""
    for part in parts:
        module = getattr(model, part)
        if isinstance(module.__dict__.get("forward"), _CompiledForward):
            continue
        module.forward = _CompiledForward(module, **compile_kwargs)
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether some part of `model` still runs compiled (False after a fallback)."""
    return any(
        isinstance(f := getattr(model, p).__dict__.get("forward"), _CompiledForward) and f.compiled is not None
        for p in NETWORK_PARTS
    )


# ------------------------------------------------------------------------------ entry points
def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    dtype: torch.dtype | None = None,
    compile: bool | dict = False,
    inplace: bool = False,
) -> nn.Module:
    """An eval-mode copy of `model` (or `model` itself with ``inplace=True``) with the fast paths:

    - fold_bn: frozen / eval-mode BatchNorm folded into the convolutions (float32: the same
      detections up to float rounding, ~1e-5 relative on the features);
    - channels_last: NHWC activations (same values, different summation order);
    - dtype: e.g. ``torch.bfloat16`` or ``torch.float16`` for backbone, FPN and head (outputs
      cast back to float32; on CPUs without native bf16/fp16 dot products this is much
      *slower*, see benchmarks/RESULTS.md); None keeps float32;
    - compile: torch.compile backbone, FPN and head (True, or a dict of torch.compile
      arguments), falling back to eager when compilation fails.

    Use it for inference only (``model.train()`` on the result trains folded, constant norms).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    if dtype is not None and dtype != torch.float32:
        set_network_dtype(model, dtype)
    if channels_last:
        to_channels_last(model)
    if compile:
        compile_modules(model, **(compile if isinstance(compile, dict) else {}))
    return model


def optimize_for_training(
    model: nn.Module,
    *,
    absorb_bn: bool = True,
    channels_last: bool | None = None,
    compile: bool | dict = False,
) -> nn.Module:
    """`model` itself, made faster to train, in place, with unchanged parameters (the same
    Parameter objects) and state-dict keys: frozen BatchNorm applied inside the preceding conv
    (:func:`absorb_frozen_batchnorm`), channels_last weights and input, optional torch.compile of
    backbone, FPN and head. Mixed precision stays the caller's (``torch.autocast``). Build the
    optimizer after this call or before, either works; momentum buffers created before keep
    their old memory format (correct, slightly slower).

    channels_last None: on for CUDA (tensor-core convolutions want NHWC), off on CPU, where
    oneDNN's NHWC convolution backward measured slower than NCHW (R50-FPN, 320 px: convolution
    backward 1.59 s against 1.35 s per step, the step ~3 % slower; benchmarks/RESULTS.md)."""
    if channels_last is None:
        param = next(model.parameters(), None)
        channels_last = param is not None and param.device.type == "cuda"
    if absorb_bn:
        absorb_frozen_batchnorm(model)
    if channels_last:
        to_channels_last(model)
    if compile:
        compile_modules(model, **(compile if isinstance(compile, dict) else {}))
    return model

"""Fast paths for a RetinaNet: the same model and the same results, computed faster.

- :func:`fold_batchnorm` (inference) and :func:`absorb_frozen_batchnorm` (training), from
  retinanet/model/batchnorm.py: a frozen BatchNorm right after a convolution is an affine map
  per output channel, applied by the convolution. torchvision's FrozenBatchNorm2d is plain
  tensor math (``x * scale + bias``): two passes over every activation of the 53 norms of a
  ResNet-50, which folding removes. GroupNorm normalises with statistics of its input and
  cannot be folded; it is left as it is.
- channels_last: NHWC activations are oneDNN's native layout on CPU (no reorder around each
  convolution), and the head's (B, A·K, H, W) -> (B, H·W·A, K) flatten becomes a view.
- dtype (bf16/fp16): backbone, FPN and head in low precision; pre- and post-processing (resize,
  anchors, decode, NMS) stay float32, the head outputs are cast back to float32.
- :func:`compile_modules`: ``torch.compile`` of backbone, FPN and head (the dense, static-shape
  part; pre/post-processing have data-dependent shapes) with a fallback to eager when
  compilation fails, and a one-time warning.

:func:`optimize_for_inference` combines them on a copy of the model; tests/deploy/test_optimize.py checks
that each gives the plain model's detections (and losses, for training).
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import nn

from ..model.batchnorm import FrozenBNConv2d, absorb_frozen_batchnorm, fold_batchnorm

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

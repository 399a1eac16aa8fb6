"""Frozen BatchNorm inside the convolution before it: folded for inference, absorbed for training.

A frozen BatchNorm right after a convolution is an affine map per output channel, so it can be
applied by the convolution: W' = W·s, b' = (b - μ)·s + β with s = γ / √(σ² + ε).

- :func:`fold_batchnorm` (inference): the folded weights are constants (computed in float64,
  rounded once); the norm becomes ``nn.Identity``.
- :func:`absorb_frozen_batchnorm` (training): the same algebra at every call, on the live
  (trainable) weight, so gradients reach W; the norms stay in place as holders of their buffers,
  so state dicts and optimizers are unchanged. Under autocast this also keeps the activations in
  low precision: FrozenBatchNorm2d's float32 scale would promote each one to float32.

Here rather than in the deploy layer because the training engine uses the second one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from .backbone import ResNetBackbone

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

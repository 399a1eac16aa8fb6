"""ResNet / ResNeXt trunks from torchvision, returning C3, C4, C5 (§4)."""

from __future__ import annotations

import logging
from functools import partial
from typing import get_args

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ..utils.download import load_url_state_dict
from .config import Backbone, Norm

log = logging.getLogger(__name__)

# name -> (torchvision constructor, ImageNet weights enum member, (C3, C4, C5) channels); the names
# are those of `Backbone` (tests/test_config.py checks that they agree).
_RESNETS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, (128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, (128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, (512, 1024, 2048)),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1, (512, 1024, 2048)),
    "resnext101_32x8d": (
        torchvision.models.resnext101_32x8d,
        torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1,
        (512, 1024, 2048),
    ),
}


def _norm_layer(norm: Norm):
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return partial(nn.GroupNorm, 32)
    raise ValueError(f"unknown norm {norm!r}; expected one of {list(get_args(Norm))}")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a FrozenBatchNorm2d holding the same statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier. forward(x (B,3,H,W)) -> [C3, C4, C5] at
    strides 8, 16, 32. Module names are torchvision's (conv1, bn1, layer1..layer4), so
    torchvision's ImageNet state dicts load as they are."""

    def __init__(
        self, name: str = "resnet50", norm: str = "frozen_bn", freeze_at: int = 2, pretrained: bool | str = False
    ):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown backbone {name!r}; expected one of {list(get_args(Backbone))}")
        ctor, weights, channels = _RESNETS[name]
        net = ctor(weights=None, norm_layer=_norm_layer(norm))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = channels
        if pretrained:
            if norm == "gn":
                raise ValueError("ImageNet backbone weights are for BatchNorm: use norm=frozen_bn or bn")
            source = pretrained if isinstance(pretrained, str) else weights.url
            self.load_imagenet(load_url_state_dict(source))
        self.freeze(freeze_at)

    def load_imagenet(self, state_dict: dict[str, Tensor]) -> None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        if isinstance(self.bn1, FrozenBatchNorm2d):
            state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"backbone weights do not fit this ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem (freeze_at >= 1) and the first freeze_at - 1 stages: no gradients, and
        BatchNorm statistics frozen too (a frozen stage in train mode must not drift)."""
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
        if freeze_at >= 1:
            self.bn1 = freeze_batchnorm(self.bn1)
        for i in range(1, min(freeze_at, 5)):
            setattr(self, f"layer{i}", freeze_batchnorm(getattr(self, f"layer{i}")))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]

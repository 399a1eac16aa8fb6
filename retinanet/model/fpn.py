"""Feature Pyramid Network producing P3-P7 with C channels each (§4, [Lin et al. 2017, FPN])."""

from __future__ import annotations

from typing import get_args

import torch.nn.functional as F
from torch import Tensor, nn

from .config import P6Source


def _xavier_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)
    # "c2_xavier_fill" (uniform, a = 1), the init of the FPN layers in Detectron, detectron2 and
    # torchvision; the paper's σ = 0.01 Gaussian applies to the subnets.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """forward([C3, C4, C5]) -> [P3, P4, P5, P6, P7].

    P3-P5: lateral 1x1 convs on C3-C5, top-down nearest upsampling and addition, 3x3 output
    convs. P6: a 3x3 stride-2 conv on C5 (the paper, `p6_from="c5"`) or on P5 (torchvision v1).
    P7: ReLU then a 3x3 stride-2 conv on P6. No P2: too many anchors for too little gain (§4).
    """

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256, p6_from: P6Source = "c5"):
        super().__init__()
        if p6_from not in get_args(P6Source):
            raise ValueError(f"p6_from={p6_from!r}: expected one of {list(get_args(P6Source))}")
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(_xavier_conv(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(_xavier_conv(channels, channels, 3) for _ in in_channels)
        self.p6 = _xavier_conv(in_channels[-1] if p6_from == "c5" else channels, channels, 3, stride=2)
        self.p7 = _xavier_conv(channels, channels, 3, stride=2)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        c3, c4, c5 = feats
        lat5 = self.lateral[2](c5)
        lat4 = self.lateral[1](c4) + F.interpolate(lat5, size=c4.shape[-2:], mode="nearest")
        lat3 = self.lateral[0](c3) + F.interpolate(lat4, size=c3.shape[-2:], mode="nearest")
        p3, p4, p5 = self.output[0](lat3), self.output[1](lat4), self.output[2](lat5)
        p6 = self.p6(c5 if self.p6_from == "c5" else p5)
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]

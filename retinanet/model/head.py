"""The classification and box subnets (§4), shared across pyramid levels."""

from __future__ import annotations

import math
from typing import get_args

import torch
from torch import Tensor, nn

from .config import HeadNorm


def _subnet(channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    """`num_convs` 3x3 conv (+ GroupNorm) + ReLU blocks; convs Gaussian σ = 0.01, bias 0 (§4)."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
        block = [conv] + ([nn.GroupNorm(32, channels)] if norm == "gn" else []) + [nn.ReLU(inplace=True)]
        layers.append(nn.Sequential(*block))
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """forward([P3..P7]) -> (cls_logits (B, N, K), box_deltas (B, N, 4)).

    N = sum over levels of H_l·W_l·A, ordered level, row, column, anchor (the anchor generator's
    order). The class subnet ends in K·A sigmoid outputs per location (no background class), the
    box subnet in 4·A class-agnostic deltas.
    """

    def __init__(
        self,
        channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm: str | None = None,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if norm is not None and norm not in get_args(HeadNorm):
            raise ValueError(f"head norm {norm!r}: expected None or one of {list(get_args(HeadNorm))}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.cls_subnet = _subnet(channels, num_convs, norm)
        self.box_subnet = _subnet(channels, num_convs, norm)
        self.cls_score = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        for conv in (self.cls_score, self.box_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # §3.3 / §4: bias = -log((1 - π) / π) so every anchor starts at foreground probability π.
        # Without it the ~100k background anchors dominate the first iterations and CE training
        # diverges.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def _flatten(self, x: Tensor, k: int) -> Tensor:
        # (B, A·k, H, W) -> (B, H·W·A, k)
        B, _, H, W = x.shape
        return x.view(B, -1, k, H, W).permute(0, 3, 4, 1, 2).reshape(B, -1, k)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = [self._flatten(self.cls_score(self.cls_subnet(f)), self.num_classes) for f in feats]
        box = [self._flatten(self.box_pred(self.box_subnet(f)), 4) for f in feats]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)

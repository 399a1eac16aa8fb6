"""Anchors on P3-P7 (§4).

At level l (stride 2^l) the anchors have areas (s·2^(k/#sc))², k = 0..#sc-1, with s the level's
base size (32 on P3 ... 512 on P7), at aspect ratios h/w in `aspect_ratios`: A = #sc·#ar anchors
per location, 9 in the paper (Table 1c varies #sc and #ar).

Anchor order within a location is ratio-major, scale-minor, and locations are row-major, as in
torchvision: the head's output channel a·K + k belongs to anchor a, so weights trained with
torchvision's anchors load unchanged.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from .config import AnchorStyle

STRIDES = (8, 16, 32, 64, 128)  # P3-P7


def cell_anchors(
    base_size: float, scales_per_octave: int, aspect_ratios: tuple[float, ...], style: str = "exact"
) -> Tensor:
    """The A anchors of one location, centred on (0, 0): (A, 4) xyxy, ratio-major.

    style "exact": sizes base·2^(k/#sc). style "torchvision": int(base·2^(k/3)) sizes (32, 40,
    50, ...) and base anchors rounded to integers, as torchvision's AnchorGenerator does.
    """
    if style == "torchvision":
        sizes = [float(int(base_size * 2 ** (k / scales_per_octave))) for k in range(scales_per_octave)]
    else:
        sizes = [base_size * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)]
    scales = torch.tensor(sizes, dtype=torch.float32)
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)  # ratio = h / w at constant area
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return anchors.round() if style == "torchvision" else anchors


def grid_anchors(cell: Tensor, height, width, stride_y, stride_x, offset: float) -> Tensor:
    """The anchors of one level: the cell anchors `cell` (A, 4) centred on (i + offset)·stride of
    each location of a `height` x `width` feature map, (height·width·A, 4) xyxy, row-major, in
    float32 on the cell's device. Sizes and strides may be 0-dim tensors (the export traces
    them: the grid then follows the input's size)."""
    ys = (torch.arange(height, dtype=torch.float32, device=cell.device) + offset) * stride_y
    xs = (torch.arange(width, dtype=torch.float32, device=cell.device) + offset) * stride_x
    # broadcast instead of meshgrid: expand takes traced sizes, and the values are the same
    yy = ys[:, None].expand(height, width)
    xx = xs[None, :].expand(height, width)
    shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)


def _stride(v) -> float | Tensor:
    """A stride as a Python float, or as a float32 0-dim tensor when it is a traced size."""
    return v.to(torch.float32) if isinstance(v, Tensor) else float(v)


class AnchorGenerator:
    """Anchors for all levels of a padded batch, cached per (feature shapes, image size, device).

    `__call__(feature_shapes, image_size)` returns (N, 4) xyxy anchors in the padded input's
    pixel coordinates, levels concatenated in order, and the number of anchors per level.
    """

    def __init__(
        self,
        sizes: tuple[float, ...] = (32, 64, 128, 256, 512),
        scales_per_octave: int = 3,
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        offset: float = 0.5,
        style: str = "exact",
        strides: tuple[int, ...] = STRIDES,
    ):
        if style not in get_args(AnchorStyle):
            raise ValueError(f"anchor style {style!r}: expected one of {list(get_args(AnchorStyle))}")
        if len(sizes) != len(strides):
            raise ValueError(f"{len(sizes)} anchor sizes for {len(strides)} levels")
        self.strides = tuple(strides)
        self.offset = offset
        self.style = style
        self.cell = [cell_anchors(float(s), scales_per_octave, tuple(aspect_ratios), style) for s in sizes]
        self._cache: dict = {}

    def clear_cache(self) -> None:
        """Forget the cached anchors: the next call computes them again (e.g. to time that)."""
        self._cache.clear()

    @property
    def num_anchors_per_location(self) -> int:
        return self.cell[0].shape[0]

    def level_strides(
        self, feature_shapes: list[tuple[int, int]], image_size: tuple[int, int]
    ) -> list[tuple[float, float]]:
        """(stride_y, stride_x) per level. torchvision divides the padded image size by the feature
        size (so P6 of an 800-px image has stride 800 // 13 = 61); the geometry of the strided
        convolutions says 2^l, which the exact style uses."""
        if self.style == "torchvision":
            return [(_stride(image_size[0] // h), _stride(image_size[1] // w)) for h, w in feature_shapes]
        return [(float(s), float(s)) for s in self.strides]

    def grid(self, feature_shapes, image_size, cells: list[Tensor] | None = None) -> list[Tensor]:
        """The anchors of each level (see `grid_anchors`), uncached, on the device of `cells`
        (default `self.cell`, on the CPU; the export passes copies that follow its device).
        Sizes may be 0-dim tensors, as tracing gives them."""
        strides = self.level_strides(feature_shapes, image_size)
        cells = self.cell if cells is None else cells
        return [
            grid_anchors(cell, h, w, sy, sx, self.offset)
            for (h, w), (sy, sx), cell in zip(feature_shapes, strides, cells)
        ]

    def __call__(
        self, feature_shapes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device | None = None
    ) -> tuple[Tensor, list[int]]:
        key = (tuple(feature_shapes), tuple(image_size), str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        levels = self.grid(feature_shapes, image_size)
        anchors = torch.cat(levels).to(device)
        result = (anchors, [lv.shape[0] for lv in levels])
        if len(self._cache) > 64:  # many distinct input sizes (no padding to a fixed size): bound memory
            self._cache.clear()
        self._cache[key] = result
        return result

"""The input geometry of the network: the one definition of the resize and padding sizes.

Each image is resized so that its shorter side is `min_size` unless the longer side would then
exceed `max_size` (Lin et al. 2017, §4: the "image scale" is the shorter side), and the batch is
zero-padded to a multiple of `size_divisor` (the stride of P7 for the paper's 128).

`RetinaNet.preprocess`, the export wrapper (`deploy.export`) and the diagnostics (anchor coverage,
`data show`) all take their sizes from `resize_geometry`, so they agree on every image size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def resize_geometry(height, width, min_size: int, max_size: int, size_divisor: int):
    """-> (scale, (resized h, w), (padded h, w)) of one image of `height` x `width` pixels.

    The scale is min(min_size / shorter side, max_size / longer side) in float64, and the resized
    sides are floor(side · scale): the output size of torchvision's detection transform, whose
    call `F.interpolate(scale_factor=scale, recompute_scale_factor=True)` floors the same float64
    product, so converted torchvision weights see the same input. The padded sides are the
    resized ones rounded up to a multiple of `size_divisor`.

    height, width: Python ints, or 0-dim tensors (then the results are 0-dim tensors: float64
    scale, int64 sizes), so that a traced export records the arithmetic and keeps the image size
    dynamic instead of baking in the size it was traced at.
    """
    if isinstance(height, Tensor) or isinstance(width, Tensor):
        height, width = torch.as_tensor(height).to(torch.float64), torch.as_tensor(width).to(torch.float64)
        # as tensors too: torch computes `number / tensor` as reciprocal(tensor) · number, which
        # can miss Python's correctly rounded quotient by an ulp (1001 / 1000), and so the floor
        min_size, max_size = torch.tensor(min_size, dtype=torch.float64), torch.tensor(max_size, dtype=torch.float64)
        minimum, maximum = torch.minimum, torch.maximum

        def floor(v):
            return torch.floor(v).to(torch.int64)

    else:
        minimum, maximum, floor = min, max, math.floor
    scale = minimum(min_size / minimum(height, width), max_size / maximum(height, width))
    resized = (floor(height * scale), floor(width * scale))
    # `%` is the floor modulo for ints and int tensors alike: (-s) % d pads s up to a multiple of d
    padded = tuple(s + (-s) % size_divisor for s in resized)
    return scale, resized, padded


__all__ = ["resize_geometry"]

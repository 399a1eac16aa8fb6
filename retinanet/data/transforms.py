"""Joint image/target transforms: callables `(image, target) -> (image, target)`.

image: float32 (3, H, W); target: {"boxes": float32 (n, 4) xyxy absolute pixels (pixel-edge
convention, so a flip maps x to W - x), "labels": int64 (n,), "image_id": int, ...}. Targets are
copied, never modified in place, so a dataset's cached arrays are safe.

Randomness comes from torch's generator, which DataLoader seeds per worker: runs are
reproducible under `torch.manual_seed`, and workers do not repeat each other's draws.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Iterable[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def hflip(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Mirror left-right: pixel column x -> W - 1 - x, box edges x -> W - x."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), {**target, "boxes": flipped.reshape(-1, 4)}


class RandomHorizontalFlip:
    """Flip with probability p: the paper's only augmentation (§4, training details)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p}: expected 0 <= p <= 1")
        self.p = p

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if self.p > 0 and torch.rand(()).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) with the shorter side min_size unless the longer would exceed max_size
    (then the longer side is max_size): the paper's "image scale" (§4)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: Tensor, target: dict, size: tuple[int, int]) -> tuple[Tensor, dict]:
    """Resize to size = (h, w), bilinear without antialias (as torchvision's detection
    transform), boxes scaled per axis by exactly the image's factors."""
    height, width = image.shape[-2:]
    new_h, new_w = size
    if (new_h, new_w) == (height, width):
        return image, target
    image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)[0]
    factors = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height], dtype=torch.float32)
    return image, {**target, "boxes": target["boxes"] * factors}


class ResizeShorterSide:
    """Resize so that the shorter side is one of `min_sizes` (chosen at random per image: scale
    jitter, e.g. (640, 672, 704, 736, 768, 800) for the paper's Table 2 models) and the longer
    side at most `max_size`. One size in `min_sizes` makes it deterministic (evaluation).

    Note the target keeps no record of the scale: a consumer that needs detections in original
    coordinates (evaluation) should not resize in the dataset, or divide by the factors itself.
    """

    def __init__(self, min_sizes: int | Sequence[int], max_size: int = 1333):
        self.min_sizes = (int(min_sizes),) if isinstance(min_sizes, int) else tuple(int(s) for s in min_sizes)
        if not self.min_sizes or min(self.min_sizes) <= 0 or max_size <= 0:
            raise ValueError(f"min_sizes={min_sizes}, max_size={max_size}: expected positive sizes")
        self.max_size = int(max_size)

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if len(self.min_sizes) == 1:
            min_size = self.min_sizes[0]
        else:
            min_size = self.min_sizes[int(torch.randint(len(self.min_sizes), ()).item())]
        height, width = image.shape[-2:]
        return resize(image, target, resized_shape(height, width, min_size, self.max_size))

    def __repr__(self) -> str:
        return f"ResizeShorterSide(min_sizes={self.min_sizes}, max_size={self.max_size})"

"""Joint image/target transforms: callables `(image, target) -> (image, target)`.

image: (3, H, W), uint8 as the datasets yield it (or float); target: {"boxes": float32 (n, 4) xyxy absolute pixels (pixel-edge
convention, so a flip maps x to W - x), "labels": int64 (n,), "image_id": int, ...}. Targets are
copied, never modified in place, so a dataset's cached arrays are safe.

There is no resize here: the model resizes its inputs itself (`RetinaNet.preprocess`, geometry in
`model/preprocess.py`), so datasets yield images and boxes at their original size.

Randomness comes from torch's generator, which DataLoader seeds per worker: runs are
reproducible under `torch.manual_seed`, and workers do not repeat each other's draws.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
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

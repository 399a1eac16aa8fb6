"""Transforms keep boxes aligned with the pixels."""

from __future__ import annotations

import torch

from retinanet.data import Compose, RandomHorizontalFlip
from retinanet.data.transforms import hflip


def image_with_box(h: int = 30, w: int = 40, box=(5, 8, 17, 20)):
    """A black image with a white rectangle exactly covering `box` (pixel edges)."""
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([2]), "image_id": 7}
    return image, target


def bright_extent(image: torch.Tensor, thresh: float = 0.5) -> list[float]:
    ys, xs = torch.nonzero(image[0] > thresh, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_flip_moves_box_with_pixels():
    image, target = image_with_box()
    flipped, t = hflip(image, target)
    assert t["boxes"].tolist() == [[40 - 17, 8, 40 - 5, 20]]
    assert bright_extent(flipped) == t["boxes"][0].tolist()
    assert t["labels"].tolist() == [2] and t["image_id"] == 7
    assert target["boxes"].tolist() == [[5, 8, 17, 20]]  # the input target is untouched


def test_flip_twice_is_identity():
    image, target = image_with_box()
    image = torch.rand_like(image)
    once = RandomHorizontalFlip(p=1.0)(image, target)
    twice = RandomHorizontalFlip(p=1.0)(*once)
    assert torch.equal(twice[0], image) and torch.equal(twice[1]["boxes"], target["boxes"])
    assert not torch.equal(once[0], image)
    never = RandomHorizontalFlip(p=0.0)(image, target)
    assert never[0] is image


def test_flip_probability():
    torch.manual_seed(0)
    image, target = image_with_box()
    flips = sum(RandomHorizontalFlip(0.5)(image, target)[1]["boxes"][0, 0].item() != 5 for _ in range(400))
    assert 150 < flips < 250


def test_empty_targets_pass_through():
    image = torch.rand(3, 20, 30)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1}
    out, t = Compose([RandomHorizontalFlip(1.0), RandomHorizontalFlip(1.0)])(image, target)
    assert torch.equal(out, image) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)

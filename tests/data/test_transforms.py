"""Transforms keep boxes aligned with the pixels; aspect-ratio grouping."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

from retinanet.data import Compose, GroupedBatchSampler, RandomHorizontalFlip, ResizeShorterSide
from retinanet.data.transforms import hflip, resized_shape


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


def test_resize_scales_boxes_like_the_image():
    image, target = image_with_box(30, 40, (5, 8, 17, 20))
    out, t = ResizeShorterSide(60, 1000)(image, target)
    assert out.shape == (3, 60, 80)
    assert t["boxes"].tolist() == [[10, 16, 34, 40]]
    # The white rectangle lands on the scaled box (to within the bilinear edge pixel).
    assert bright_extent(out) == pytest.approx(t["boxes"][0].tolist(), abs=1.0)
    # Non-integer factor: boxes scale by exactly the per-axis factors of the image.
    out, t = ResizeShorterSide(45, 1000)(image, target)
    fy, fx = out.shape[1] / 30, out.shape[2] / 40
    assert t["boxes"][0].tolist() == pytest.approx([5 * fx, 8 * fy, 17 * fx, 20 * fy])


def test_resize_respects_max_size_and_jitters():
    assert resized_shape(100, 400, 800, 1333) == (333, 1333)  # the longer side caps the scale
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    torch.manual_seed(0)
    t = ResizeShorterSide((64, 80, 96), 10_000)
    image, target = image_with_box(30, 40)
    sizes = {t(image, target)[0].shape[1] for _ in range(40)}
    assert sizes == {64, 80, 96}
    with pytest.raises(ValueError):
        ResizeShorterSide(())


def test_empty_targets_pass_through():
    image = torch.rand(3, 20, 30)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1}
    out, t = Compose([RandomHorizontalFlip(1.0), ResizeShorterSide(40, 100)])(image, target)
    assert out.shape == (3, 40, 60) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_grouped_batch_sampler():
    ratios = [1.5, 0.5, 1.0, 0.75, 1.2, 0.6, 2.0, 1.1, 0.9]  # landscape/square: 0 2 4 6 7; portrait: 1 3 5 8
    torch.manual_seed(0)
    sampler = GroupedBatchSampler(RandomSampler(range(9)), ratios, batch_size=2)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(9))
    for b in batches:
        assert len({ratios[i] >= 1 for i in b}) == 1
    assert len(sampler) == len(batches) == 5  # 5 landscape -> 3 batches, 4 portrait -> 2
    dropped = GroupedBatchSampler(SequentialSampler(range(9)), ratios, batch_size=2, drop_last=True)
    assert list(dropped) == [[0, 2], [1, 3], [4, 6], [5, 8]] and len(dropped) == 4


def test_grouped_len_does_not_touch_the_rng():
    sampler = GroupedBatchSampler(RandomSampler(range(20)), [1.0] * 20, batch_size=4)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    len(sampler)
    assert torch.equal(torch.rand(3), expected)

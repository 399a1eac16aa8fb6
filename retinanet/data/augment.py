"""Augmentation for small datasets (`data.augment`), on torchvision.transforms.v2.

The boxes travel with the image as `tv_tensors.BoundingBoxes`, so every geometric step moves
them as torchvision moves its pixels (no box arithmetic here). Each item of `data.augment` is a
name, or a name with parameters: "zoom_out(max_scale=3)", applied in the order given:

- photometric   brightness, contrast, saturation, hue and channel-order jitter (SSD's photometric
                distortion, v2.RandomPhotometricDistort), p=0.5
- vflip         vertical flip, p=0.5
- rot90         rotation by 0, 90, 180 or 270 degrees (drawn uniformly), p=1 (aerial, microscopy)
- iou_crop      SSD's crop: a crop whose IoU with some box reaches a drawn threshold
                (v2.RandomIoUCrop); a box is kept when its centre lies in the crop, then clipped
- zoom_out      the image placed on a larger canvas of the mean colour (v2.RandomZoomOut),
                max_scale=4, p=0.5: small objects from large ones
- lsj           large-scale jitter (Ghiasi et al. 2021): rescaled by U(min_scale, max_scale)
                (0.1, 2.0), then cropped or padded back to the image's size
- flip and scale jitter of the paper live elsewhere: data.hflip_prob, model.train_min_sizes.

A box cut by a crop is clipped to it and kept when at least `min_visible` (default 0.3) of its
area stays visible, else dropped (lsj; iou_crop keeps SSD's centre rule), and boxes under 1 px
are dropped (v2.SanitizeBoundingBoxes): an image may end with none (a negative).

Randomness: torch's global generator, which the training stream (`SeededSamples`) seeds by
stream position, so a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Callable

import torch
import yaml
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

_ITEM = re.compile(r"^\s*([a-z_0-9]+)\s*(?:\((.*)\))?\s*$")


class LargeScaleJitter:
    """Rescale by a factor drawn from U(min_scale, max_scale), then a random crop (or padding
    with zeros, at the bottom right) back to the input's size; boxes clipped, kept when at least
    `min_visible` of their area is still in the image."""

    def __init__(self, min_scale: float = 0.1, max_scale: float = 2.0, min_visible: float = 0.3):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"lsj: expected 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.min_visible = min_scale, max_scale, min_visible

    def __call__(self, sample: dict) -> dict:
        image = sample["image"]
        h, w = image.shape[-2:]
        s = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(()).item()
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        sample = v2.Resize((nh, nw), antialias=True)(sample)
        top = int(torch.randint(0, max(nh - h, 0) + 1, ()).item())
        left = int(torch.randint(0, max(nw - w, 0) + 1, ()).item())
        area_before = _area(sample["boxes"])
        out = _each(sample, lambda t: F.crop(t, top, left, h, w))  # pads with zeros past the edge
        out["boxes"] = F.clamp_bounding_boxes(out["boxes"])
        return keep_boxes(out, _area(out["boxes"]) >= self.min_visible * area_before.clamp(min=1e-6))


def _each(sample: dict, fn) -> dict:
    """`fn` applied to every image, mask and box set of the sample (the rest as it is)."""
    kinds = (tv_tensors.Image, tv_tensors.Mask, tv_tensors.BoundingBoxes)
    return {k: fn(v) if isinstance(v, kinds) else v for k, v in sample.items()}


def _area(boxes: Tensor) -> Tensor:
    b = boxes.as_subclass(Tensor)
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def keep_boxes(sample: dict, keep: Tensor) -> dict:
    """The sample with only the boxes (and their labels) where `keep`."""
    out = dict(sample)
    out["boxes"] = tv_tensors.wrap(sample["boxes"].as_subclass(Tensor)[keep], like=sample["boxes"])
    out["labels"] = sample["labels"][keep]
    return out


class Rot90:
    """Rotation by k * 90 degrees, k drawn uniformly from 0..3 (pixels and boxes exact)."""

    def __call__(self, sample: dict) -> dict:
        k = int(torch.randint(0, 4, ()).item())
        if not k:
            return sample
        return _each(sample, lambda t: F.rotate(t, 90.0 * k, expand=True))


def _photometric(p: float = 0.5):
    return v2.RandomPhotometricDistort(p=p)


def _vflip(p: float = 0.5):
    return v2.RandomVerticalFlip(p=p)


def _rot90():
    return Rot90()


def _iou_crop(min_scale: float = 0.3, max_scale: float = 1.0, trials: int = 40):
    return v2.RandomIoUCrop(min_scale=min_scale, max_scale=max_scale, trials=trials)


def _zoom_out(max_scale: float = 4.0, p: float = 0.5):
    # The canvas: the mean colour (ImageNet's, in 0..1), as SSD fills it.
    return v2.RandomZoomOut(fill={tv_tensors.Image: (0.485, 0.456, 0.406), "others": 0}, side_range=(1.0, max_scale), p=p)


def _lsj(min_scale: float = 0.1, max_scale: float = 2.0, min_visible: float = 0.3):
    return LargeScaleJitter(min_scale, max_scale, min_visible)


AUGMENTATIONS: dict[str, Callable[..., Callable]] = {
    "photometric": _photometric,
    "vflip": _vflip,
    "rot90": _rot90,
    "iou_crop": _iou_crop,
    "zoom_out": _zoom_out,
    "lsj": _lsj,
}


def parse_item(item: str) -> tuple[str, dict[str, Any]]:
    """"name" or "name(key=value, ...)" -> (name, {key: value}); ValueError naming the item."""
    m = _ITEM.match(item)
    if not m or m.group(1) not in AUGMENTATIONS:
        raise ValueError(
            f"data.augment item {item!r}: expected one of {sorted(AUGMENTATIONS)}, optionally with "
            "parameters, e.g. zoom_out(max_scale=3)"
        )
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"data.augment item {item!r}: parameter {part!r} is not key=value")
        params[key.strip()] = yaml.safe_load(value)
    try:
        AUGMENTATIONS[m.group(1)](**params)  # the parameters are checked once, here
    except TypeError as e:
        raise ValueError(f"data.augment item {item!r}: {e}") from None
    return m.group(1), params


class Augment:
    """`(image (3, H, W), target) -> (image float in 0..1, target)`: the steps of `items`
    (`data.augment`) in order, then boxes under 1 px dropped. A uint8 image is converted first:
    torchvision's resizes and colour jitter then work in float, as they did before the
    datasets yielded uint8."""

    def __init__(self, items: Sequence[str]):
        self.items = list(items)
        self.steps = [AUGMENTATIONS[name](**params) for name, params in map(parse_item, self.items)]
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=lambda s: s["labels"])

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        h, w = image.shape[-2:]
        sample = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)),
            "labels": target["labels"],
        }
        for step in self.steps:
            sample = step(sample)
        sample = self.sanitize(sample)
        boxes = sample["boxes"].as_subclass(Tensor).to(torch.float32).reshape(-1, 4)
        image = sample["image"].as_subclass(Tensor).clamp(0, 1)
        return image, {**target, "boxes": boxes, "labels": sample["labels"]}

    def __repr__(self) -> str:
        return f"Augment({self.items})"


__all__ = ["AUGMENTATIONS", "Augment", "LargeScaleJitter", "Rot90", "keep_boxes", "parse_item"]

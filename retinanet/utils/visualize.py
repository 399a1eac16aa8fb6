"""Pictures of detections: boxes with class name and score drawn on an image, grids of such
pictures, and ground truth with the anchors it would be assigned (`retinanet data show`). Plain
PIL; boxes are xyxy in the image's pixels (the model's eval-mode output)."""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # successive hues spread evenly over the colour wheel


def class_colour(label: int) -> tuple[int, int, int]:
    """A saturated RGB colour for class `label`; neighbouring labels get far-apart hues."""
    hue = (0.07 + label * GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image, a (3, H, W) tensor (float in [0, 1] or uint8) or an
    (H, W, 3) uint8 array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(t.shape)}")
        if t.dtype.is_floating_point:
            t = (t.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        return Image.fromarray(t.permute(1, 2, 0).contiguous().numpy(), "RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return Image.fromarray(array, "RGB")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def _as_list(x: Any, dtype) -> list:
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if dtype is float else x).tolist()
    return np.asarray(x).tolist()


def draw_detections(
    image: Any,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
) -> Image.Image:
    """A copy of `image` with the detections drawn: one colour per class, a "name 0.87" tag.

    image: PIL image or (3, H, W) tensor. boxes: (n, 4) xyxy pixels; labels: (n,) ints;
    scores: (n,) or None (ground truth: no score shown). Detections with score < score_thresh
    are left out; the lowest-scoring are drawn first so that the best stay on top.
    """
    canvas = to_pil(image).copy()
    boxes = [list(map(float, b)) for b in _as_list(boxes, float)]
    labels = [int(v) for v in _as_list(labels, int)]
    scores = [float(v) for v in _as_list(scores, float)] if scores is not None else [None] * len(boxes)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"boxes/labels/scores lengths differ: {len(boxes)}/{len(labels)}/{len(scores)}")
    width, height = canvas.size
    line = max(2, round(min(width, height) / 250))
    font = _font(max(10, round(min(width, height) / 45)))
    draw = ImageDraw.Draw(canvas)
    order = sorted(range(len(boxes)), key=lambda i: -math.inf if scores[i] is None else scores[i])
    for i in order:
        if scores[i] is not None and scores[i] < score_thresh:
            continue
        x1, y1, x2, y2 = boxes[i]
        colour = class_colour(labels[i])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        name = (
            class_names[labels[i]] if class_names is not None and 0 <= labels[i] < len(class_names) else str(labels[i])
        )
        text = name if scores[i] is None else f"{name} {scores[i]:.2f}"
        # The tag sits above the box, or inside its top edge when the box touches the image top.
        _tag(draw, text, x1, y1, colour, font, width)
    return canvas


UNREACHED_COLOUR = (230, 20, 20)


def _dotted_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], colour, step: int = 4) -> None:
    """A 1-px rectangle drawn every other `step` pixels (PIL has no dashed lines)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    for x in range(x1, x2 + 1, 2 * step):
        draw.line([(x, y1), (min(x + step, x2), y1)], fill=colour)
        draw.line([(x, y2), (min(x + step, x2), y2)], fill=colour)
    for y in range(y1, y2 + 1, 2 * step):
        draw.line([(x1, y), (x1, min(y + step, y2))], fill=colour)
        draw.line([(x2, y), (x2, min(y + step, y2))], fill=colour)


def _tag(draw: ImageDraw.ImageDraw, text: str, x: float, y: float, colour, font, width: int) -> None:
    """A filled label above (x, y), or just below it when there is no room above."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 4
    tx = min(max(x, 0), max(width - tw, 0))
    ty = y - th if y - th >= 0 else max(y, 0)
    draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((tx + 2 - left, ty + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font)


def draw_anchor_matches(
    image: Any,
    boxes: Any,
    labels: Any,
    positives: Sequence[Any],
    low_quality: Sequence[Any],
    best_iou: Any,
    class_names: Sequence[str] | None = None,
    iou_thresh: float = 0.5,
) -> Image.Image:
    """Ground truth with the anchors that would be its positives in training.

    boxes (n, 4) xyxy and labels (n,) in the image's pixels; positives[i] (k_i, 4): the anchors
    assigned to box i with IoU >= iou_thresh (thin, in the box's colour); low_quality[i]: those
    assigned below it by the matcher's low-quality rule (dotted); best_iou (n,): each box's best
    anchor IoU. A box that no anchor reaches at iou_thresh is drawn in red and crossed, its tag
    giving its best IoU; the others are tagged "name: k anchors".
    """
    canvas = to_pil(image).copy()
    boxes = [list(map(float, b)) for b in _as_list(boxes, float)]
    labels = [int(v) for v in _as_list(labels, int)]
    best = [float(v) for v in _as_list(best_iou, float)]
    if not len(boxes) == len(labels) == len(best) == len(positives) == len(low_quality):
        raise ValueError("draw_anchor_matches: boxes, labels, positives, low_quality and best_iou differ in length")
    width, height = canvas.size
    line = max(2, round(min(width, height) / 250))
    font = _font(max(10, round(min(width, height) / 45)))
    draw = ImageDraw.Draw(canvas)
    # the anchors first, so that the ground truth stays on top
    for label, pos, low in zip(labels, positives, low_quality):
        colour = class_colour(label)
        light = tuple(int(c + (255 - c) * 0.45) for c in colour)
        for a in _as_list(pos, float):
            draw.rectangle(a, outline=light, width=1)
        for a in _as_list(low, float):
            _dotted_rectangle(draw, a, light)
    for box, label, pos, iou in zip(boxes, labels, positives, best):
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
        x1, y1, x2, y2 = box
        if iou < iou_thresh:
            draw.rectangle(box, outline=UNREACHED_COLOUR, width=line)
            draw.line([(x1, y1), (x2, y2)], fill=UNREACHED_COLOUR, width=max(1, line // 2))
            draw.line([(x1, y2), (x2, y1)], fill=UNREACHED_COLOUR, width=max(1, line // 2))
            _tag(draw, f"{name}: no anchor >= {iou_thresh:g} (best {iou:.2f})", x1, y1, UNREACHED_COLOUR, font, width)
        else:
            colour = class_colour(label)
            draw.rectangle(box, outline=colour, width=line)
            k = len(_as_list(pos, float))
            _tag(draw, f"{name}: {k} anchor{'s' if k != 1 else ''}", x1, y1, colour, font, width)
    return canvas


def draw_ground_truth(image: Any, boxes: Any, colour=(255, 255, 255), width: int | None = None) -> Image.Image:
    """A copy of `image` with boxes outlined in one colour (ground truth under predictions)."""
    canvas = to_pil(image).copy()
    draw = ImageDraw.Draw(canvas)
    line = width or max(1, round(min(canvas.size) / 400))
    for b in _as_list(boxes, float):
        draw.rectangle(list(map(float, b)), outline=colour, width=line)
    return canvas


def save_grid(
    images_with_dets: Sequence[Image.Image],
    path: str | os.PathLike,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    pad: int = 6,
) -> Path:
    """Tile pictures (e.g. from `draw_detections`) into one PNG/JPEG at `path`; returns the path.

    ncols: default ceil(sqrt(n)) (4 pictures -> 2 x 2). Cells are the size of the largest picture;
    smaller ones sit at their cell's top left. titles: one line above each picture.
    """
    pictures = [to_pil(im) for im in images_with_dets]
    if not pictures:
        raise ValueError("save_grid: no images")
    if titles is not None and len(titles) != len(pictures):
        raise ValueError(f"save_grid: {len(titles)} titles for {len(pictures)} images")
    n = len(pictures)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    cell_w = max(p.width for p in pictures)
    font = _font(max(10, round(cell_w / 40)))
    title_h = 0
    if titles:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        title_h = max(probe.textbbox((0, 0), t, font=font)[3] for t in titles) + pad
    cell_h = max(p.height for p in pictures) + title_h
    grid = Image.new("RGB", (ncols * cell_w + (ncols + 1) * pad, nrows * cell_h + (nrows + 1) * pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, picture in enumerate(pictures):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + pad)
        if titles:
            draw.text((x, y), titles[k], fill=(0, 0, 0), font=font)
        grid.paste(picture, (x, y + title_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


__all__ = ["class_colour", "draw_anchor_matches", "draw_detections", "draw_ground_truth", "save_grid", "to_pil"]

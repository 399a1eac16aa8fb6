"""The built-in synthetic dataset: coloured, textured shapes on cluttered backgrounds, in COCO
format. It is the project's default dataset: every experiment can run on it with no download.
It is meant to be learnable by a small RetinaNet (ResNet-18-FPN, ~320 px) within minutes on a
CPU while still rewarding the paper's ingredients (small objects among many easy negatives).

Layout written by `generate_synthetic(out_dir)`:
    out_dir/train/000001.jpg ...         out_dir/val/000001.jpg ...
    out_dir/annotations/instances_train.json, instances_val.json
    out_dir/SYNTH_OK.json                (written last by `ensure_synthetic`: the dataset is complete)

Design (why each ingredient is there):
- Six classes with distinct geometry: circle, square, triangle, ring, cross, star. Each is drawn
  rotated and slightly stretched (aspect 0.8-1.25), so boxes are not all squares.
- Colour is a cue but not the answer: each class has its own hue (60° apart) with a spread of
  σ = 20°, so neighbouring classes overlap a little in colour (v1 had σ = 28°); each class
  prefers one of five textures (half of the time) and takes a random one otherwise.
- Hard negatives: distractor shapes that are not classes but resemble one: ellipses (aspect
  1.8-3, vs circle), open arcs (vs ring), bars (vs square), T/L shapes (vs cross), half-discs,
  in the same colours and textures. A detector must learn shape, not "saturated blob".
- Cluttered backgrounds: low-frequency colour fields, gradients, random lines and soft blobs,
  pixel noise; so background is not trivially separable, and easy negatives still outnumber
  everything (the imbalance the focal loss targets, §3).
- COCO-like scales: the box side sqrt(w h) is drawn log-uniformly within three bands chosen
  with probabilities 0.46 / 0.29 / 0.25: 24-30.5 px (small, < 32²), 34-92 px (medium), 100-180 px
  (large, > 96²) at 320 px; bands scale with `image_size`. Measured on 150 images: 37% small,
  42% medium, 21% large (COCO train: 41% / 34% / 24%). The smallest side is 24 px, not COCO's few
  pixels: the paper's smallest anchor is 32 px at stride 8, and a square box reaches IoU 0.5 with
  it wherever it lies only from ~24 px on (IoU = s²/32² when the box is inside the anchor). v1
  drew small boxes from 16 px, so about half of them could never get a positive anchor: noise
  that no RetinaNet with the paper's anchors can learn from, and a ceiling on AP_S.
- About 8% of images hold no object (distractors only): negatives, as real datasets have.
- Objects are placed with pairwise box IoU <= 0.1 and at most 25% of the smaller box covered:
  mostly separate, some touching, no small shape nested in a large one's box.
- Boxes are the exact extent of the drawn shape (measured on the 4x supersampled mask), in
  pixel-edge coordinates; area = box area (so size bands agree with `check_dataset`).
- Deterministic: image i of a split is drawn from numpy's PCG64 seeded with (seed, split, i),
  so the same seed gives byte-identical files (same numpy/Pillow versions).
- Presets (retinanet/data/synth_presets.py, `preset=`) draw other class lists and scene
  statistics with the same code, from the plain drawing parameters ("scene") defined there.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

SYNTH_VERSION = 2
CLASSES = ("circle", "square", "triangle", "ring", "cross", "star")
DISTRACTORS = ("ellipse", "arc", "bar", "tee", "half_disc")
TEXTURES = ("solid", "stripes", "checker", "noise", "gradient")
# Per class: hue centre (degrees) and preferred texture.
CLASS_STYLE = {
    "circle": (0.0, "solid"),
    "square": (60.0, "stripes"),
    "triangle": (120.0, "gradient"),
    "ring": (180.0, "solid"),
    "cross": (240.0, "checker"),
    "star": (300.0, "noise"),
}
HUE_SIGMA = 20.0
PREFERRED_TEXTURE_P = 0.5
EMPTY_IMAGE_P = 0.08
# Size bands of the box side sqrt(w h) at 320 px, and their probabilities.
SIZE_BANDS = ((24.0, 30.5), (34.0, 92.0), (100.0, 180.0))
SIZE_BAND_P = (0.46, 0.29, 0.25)
MAX_IOU = 0.1
MAX_IOA = 0.25
SUPERSAMPLE = 4
JPEG_QUALITY = 92
MARKER = "SYNTH_OK.json"
SPLITS = {"train": 1, "val": 2}
ENV_VAR = "RETINANET_DATA"

DEFAULTS = {"num_train": 600, "num_val": 100, "image_size": 320}


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in unit coordinates (within the unit circle), then scaled/rotated/placed.
# ---------------------------------------------------------------------------------------------


def _circle(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _regular(k: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(k) * 2 * np.pi / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(inner: float) -> np.ndarray:
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(half_width: float) -> np.ndarray:
    a, w = 1.0 / math.sqrt(2) * 1.25, half_width  # arms reach ~0.88 of the unit circle
    a = min(a, math.sqrt(1 - w * w))
    return np.array(
        [[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]]
    )


def _tee(rng: np.random.Generator) -> np.ndarray:
    w = rng.uniform(0.18, 0.28)
    if rng.random() < 0.5:  # T
        top = -0.7 + 2 * w
        pts = [[-0.8, -0.7], [0.8, -0.7], [0.8, top], [w, top], [w, 0.8], [-w, 0.8], [-w, top], [-0.8, top]]
    else:  # L
        x, y = -0.7 + 2 * w, 0.8 - 2 * w
        pts = [[-0.7, -0.8], [x, -0.8], [x, y], [0.8, y], [0.8, 0.8], [-0.7, 0.8]]
    return np.array(pts)


def _half_disc() -> np.ndarray:
    t = np.linspace(0, np.pi, 25)
    return np.stack([np.cos(t), np.sin(t) - 0.5], axis=1)


def shape_layers(kind: str, rng: np.random.Generator) -> tuple[list[tuple[np.ndarray, int]], tuple[float, float]]:
    """The shape as polygons to fill in order with 255 (ink) or 0 (a hole), and its (sx, sy)
    stretch. Unit coordinates: the shape fits the unit circle before stretching."""
    stretch = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    sx, sy = math.sqrt(stretch), 1 / math.sqrt(stretch)
    if kind == "circle":
        return [(_circle(), 255)], (sx, sy)
    if kind == "square":
        return [(_regular(4, np.pi / 4), 255)], (sx, sy)
    if kind == "triangle":
        return [(_regular(3), 255)], (sx, sy)
    if kind == "ring":
        inner = rng.uniform(0.45, 0.65)
        return [(_circle(), 255), (inner * _circle(), 0)], (sx, sy)
    if kind == "cross":
        return [(_cross(rng.uniform(0.17, 0.26)), 255)], (sx, sy)
    if kind == "star":
        return [(_star(rng.uniform(0.38, 0.5)), 255)], (sx, sy)
    if kind == "ellipse":
        aspect = rng.uniform(1.8, 3.0)
        return [(_circle(), 255)], (1.0, 1.0 / aspect)
    if kind == "arc":
        inner = rng.uniform(0.45, 0.65)
        gap = np.deg2rad(rng.uniform(80, 160))
        t = np.linspace(-gap / 2, gap / 2, 12)
        wedge = np.concatenate([[[0.0, 0.0]], 1.5 * np.stack([np.cos(t), np.sin(t)], axis=1)])
        return [(_circle(), 255), (inner * _circle(), 0), (wedge, 0)], (sx, sy)
    if kind == "bar":
        aspect = rng.uniform(2.5, 5.0)
        return [(_regular(4, np.pi / 4), 255)], (1.0, 1.0 / aspect)
    if kind == "tee":
        return [(_tee(rng), 255)], (sx, sy)
    if kind == "half_disc":
        return [(_half_disc(), 255)], (sx, sy)
    raise ValueError(f"unknown shape {kind!r}")


def render_mask(kind: str, radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased alpha mask of a shape and its exact box.

    Returns (alpha float32 (P, P) in [0, 1], box float (4,) xyxy in patch pixel-edge coordinates).
    The shape is drawn at SUPERSAMPLE x resolution, rotated by a random angle with a random
    sub-pixel offset, and box-filtered down; the box is the supersampled ink extent / SUPERSAMPLE.
    """
    layers, (sx, sy) = shape_layers(kind, rng)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    size = int(math.ceil(2 * radius)) + 3
    s = SUPERSAMPLE
    centre = (size / 2 + rng.uniform(-0.5, 0.5)) * s
    mask = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(mask)
    for poly, fill in layers:
        pts = (poly * [sx, sy]) @ rot.T * (radius * s) + centre
        draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
    big = np.asarray(mask)
    rows = np.flatnonzero(big.any(axis=1))
    cols = np.flatnonzero(big.any(axis=0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64) / s
    alpha = np.asarray(mask.reduce(s), dtype=np.float32) / 255.0
    return alpha, box


# ---------------------------------------------------------------------------------------------
# Colours, textures, backgrounds
# ---------------------------------------------------------------------------------------------


def texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) brightness pattern in [0, 1]."""
    if kind == "solid":
        return np.ones((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == "stripes":
        period = rng.uniform(3.0, 8.0)
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if kind == "checker":
        period = rng.uniform(3.0, 7.0)
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "noise":
        return rng.random((h, w), dtype=np.float32)
    if kind == "gradient":
        return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    raise ValueError(f"unknown texture {kind!r}")


def object_colour(kind: str, rng: np.random.Generator, style: Optional[tuple] = None) -> tuple[np.ndarray, str, float]:
    """(rgb (3,), texture name, texture contrast) of one object or distractor. style: a preset's
    (hue centre or None for any hue, hue sigma, saturation, value and texture contrast ranges)
    instead of CLASS_STYLE; its textures are drawn at random."""
    sat, val, contrast = ((0.5, 1.0), (0.45, 1.0), (0.25, 0.5)) if style is None else style[2:]
    if style is not None:
        hue = rng.uniform(0, 360) if style[0] is None else rng.normal(style[0], style[1])
        tex = TEXTURES[rng.integers(len(TEXTURES))]
    elif kind in CLASS_STYLE:
        hue_centre, preferred = CLASS_STYLE[kind]
        hue = rng.normal(hue_centre, HUE_SIGMA)
        tex = preferred if rng.random() < PREFERRED_TEXTURE_P else TEXTURES[rng.integers(len(TEXTURES))]
    else:
        hue = rng.uniform(0, 360)
        tex = TEXTURES[rng.integers(len(TEXTURES))]
    rgb = hsv_to_rgb(hue, rng.uniform(*sat), rng.uniform(*val))
    return rgb, tex, rng.uniform(*contrast)


def hsv_to_rgb(h_deg: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV -> RGB: arrays of hue (degrees), saturation, value -> (..., 3) float32."""
    h = (np.asarray(h_deg, dtype=np.float64) % 360.0) / 60.0
    s, v = np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64)
    c = v * s
    x = c * (1 - np.abs(h % 2 - 1))
    zero = np.zeros_like(c)
    sector = np.floor(h).astype(int) % 6
    r = np.choose(sector, [c, x, zero, zero, x, c])
    g = np.choose(sector, [x, c, c, x, zero, zero])
    b = np.choose(sector, [zero, zero, x, c, c, x])
    return (np.stack([r, g, b], axis=-1) + (v - c)[..., None]).astype(np.float32)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered float32 (H, W, 3) background in [0, 1]: colour fields, a gradient, soft blobs
    and lines, all in low-saturation colours so that objects stand out by shape and colour."""

    def field(cells: int, max_sat: float) -> Image.Image:
        n = cells * cells
        grid = hsv_to_rgb(rng.uniform(0, 360, n), rng.uniform(0, max_sat, n), rng.uniform(0.2, 0.85, n))
        tiny = Image.fromarray((grid.reshape(cells, cells, 3) * 255).astype(np.uint8))
        return tiny.resize((width, height), Image.BICUBIC)

    base = Image.blend(field(int(rng.integers(2, 5)), 0.35), field(int(rng.integers(6, 14)), 0.5), 0.3)
    theta = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-64, 64) / max(height, width)
    xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(slope * math.cos(theta))
    ramp = xs + np.arange(height, dtype=np.float32)[:, None] * np.float32(slope * math.sin(theta))
    ramp -= ramp.mean()
    base = np.asarray(base, dtype=np.int16) + ramp.astype(np.int16)[..., None]

    # Soft blobs: drawn at 1/4 resolution, so that upsampling blurs them for free.
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    small = (max(1, width // 4), max(1, height // 4))
    blobs = Image.new("RGBA", small, (0, 0, 0, 0))
    draw = ImageDraw.Draw(blobs)
    for _ in range(int(rng.integers(2, 8))):
        c = (hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.5), rng.uniform(0.1, 0.95)) * 255).astype(int)
        cx, cy = rng.random() * small[0], rng.random() * small[1]
        rx, ry = rng.uniform(2, 0.25 * small[0]), rng.uniform(2, 0.25 * small[1])
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(*c.tolist(), int(rng.integers(40, 120))))
    img = Image.alpha_composite(img.convert("RGBA"), blobs.resize((width, height), Image.BILINEAR))
    # Lines: crisp clutter with edges like the objects'.
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 16))):
        c = (hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.6), rng.uniform(0.1, 0.95)) * 255).astype(int)
        pts = [tuple(p) for p in (rng.random((int(rng.integers(2, 4)), 2)) * [width, height]).tolist()]
        draw.line(pts, fill=(*c.tolist(), 255), width=int(rng.integers(1, 4)))
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------


def _overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """Whether `box` overlaps any of `boxes` by IoU > MAX_IOU or covers more than MAX_IOA of
    the smaller box (no nesting of a small shape inside a large one's box)."""
    if not boxes:
        return False
    b = np.asarray(boxes)
    lt = np.maximum(b[:, :2], box[:2])
    rb = np.minimum(b[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(b[:, 2:] - b[:, :2], axis=1)
    iou = inter / (area + areas - inter)
    ioa = inter / np.minimum(area, areas)
    return bool((iou > MAX_IOU).any() or (ioa > MAX_IOA).any())


def _sample_side(rng: np.random.Generator, scale: float, bands=SIZE_BANDS, band_p=SIZE_BAND_P) -> float:
    band = bands[rng.choice(len(bands), p=band_p)]
    lo, hi = band[0] * scale, band[1] * scale
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def make_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    classes: Sequence[str] = CLASSES,
    scene: Optional[dict] = None,
) -> tuple[np.ndarray, list[tuple[list[float], int]]]:
    """One synthetic image: (uint8 (H, W, 3), [(box xyxy, index in `classes`), ...]). Only the
    classes of `classes` are drawn (no unlabelled object of another class). scene: a preset's
    drawing parameters (synth_presets.PRESETS; `classes` then names its classes); None: the
    default dataset's (`classes` a subset of CLASSES)."""
    sc = scene or {}
    scale = min(width, height) / sc.get("base_size", 320.0)
    img = background(height, width, rng)
    if scene is None:
        n_objects = 0 if rng.random() < EMPTY_IMAGE_P else 1 + int(rng.poisson(3.0))
    else:
        count_p = scene["count_p"]
        n_objects = 0 if rng.random() < scene["empty_p"] else 1 + int(rng.choice(len(count_p), p=count_p))
    n_distractors = int(rng.integers(*sc.get("distractors", (1, 5))))
    # Items to place, (shape, label or -1): class objects and distractors, in order of placement.
    labels = [int(rng.integers(len(classes))) for _ in range(min(n_objects, 10))]
    shapes = [sc["styles"][classes[k]][0] if scene else (classes[k],) for k in labels]  # a preset's: any of these
    items = [(s[0] if len(s) == 1 else s[rng.integers(len(s))], k) for s, k in zip(shapes, labels)]
    items += [(DISTRACTORS[rng.integers(len(DISTRACTORS))], -1) for _ in range(n_distractors)]
    bands = sc.get("size_bands", SIZE_BANDS), sc.get("size_band_p", SIZE_BAND_P)

    placed: list[tuple[str, int, np.ndarray, np.ndarray, int, int]] = []  # kind, label, alpha, box, x0, y0
    taken: list[np.ndarray] = []
    for kind, label in items:
        side = _sample_side(rng, scale, *bands)
        # The box side of a shape within the unit circle is ~0.75-1.0 of the circle's diameter.
        alpha, box = render_mask(kind, side / (2 * 0.85), rng)
        if alpha.shape[0] >= height or alpha.shape[1] >= width:
            continue
        for _ in range(20):  # rejection sampling for a free spot; give up quietly
            # Patch offsets that keep the shape's ink inside the image.
            x0 = int(rng.integers(-int(box[0]), width - int(math.ceil(box[2])) + 1))
            y0 = int(rng.integers(-int(box[1]), height - int(math.ceil(box[3])) + 1))
            abs_box = box + [x0, y0, x0, y0]
            if not _overlaps(abs_box, taken):
                taken.append(abs_box)
                placed.append((kind, label, alpha, abs_box, x0, y0))
                break

    annotations = []
    # Distractors first, so that class objects are never occluded by a non-object.
    for kind, label, alpha, box, x0, y0 in sorted(placed, key=lambda p: p[1] >= 0):
        ph, pw = alpha.shape
        # Patches may stick out of the image where the shape's ink does not.
        ya, yb, xa, xb = max(y0, 0), min(y0 + ph, height), max(x0, 0), min(x0 + pw, width)
        a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
        style = None
        if scene is not None:
            _, hue, value = sc["styles"][classes[label]] if label >= 0 else (None, None, sc["value"])
            style = (hue, sc["hue_sigma"], sc["saturation"], value, sc["contrast"])
        rgb, tex, contrast = object_colour(kind, rng, style)
        pattern = texture(tex, yb - ya, xb - xa, rng)
        colour = rgb * (1 - contrast + contrast * pattern[..., None])
        region = img[ya:yb, xa:xb]
        img[ya:yb, xa:xb] = region * (1 - a) + colour * a
        if label >= 0:
            annotations.append(([float(v) for v in box], label))

    # Sensor-like noise, luminance only (a third of the cost of per-channel noise).
    img += rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(0.01, 0.05))
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out, annotations


# ---------------------------------------------------------------------------------------------
# The dataset on disk
# ---------------------------------------------------------------------------------------------


def _size_wh(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    w, h = image_size
    return int(w), int(h)


def _write_image(job: tuple) -> list[tuple[list[float], int]]:
    """Draw and save image `i` of a split; returns its objects. Top level: runs in workers."""
    folder, seed, split_code, i, width, height, classes, scene = job
    pixels, objects = make_image(np.random.default_rng([seed, split_code, i]), width, height, classes, scene)
    # 4:4:4 chroma: thin strokes of small shapes keep their colour.
    Image.fromarray(pixels).save(folder / f"{i + 1:06d}.jpg", quality=JPEG_QUALITY, subsampling=0)
    return objects


def _default_workers(num_images: int) -> int:
    if num_images < 100 or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


def generate_split(
    out_dir: Path,
    split: str,
    num_images: int,
    seed: int,
    image_size: int | tuple[int, int],
    workers: Optional[int] = None,
    classes: Sequence[str] = CLASSES,
    scene: Optional[dict] = None,
) -> dict:
    """Write out_dir/<split>/*.jpg and return its COCO dict (category ids 1..len(classes)).

    workers: processes drawing images (default: the CPUs, for >= 100 images). Each image has its
    own seed, so the files do not depend on the number of workers. scene: see `make_image`.
    """
    width, height = _size_wh(image_size)
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, seed, SPLITS[split], i, width, height, tuple(classes), scene) for i in range(num_images)]
    workers = _default_workers(num_images) if workers is None else workers
    if workers > 1:
        # fork, not spawn: spawn re-imports the caller's main module, which breaks scripts
        # without a __main__ guard; the children only run numpy and PIL.
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_write_image, jobs, chunksize=8)
    else:
        results = [_write_image(job) for job in jobs]
    images, annotations = [], []
    for i, objects in enumerate(results):
        images.append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": width, "height": height})
        for box, label in objects:
            x1, y1, x2, y2 = (round(v, 2) for v in box)
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"retinanet synthetic shapes v{SYNTH_VERSION}", "split": split, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(classes)],
    }


def generate_synthetic(
    out_dir: str | Path,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    image_size: Optional[int | tuple[int, int]] = None,
    workers: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    preset: Optional[str] = None,
) -> Path:
    """Write the synthetic dataset (COCO format, layout in the module docstring) into out_dir.

    image_size: an int (square) or (width, height). classes: a subset of CLASSES (of the
    preset's classes with `preset`), the only ones drawn (default all; e.g. one half to pretrain
    on, the other to fine-tune on). preset: a name of synth_presets.PRESETS (None: the default
    dataset); sizes and counts not given are its defaults (else DEFAULTS). Same arguments ->
    byte-identical files, whatever `workers`. Returns out_dir. About 30-50 ms per 320 px image
    per CPU core.
    """
    from .synth_presets import preset_scene

    scene, classes = preset_scene(preset), check_classes(classes, preset)
    given = {"num_train": num_train, "num_val": num_val, "image_size": image_size}
    sizes = {**_defaults(preset), **{k: v for k, v in given.items() if v is not None}}
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        coco = generate_split(out_dir, split, sizes[f"num_{split}"], seed, sizes["image_size"], workers, classes, scene)
        with open(out_dir / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump(coco, f)
    return out_dir


def check_classes(classes: Optional[Sequence[str]], preset: Optional[str] = None) -> tuple[str, ...]:
    """`classes` (default all) as a tuple in the order of CLASSES (of the preset's classes);
    ValueError naming unknown or no classes."""
    from .synth_presets import class_names

    every = class_names(preset)
    if classes is None:
        return every
    unknown = sorted(set(classes) - set(every))
    if unknown or not classes:
        shown = list(every) if len(every) <= 12 else [*every[:12], "..."]
        raise ValueError(f"synthetic classes {list(classes)}: expected some of {shown}")
    return tuple(c for c in every if c in set(classes))


def _defaults(preset: Optional[str]) -> dict:
    from .synth_presets import preset_defaults

    return DEFAULTS if preset is None else preset_defaults(preset)


def synth_params(seed: int = 0, **kw) -> dict:
    """The full parameter record of a synthetic dataset (defaults filled in, version included;
    `classes` only when a subset and `preset` only when set, so that the records of the default
    dataset stay as they were)."""
    classes, preset = kw.pop("classes", None), kw.pop("preset", None)
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        known = f"{sorted(DEFAULTS)}, classes or preset"
        raise TypeError(f"unknown synthetic dataset option(s) {sorted(unknown)}; known: {known}")
    given = {k: v for k, v in kw.items() if v is not None}
    params = {"version": SYNTH_VERSION, "seed": seed, **_defaults(preset), **given}
    if preset is not None:
        params["preset"] = preset
    if classes is not None and check_classes(classes, preset) != check_classes(None, preset):
        params["classes"] = list(check_classes(classes, preset))
    if not isinstance(params["image_size"], int):
        params["image_size"] = list(_size_wh(params["image_size"]))
    return params


def default_synth_dir(seed: int = 0, preset: Optional[str] = None) -> Path:
    """Where the default synthetic dataset lives: $RETINANET_DATA/synth-v<version>-seed<seed>
    (synth-v<version>-<preset>-seed<seed> for a preset), with RETINANET_DATA defaulting to
    ~/.cache/retinanet (a cache: regenerated when missing)."""
    root = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "retinanet")
    return Path(root) / f"synth-v{SYNTH_VERSION}-{preset + '-' if preset else ''}seed{seed}"


def ensure_synthetic(out_dir: Optional[str | Path] = None, seed: int = 0, workers: Optional[int] = None, **kw) -> Path:
    """The synthetic dataset at out_dir (default `default_synth_dir(seed)`), generated if missing.

    Generation writes into a temporary sibling folder, writes the marker file (the parameters)
    last and renames the folder into place, so a crash or a concurrent generator (several
    ranks) never leaves a half-written dataset under out_dir. An existing complete dataset made
    with other parameters is an error rather than silently reused or overwritten.
    kw: num_train, num_val, image_size, classes, preset. workers: see `generate_split` (does not
    change the files).
    """
    out_dir = Path(out_dir) if out_dir is not None else default_synth_dir(seed, kw.get("preset"))
    params = synth_params(seed, **kw)
    if _finished(out_dir, params):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists, is not empty and has no {MARKER}: not overwriting it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        start = time.perf_counter()
        generate_synthetic(tmp, workers=workers, **{k: v for k, v in params.items() if k != "version"})
        record = {**params, "seconds": round(time.perf_counter() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(record, indent=1))
        try:
            if out_dir.exists():
                out_dir.rmdir()  # empty (checked above), and rename needs it gone
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first (same parameters, or _finished raises below).
            if not (out_dir / MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _finished(out_dir, params)
    return out_dir


def _finished(out_dir: Path, params: dict) -> bool:
    """Whether out_dir holds a complete synthetic dataset made with `params`; an error if it
    holds one made with other parameters."""
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    found = json.loads(marker.read_text())
    found.pop("seconds", None)
    if found != params:
        raise ValueError(
            f"{out_dir} holds a synthetic dataset made with {found}, not {params}: use another folder or delete it"
        )
    return True

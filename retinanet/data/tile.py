"""Large images cut into overlapping tiles: the tile grid (shared with tiled prediction,
retinanet/engine/tiling.py) and `retinanet data tile`, a dataset's images written as a COCO
dataset of tiles with their boxes.

The grid. Along each side of L pixels, tiles of t = min(size, L) pixels start every
size - round(overlap · size) pixels, and the last one is moved back to end at the border, so
the tiles cover the image, all have the same size, and neighbours overlap by at least
round(overlap · size) pixels (the last pair by more). Windows are integer xyxy pixel edges,
row by row.

Boxes. A box becomes a training box of a tile when at least `min_visible` of it is inside the
tile: of its area, or, for a box larger than a tile, of the most of it that a tile can hold
(min(box w, tile w) · min(box h, tile h)), so that objects bigger than the tiles are not lost
everywhere. It is clipped to the tile. A box that is visible in the tile but below
`min_visible` is written as a crowd region (iscrowd 1): not a training target (the COCO reader
skips crowd boxes), and neither a true nor a false positive when the tiles are evaluated. The
default 0.5 keeps an object that is at least half in view, which is recognisable; a thinner
sliver is ambiguous, and declaring it background would teach the model to miss visible objects.
The dataset's own crowd / ignore boxes stay crowd regions, clipped.

Negatives. Tiles without training boxes are kept as negatives, at most `empty_ratio` times as
many as the tiles with boxes (over the whole dataset), drawn with a seeded generator: the same
arguments give the same tiles.

Output, the layout `build_dataset` reads: OUT/annotations/instances_<split>.json and
OUT/<split>/<stem>_x<X>_y<Y>.<ext> (X, Y: the tile's top-left pixel in the source image; .jpg for
JPEG sources, written at quality 95 without chroma subsampling, else .png). Each COCO image
record also has "source_file", "source_image_id" and "window" [x0, y0, x1, y1], from which
detections on the tiles map back to the source image.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from retinanet.data.common import (
    EXIF_ORIENTATION,
    BadInputPolicy,
    DatasetError,
    DetectionDataset,
    ImageRecord,
    MissingFileError,
    to_rgb8,
)
from retinanet.utils.io import atomic_write
from retinanet.utils.paths import unique_stems

# --------------------------------------------------------------------------------------------- the grid


def check_tile_args(size, overlap) -> None:
    """ValueError with a one-line message for a tile size or overlap that makes no grid."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"tile size {size!r}: expected a whole number of pixels >= 1")
    if not (isinstance(overlap, (int, float, np.floating)) and 0.0 <= float(overlap) < 1.0):
        raise ValueError(f"tile overlap {overlap!r}: expected a fraction of the tile size in [0, 1)")
    if size - overlap_pixels(size, overlap) < 1:
        raise ValueError(f"tile overlap {overlap} of {size} px tiles leaves no step between tiles: use less overlap")


def overlap_pixels(size: int, overlap: float) -> int:
    """The overlap of neighbouring tiles in pixels (the last pair of a row may overlap more)."""
    return int(round(float(overlap) * int(size)))


def axis_starts(length: int, size: int, overlap: float) -> list[int]:
    """Tile starts along a side of `length` pixels (see the module docstring)."""
    tile = min(int(size), int(length))
    step = int(size) - overlap_pixels(size, overlap)
    n = -(-(length - tile) // step) + 1  # ceil: enough steps to reach the far border
    return sorted({min(i * step, length - tile) for i in range(n)})


def tile_windows(height: int, width: int, size: int, overlap: float) -> np.ndarray:
    """(n, 4) int64 xyxy windows of the tiles of a `height` x `width` image, row by row."""
    check_tile_args(size, overlap)
    if height < 1 or width < 1:
        raise ValueError(f"image size {width}x{height}: expected at least 1x1 pixels")
    xs, ys = axis_starts(width, size, overlap), axis_starts(height, size, overlap)
    tw, th = min(size, width), min(size, height)
    x0 = np.tile(np.asarray(xs, np.int64), len(ys))
    y0 = np.repeat(np.asarray(ys, np.int64), len(xs))
    return np.stack([x0, y0, x0 + tw, y0 + th], axis=1)


def visible_fraction(boxes: np.ndarray, window) -> tuple[np.ndarray, np.ndarray]:
    """(boxes clipped to `window`, float64 (n, 4) image coordinates; the share of each box in
    view: its visible area over min(box w, tile w) · min(box h, tile h), 0 when not in view)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    lo, hi = np.array([x0, y0, x0, y0]), np.array([x1, y1, x1, y1])
    clipped = np.clip(boxes, lo, hi)
    vis = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    most = np.minimum(boxes[:, 2] - boxes[:, 0], x1 - x0) * np.minimum(boxes[:, 3] - boxes[:, 1], y1 - y0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(most > 0, vis / np.where(most > 0, most, 1.0), 0.0)
    return clipped, frac


# --------------------------------------------------------------------------------------------- images


def load_rgb8(path: str | os.PathLike, orient: bool = False) -> tuple[np.ndarray, int]:
    """((H, W, 3) uint8 RGB, the file's EXIF orientation) of an image file of any size: Pillow's
    decompression-bomb limit (89 M pixels) is lifted, since large images are what tiling is for.
    `orient`: turned as viewers show it (prediction); else as stored (dataset boxes)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # forces the full decode: truncated files fail here
                orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
                shown = ImageOps.exif_transpose(im) if orient and orientation != 1 else im
                # np.asarray of an RGB image is one copy; to_rgb8 (other modes) converts first
                array = np.asarray(shown) if shown.mode == "RGB" else to_rgb8(shown)
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode image file {path}: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return array, orientation


def _save_tile(pixels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    if path.suffix == ".jpg":
        image.save(path, quality=95, subsampling=0)  # 4:4:4: small objects keep their colour edges
    else:
        image.save(path)


# --------------------------------------------------------------------------------------------- the dataset


def _tile_annotations(rec: ImageRecord, window, min_visible: float):
    """(training boxes (n, 4) in tile pixels, their labels, crowd boxes (m, 4) in tile pixels,
    their labels, the indices in `rec.boxes` of the training boxes) of one tile of `rec`."""
    x0, y0 = float(window[0]), float(window[1])
    offset = np.array([x0, y0, x0, y0])
    clipped, frac = visible_fraction(rec.boxes, window)
    kept = np.flatnonzero(frac >= min_visible)
    sliver = (frac > 0) & (frac < min_visible)
    ignore, ignore_frac = visible_fraction(rec.ignore_boxes, window)
    in_view = ignore_frac > 0
    crowd = np.concatenate([clipped[sliver], ignore[in_view]]) - offset
    crowd_labels = np.concatenate([rec.labels[sliver], rec.ignore_labels[in_view]]).astype(np.int64)
    # rounded: float32 sources (10.3 is 10.300000190734863) are written as the values they meant
    return (
        np.round(clipped[kept] - offset, 3),
        rec.labels[kept].astype(np.int64),
        np.round(crowd, 3),
        crowd_labels,
        kept,
    )


def _split_name(dataset: DetectionDataset, split: Optional[str]) -> str:
    if split:
        return split
    ann = getattr(dataset, "ann_file", None)
    if ann is not None and Path(ann).stem.startswith("instances_"):
        return Path(ann).stem[len("instances_") :]
    return "train"


def tile_dataset(
    dataset: DetectionDataset,
    out: str | Path,
    size: int,
    overlap: float = 0.25,
    *,
    split: Optional[str] = None,
    min_visible: float = 0.5,
    empty_ratio: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write `dataset`'s images as a COCO dataset of tiles (the module docstring says how).

    split: the output split name (default: the COCO file's, else "train"). Refuses (FileExistsError)
    an OUT/<split>/ that already holds files. Returns a summary: {"split", "json", "images_dir",
    "source_images", "tiles", "tiles_with_boxes", "negatives", "negatives_available", "boxes",
    "crowd", "source_boxes", "source_boxes_lost" (boxes that are a training box of no tile)}.
    """
    check_tile_args(size, overlap)
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min visible {min_visible}: expected a share of the box in (0, 1]")
    if not (empty_ratio >= 0.0):  # also refuses NaN
        raise ValueError(f"empty ratio {empty_ratio}: expected >= 0 (negative tiles per tile with boxes)")
    out = Path(out)
    split = _split_name(dataset, split)
    images_dir = out / split
    if images_dir.is_dir() and any(images_dir.iterdir()):
        raise FileExistsError(f"{images_dir} already holds files: choose another --out or remove it")
    ann_file = out / "annotations" / f"instances_{split}.json"

    # Pass 1, annotations only (no decoding): every tile's boxes, then the negatives drawn.
    plans, negatives, lost, total_boxes = [], [], 0, 0
    for index, rec in enumerate(dataset.records):
        windows = tile_windows(rec.height, rec.width, size, overlap)
        seen = np.zeros(len(rec.boxes), dtype=bool)
        for window in windows:
            *annotations, kept = _tile_annotations(rec, window, min_visible)
            seen[kept] = True
            (plans if len(kept) else negatives).append((index, window, *annotations))
        lost += int((~seen).sum())
        total_boxes += len(rec.boxes)
    with_boxes = len(plans)
    if with_boxes == 0:
        raise ValueError(
            f"{dataset.source}: no tile of {size} px has a box at --min-visible {min_visible:g} "
            f"({total_boxes} boxes in {len(dataset.records)} images): nothing to train on"
        )
    cap = empty_ratio * with_boxes  # may be inf: all negatives
    wanted = len(negatives) if cap >= len(negatives) else int(np.floor(cap + 1e-9))
    chosen = np.random.default_rng(seed).choice(len(negatives), size=wanted, replace=False) if wanted else []
    plans += [negatives[i] for i in sorted(int(i) for i in chosen)]
    plans.sort(key=lambda p: (p[0], int(p[1][1]), int(p[1][0])))  # source image, then row by row

    # Pass 2: each source image decoded once, its chosen tiles written.
    stems = unique_stems([rec.path for rec in dataset.records])
    images_dir.mkdir(parents=True, exist_ok=True)
    records, extra = [], {}
    by_image: dict[int, list] = {}
    for plan in plans:
        by_image.setdefault(plan[0], []).append(plan)
    bar = tqdm(by_image.items(), total=len(by_image), desc="tile", unit="img", disable=not progress)
    for index, image_plans in bar:
        rec = dataset.records[index]
        pixels, _ = load_rgb8(rec.path)
        if pixels.shape[:2] != (rec.height, rec.width):
            raise DatasetError(
                f"image file {rec.path} is {pixels.shape[1]}x{pixels.shape[0]} but its annotation says "
                f"{rec.width}x{rec.height}"
            )
        suffix = ".jpg" if rec.path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        for _, window, boxes, labels, crowd, crowd_labels in image_plans:
            x0, y0, x1, y1 = (int(v) for v in window)
            name = f"{stems[index]}_x{x0}_y{y0}{suffix}"
            _save_tile(pixels[y0:y1, x0:x1], images_dir / name)
            image_id = len(records) + 1
            records.append(
                ImageRecord(
                    image_id,
                    images_dir / name,
                    name,
                    x1 - x0,
                    y1 - y0,
                    boxes,
                    labels,
                    crowd,
                    crowd_labels,
                )
            )
            extra[image_id] = {
                "source_file": rec.file_name,
                "source_image_id": int(rec.image_id),
                "window": [x0, y0, x1, y1],
            }
        del pixels
    # The writer of every COCO ground truth in the library, on records of the tiles.
    tiles = DetectionDataset(records, dataset.class_names, dataset.label_to_cat_id, BadInputPolicy("error", "tiles"))
    coco = tiles.coco_gt()
    for im in coco["images"]:
        im.update(extra[im["id"]])
    coco["info"] = {
        "description": "retinanet data tile",
        "source": str(dataset.source),
        "tile_size": int(size),
        "overlap": float(overlap),
        "min_visible": float(min_visible),
        "empty_ratio": float(empty_ratio),
        "seed": int(seed),
    }
    atomic_write(ann_file, json.dumps(coco))  # last: the JSON exists only for a complete folder
    return {
        "split": split,
        "json": str(ann_file),
        "images_dir": str(images_dir),
        "source_images": len(dataset.records),
        "tiles": len(records),
        "tiles_with_boxes": with_boxes,
        "negatives": len(records) - with_boxes,
        "negatives_available": len(negatives),
        "boxes": int(sum(len(r.boxes) for r in records)),
        "crowd": int(sum(len(r.ignore_boxes) for r in records)),
        "source_boxes": total_boxes,
        "source_boxes_lost": lost,
    }


__all__ = [
    "axis_starts",
    "check_tile_args",
    "load_rgb8",
    "overlap_pixels",
    "tile_dataset",
    "tile_windows",
    "visible_fraction",
]

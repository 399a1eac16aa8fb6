"""`retinanet data check PATH`: load a dataset leniently and describe it.

The numbers come from the validated annotations, so a check decodes no image unless asked to
(`verify_images=True`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from retinanet.data.build import build_dataset
from retinanet.data.common import CLIPPED_BOX, LARGE_AREA, SMALL_AREA, DetectionDataset


def size_buckets(boxes: np.ndarray) -> dict[str, int]:
    """Counts of boxes (n, 4 xyxy) in COCO's area ranges: small < 32², medium, large > 96².

    Box area is used: these formats carry no segmentation masks (COCO's own `area` is the mask
    area, slightly smaller).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    small = int((area < SMALL_AREA).sum())
    large = int((area > LARGE_AREA).sum())
    return {"small": small, "medium": len(area) - small - large, "large": large}


def summarize_dataset(dataset: DetectionDataset) -> dict:
    """The summary of an already built dataset (see `check_dataset`)."""
    records = dataset.records
    names = dataset.class_names
    all_boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4), np.float32)
    all_labels = np.concatenate([r.labels for r in records]) if records else np.zeros((0,), np.int64)
    per_class = np.bincount(all_labels, minlength=len(names))
    images_per_class = np.zeros(len(names), dtype=np.int64)
    for r in records:
        images_per_class[np.unique(r.labels)] += 1
    sides = np.sqrt((all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1]))
    widths = np.array([r.width for r in records]) if records else np.zeros(0)
    heights = np.array([r.height for r in records]) if records else np.zeros(0)
    skipped = {k: v for k, v in dataset.skipped.items() if k != CLIPPED_BOX}
    return {
        "kind": dataset.kind,
        "source": dataset.source,
        "num_images": len(records),
        "num_images_without_boxes": sum(1 for r in records if len(r.boxes) == 0),
        "num_boxes": int(len(all_boxes)),
        "num_ignored_boxes": int(sum(len(r.ignore_boxes) for r in records)),
        "class_names": list(names),
        "boxes_per_class": {n: int(c) for n, c in zip(names, per_class)},
        "images_per_class": {n: int(c) for n, c in zip(names, images_per_class)},
        "box_sizes": size_buckets(all_boxes),
        "box_side": {
            "min": float(sides.min()) if len(sides) else 0.0,
            "median": float(np.median(sides)) if len(sides) else 0.0,
            "max": float(sides.max()) if len(sides) else 0.0,
        },
        "boxes_per_image_max": max((len(r.boxes) for r in records), default=0),
        "image_size": {
            "min_width": int(widths.min()) if len(widths) else 0,
            "max_width": int(widths.max()) if len(widths) else 0,
            "min_height": int(heights.min()) if len(heights) else 0,
            "max_height": int(heights.max()) if len(heights) else 0,
        },
        "aspect_groups": {"w>=h": int((widths >= heights).sum()), "w<h": int((widths < heights).sum())},
        "skipped": skipped,
        "clipped": int(dataset.skipped.get(CLIPPED_BOX, 0)),
        "skip_examples": dict(dataset.skip_examples),
    }


def check_dataset(
    path: str | Path,
    kind: Optional[str] = None,
    *,
    split: Optional[str] = None,
    images_dir: Optional[str | Path] = None,
    class_map: Optional[str | Path] = None,
    class_names: Optional[Sequence[str]] = None,
    year: Optional[str | int] = None,
    verify_images: bool = False,
    on_bad: str = "skip",
) -> dict:
    """Load the dataset at `path` (kind detected unless given) and summarize it.

    on_bad="skip" by default so that one run reports every kind of problem with its count and
    first example, instead of stopping at the first one. Returns a dict: kind, source,
    num_images, num_images_without_boxes, num_boxes, num_ignored_boxes (crowd / difficult),
    class_names, boxes_per_class, images_per_class, box_sizes (COCO small/medium/large counts),
    box_side (min/median/max of sqrt(area)), image_size, aspect_groups, skipped (kind -> count),
    clipped, skip_examples (kind -> first message).
    """
    dataset = build_dataset(
        kind,
        path,
        split=split,
        images_dir=images_dir,
        class_map=class_map,
        class_names=class_names,
        year=year,
        on_bad=on_bad,
        verify_images=verify_images,
    )
    summary = summarize_dataset(dataset)
    summary["path"] = str(path)
    return summary


def format_summary(summary: dict) -> str:
    """A human-readable report of a `check_dataset` summary."""
    n_img, n_box = summary["num_images"], summary["num_boxes"]

    def pct(n: int, total: int) -> str:
        return f"{100.0 * n / total:5.1f}%" if total else "    -"

    n_empty = summary["num_images_without_boxes"]
    lines = [
        f"dataset: {summary['source']} ({summary['kind']})",
        f"images: {n_img}  (without boxes: {n_empty}, {pct(n_empty, n_img).strip()})",
        f"boxes: {n_box}  (max per image: {summary['boxes_per_image_max']}"
        + (f", crowd/difficult not trained on: {summary['num_ignored_boxes']}" if summary["num_ignored_boxes"] else "")
        + ")",
    ]
    size = summary["image_size"]
    if n_img:
        lines.append(
            f"image size: width {size['min_width']}-{size['max_width']}, "
            f"height {size['min_height']}-{size['max_height']}"
            f"  (w>=h: {summary['aspect_groups']['w>=h']}, w<h: {summary['aspect_groups']['w<h']})"
        )
    b = summary["box_sizes"]
    side = summary["box_side"]
    lines.append(
        "box sizes (COCO areas): "
        + ", ".join(f"{k} {b[k]} ({pct(b[k], n_box).strip()})" for k in ("small", "medium", "large"))
        + f"; sqrt(area) min {side['min']:.1f} / median {side['median']:.1f} / max {side['max']:.1f}"
    )
    width = max([len(n) for n in summary["class_names"]] + [5])
    lines.append(f"{len(summary['class_names'])} classes:")
    lines.append(f"  {'class'.ljust(width)}  {'boxes':>6}  {'share':>6}  {'images':>6}")
    for name in summary["class_names"]:
        nb = summary["boxes_per_class"][name]
        lines.append(f"  {name.ljust(width)}  {nb:6d}  {pct(nb, n_box):>6}  {summary['images_per_class'][name]:6d}")
    if summary["skipped"] or summary["clipped"]:
        lines.append(f"clipped boxes (kept): {summary['clipped']}")
        for kind, count in sorted(summary["skipped"].items()):
            lines.append(f"skipped {kind}: {count}  e.g. {summary['skip_examples'].get(kind, '')}")
    else:
        lines.append("no problems found")
    return "\n".join(lines)

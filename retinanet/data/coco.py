"""COCO "instances" JSON datasets (COCO 2017 itself, and the built-in synthetic dataset).

Category ids map to contiguous labels in ascending id order (COCO's 80 ids 1..90 -> 0..79) and
back through `label_to_cat_id`. Boxes are COCO's [x, y, w, h] in pixels, converted to xyxy
(x, y, x + w, y + h): COCO already uses pixel-edge coordinates, so no ±1.

Crowd annotations (iscrowd = 1) are not training targets: a crowd box covers many instances, and
training on it as one object would teach the wrong extent. They stay in `coco_gt()`, which
returns the file's own annotations so that the evaluation treats them as crowd, as the official
evaluation does.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from retinanet.data.common import (
    MALFORMED_ENTRY,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    BadInputPolicy,
    DatasetError,
    DetectionDataset,
    ImageRecord,
    report_boxes,
    require_exists,
    validate_boxes,
)


def read_json(path: Path) -> object:
    """json.load with an error that names the file and the position of a syntax error."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 JSON file ({e})") from None


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def parse_categories(data: dict, ann_file: Path) -> tuple[list[str], list[int]]:
    """(class_names, label_to_cat_id), ascending category id. Errors here are always raised:
    the class list defines the model's outputs, so a bad one cannot be skipped around."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DatasetError(f"{ann_file}: 'categories' must be a non-empty list")
    by_id: dict[int, str] = {}
    for k, cat in enumerate(cats):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DatasetError(f"{ann_file} categories[{k}]: expected {{'id': int, 'name': str}}, got {cat!r}")
        if cat["id"] in by_id:
            raise DatasetError(f"{ann_file} categories[{k}]: duplicate category id {cat['id']}")
        by_id[int(cat["id"])] = cat["name"]
    ids = sorted(by_id)
    return [by_id[i] for i in ids], ids


class CocoDetection(DetectionDataset):
    """A COCO instances file and its image folder.

    images_dir: the folder that `file_name` entries are relative to. ann_file: the JSON.
    on_bad: "error" raises at the first bad entry, naming the file and the entry
    ("instances.json annotations[17] (id=…)"); "skip" drops it (a bad box, or a whole image when
    the image record or its file is bad), warns once per kind and counts in `self.skipped`.
    keep_empty: keep images without (non-crowd) boxes as negatives. verify_images: decode every
    image once at construction (drops / reports corrupt files before training starts).

    Sample: see `DetectionDataset`. coco_gt(): the file's own content, restricted to the images
    of this dataset (missing "area"/"iscrowd"/"id" filled in).
    """

    kind = "coco"

    def __init__(
        self,
        images_dir: str | Path,
        ann_file: str | Path,
        *,
        transforms: Optional[Callable] = None,
        on_bad: str = "error",
        keep_empty: bool = True,
        verify_images: bool = False,
    ):
        self.ann_file = require_exists(Path(ann_file), "COCO annotation file")
        self.images_dir = require_exists(Path(images_dir), "COCO images folder")
        if not self.images_dir.is_dir():
            raise DatasetError(f"COCO images folder is not a folder: {self.images_dir}")
        policy = BadInputPolicy(on_bad, str(self.ann_file))
        data = read_json(self.ann_file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{self.ann_file}: not a COCO instances file (no 'images' list at the top level)")
        anns = data.get("annotations", [])  # absent in image-info files such as test-dev
        if not isinstance(anns, list):
            raise DatasetError(f"{self.ann_file}: 'annotations' must be a list")
        class_names, label_to_cat_id = parse_categories(data, self.ann_file)
        cat_to_label = {c: i for i, c in enumerate(label_to_cat_id)}
        records = self._parse(data["images"], anns, cat_to_label, policy)
        super().__init__(records, class_names, label_to_cat_id, policy, transforms, keep_empty, verify_images)

    def _parse(
        self, images: list, anns: list, cat_to_label: dict[int, int], policy: BadInputPolicy
    ) -> list[ImageRecord]:
        src = self.ann_file
        records: list[ImageRecord] = []
        index_of: dict[int, int] = {}  # image id -> position in `records`
        known_ids: set[int] = set()  # every image id of the file, including skipped ones
        for k, img in enumerate(images):
            where = f"{src} images[{k}]"
            if not isinstance(img, dict) or not _is_int(img.get("id")):
                policy(MALFORMED_ENTRY, f"{where}: expected an image record with an integer 'id', got {img!r}")
                continue
            image_id = int(img["id"])
            where = f"{where} (id={image_id})"
            if image_id in known_ids:
                policy(MALFORMED_ENTRY, f"{where}: duplicate image id")
                continue
            known_ids.add(image_id)
            file_name, width, height = img.get("file_name"), img.get("width"), img.get("height")
            if not isinstance(file_name, str) or not file_name:
                policy(MALFORMED_ENTRY, f"{where}: missing or empty 'file_name'")
                continue
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                got = f"{width!r}/{height!r}"
                policy(
                    MALFORMED_ENTRY,
                    f"{where}: 'width'/'height' must be positive integers, got {got} for image '{file_name}'",
                )
                continue
            path = self.images_dir / file_name
            if not path.is_file():
                policy(MISSING_IMAGE, f"{where}: image file not found: {path}", missing_file=True)
                continue
            index_of[image_id] = len(records)
            records.append(ImageRecord(image_id, path, file_name, int(width), int(height)))

        # Gather every non-crowd box first, then validate them in one vectorized pass.
        rows, owners, labels, raw = [], [], [], []
        crowd: dict[int, list] = {}
        for k, ann in enumerate(anns):
            where = f"{src} annotations[{k}]"
            if not isinstance(ann, dict):
                policy(MALFORMED_ENTRY, f"{where}: expected an object, got {ann!r}")
                continue
            where = f"{where} (id={ann.get('id')})"
            image_id, cat_id, bbox = ann.get("image_id"), ann.get("category_id"), ann.get("bbox")
            if not _is_int(image_id) or image_id not in known_ids:
                policy(MALFORMED_ENTRY, f"{where}: image_id {image_id!r} is not an image of the file")
                continue
            pos = index_of.get(int(image_id))
            if pos is None:
                continue  # its image was skipped (and counted) above
            name = records[pos].file_name
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                policy(
                    MALFORMED_ENTRY, f"{where}: 'bbox' must be [x, y, w, h] numbers, got {bbox!r} for image '{name}'"
                )
                continue
            if not _is_int(cat_id) or cat_id not in cat_to_label:
                policy(UNKNOWN_CLASS, f"{where}: unknown category_id {cat_id!r} for image '{name}'")
                continue
            x, y, w, h = (float(v) for v in bbox)
            if ann.get("iscrowd", 0):
                if all(math.isfinite(v) for v in bbox) and w > 0 and h > 0:
                    crowd.setdefault(pos, []).append(([x, y, x + w, y + h], cat_to_label[cat_id]))
                continue
            rows.append(k)
            owners.append(pos)
            labels.append(cat_to_label[cat_id])
            raw.append([x, y, w, h])

        raw_arr = np.asarray(raw, dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([raw_arr[:, :2], raw_arr[:, :2] + raw_arr[:, 2:]], axis=1)
        owner_arr = np.asarray(owners, dtype=np.int64)
        sizes = np.asarray([[records[p].width, records[p].height] for p in owners], dtype=np.float64).reshape(-1, 2)
        clipped, status, was_clipped = validate_boxes(xyxy, sizes)

        def describe(i: int) -> tuple[str, str]:
            k = rows[i]
            return f"{src} annotations[{k}] (id={anns[k].get('id')})", records[owners[i]].file_name

        keep = report_boxes(policy, status, was_clipped, raw_arr, sizes, describe, xywh=True)
        label_arr = np.asarray(labels, dtype=np.int64)
        owner_arr, clipped, label_arr = owner_arr[keep], clipped[keep], label_arr[keep]
        order = np.argsort(owner_arr, kind="stable")  # group by image, file order within an image
        owner_arr, clipped, label_arr = owner_arr[order], clipped[order], label_arr[order]
        starts = np.searchsorted(owner_arr, np.arange(len(records) + 1))
        for pos, rec in enumerate(records):
            a, b = starts[pos], starts[pos + 1]
            rec.boxes, rec.labels = clipped[a:b].copy(), label_arr[a:b].copy()
            if pos in crowd:
                rec.ignore_boxes = np.asarray([c[0] for c in crowd[pos]], dtype=np.float32)
                rec.ignore_labels = np.asarray([c[1] for c in crowd[pos]], dtype=np.int64)
        return records

    def coco_gt(self) -> dict:
        """The annotation file's own content for this dataset's images (crowd boxes as crowd).

        Read again from disk rather than kept in memory: COCO train's parsed JSON is large, and
        Python objects held by the dataset are copied into every DataLoader worker over time.
        """
        data = read_json(self.ann_file)
        keep = set(self.image_ids)
        images = [img for img in data["images"] if isinstance(img, dict) and img.get("id") in keep]
        seen: set[int] = set()
        images = [img for img in images if not (img["id"] in seen or seen.add(img["id"]))]
        annotations = []
        for ann in data.get("annotations", []):
            if not isinstance(ann, dict) or ann.get("image_id") not in keep:
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                continue
            ann = dict(ann)
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(bbox[2]) * float(bbox[3]))
            annotations.append(ann)
        used = {a["id"] for a in annotations if _is_int(a.get("id"))}
        next_id = max(used, default=0) + 1
        for ann in annotations:
            if not _is_int(ann.get("id")):
                ann["id"], next_id = next_id, next_id + 1
        out = {k: v for k, v in data.items() if k in ("info", "licenses")}
        out.update(images=images, annotations=annotations, categories=data["categories"])
        return out

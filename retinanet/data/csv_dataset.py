"""CSV datasets in the keras-retinanet format.

Annotations file, one box per row, no header:
    path,x1,y1,x2,y2,class_name
    path,,,,,                      <- an image without objects (a negative)
Coordinates are absolute pixels, xyxy, in pixel-edge convention (used as given). Relative
paths are relative to the CSV file's folder. An image may appear on many rows; images keep the
order of their first row.

Class-map file, one class per row: `class_name,id`. Labels are contiguous in ascending id
order; `label_to_cat_id` holds the file's ids (the category ids of `coco_gt()` and results).
Without a class map, the class names found in the annotations are used, sorted, with ids
0..K-1.

Image sizes (for clipping and aspect ratios) come from each image's header (PIL opens lazily),
read once at construction; no pixels are decoded there unless verify_images=True.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from retinanet.data.common import (
    CORRUPT_IMAGE,
    MALFORMED_ENTRY,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    BadInputPolicy,
    DatasetError,
    DetectionDataset,
    ImageRecord,
    read_image_size,
    report_boxes,
    require_exists,
    validate_boxes,
)


def _numbered_rows(path: Path):
    """(1-based line number, row) of every non-blank row of a CSV file; errors name the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    yield reader.line_num, row
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text file ({e})") from None
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e})") from None


def read_class_map(path: Path) -> tuple[list[str], list[int]]:
    """(class_names, ids) from a `class_name,id` file, ascending id. Always raises on a bad row:
    the class list defines the model's outputs."""
    require_exists(path, "CSV class-map file")
    by_id: dict[int, str] = {}
    for line, row in _numbered_rows(path):
        if len(row) != 2:
            raise DatasetError(
                f"{path.name} line {line}: expected 'class_name,id' (2 columns), got {len(row)}: {row!r} ({path})"
            )
        name, text = row[0].strip(), row[1].strip()
        try:
            cid = int(text)
        except ValueError:
            raise DatasetError(f"{path.name} line {line}: class id {text!r} is not an integer ({path})") from None
        if not name:
            raise DatasetError(f"{path.name} line {line}: empty class name ({path})")
        if cid in by_id:
            raise DatasetError(f"{path.name} line {line}: duplicate class id {cid} ({path})")
        if name in by_id.values():
            raise DatasetError(f"{path.name} line {line}: duplicate class name '{name}' ({path})")
        by_id[cid] = name
    if not by_id:
        raise DatasetError(f"{path}: no classes in the class-map file")
    ids = sorted(by_id)
    return [by_id[i] for i in ids], ids


class CsvDetection(DetectionDataset):
    """A keras-retinanet style CSV dataset; see the module docstring for the format.

    ann_file: the annotations CSV. class_map: the `class_name,id` CSV, or None to take the
    sorted class names of the annotations, or `class_names` when given (label = index, as
    another split's list: rows of other classes are unknown-class entries). on_bad / keep_empty / verify_images: see
    `CocoDetection`. Errors read like "annotations.csv line 17: x2 (10.0) <= x1 (30.0) for
    image 'a.jpg'" (file name, line, then the full path where useful).
    """

    kind = "csv"

    def __init__(
        self,
        ann_file: str | Path,
        class_map: Optional[str | Path] = None,
        *,
        class_names: Optional[Sequence[str]] = None,
        images_dir: Optional[str | Path] = None,
        transforms: Optional[Callable] = None,
        on_bad: str = "error",
        keep_empty: bool = True,
        verify_images: bool = False,
    ):
        self.ann_file = require_exists(Path(ann_file), "CSV annotation file")
        self.class_map = Path(class_map) if class_map is not None else None
        src = self.ann_file.name
        # Relative image paths resolve against images_dir (data.train_images_dir / val_images_dir),
        # by default the CSV's own folder.
        base = require_exists(Path(images_dir), "CSV image folder") if images_dir is not None else self.ann_file.parent
        policy = BadInputPolicy(on_bad, str(self.ann_file))

        # Pass 1: parse the rows (syntax only).
        images: dict[str, list] = {}  # path as written -> [(line, coords, class name), ...]
        for line, row in _numbered_rows(self.ann_file):
            where = f"{src} line {line}"
            if len(row) != 6:
                expected = "expected 6 columns 'path,x1,y1,x2,y2,class_name'"
                policy(MALFORMED_ENTRY, f"{where}: {expected}, got {len(row)}: {row!r}")
                continue
            path, *cells = (c.strip() for c in row)
            if not path:
                policy(MALFORMED_ENTRY, f"{where}: empty image path")
                continue
            entries = images.setdefault(path, [])
            if not any(cells):
                continue  # `path,,,,,`: an image without objects
            if not all(cells):
                policy(MALFORMED_ENTRY, f"{where}: some box fields are empty, {cells!r}, for image '{path}'")
                continue
            coords = []
            for tag, text in zip(("x1", "y1", "x2", "y2"), cells[:4]):
                try:
                    coords.append(float(text))
                except ValueError:
                    policy(MALFORMED_ENTRY, f"{where}: {tag} {text!r} is not a number for image '{path}'")
                    break
            if len(coords) == 4:
                entries.append((line, coords, cells[4]))

        if self.class_map is not None:
            if class_names is not None:
                raise TypeError("CsvDetection takes class_map or class_names, not both")
            class_names, label_to_cat_id = read_class_map(self.class_map)
        elif class_names is not None:  # another split's list (the run's): rows of other classes are bad
            class_names = [str(c) for c in class_names]
            label_to_cat_id = list(range(len(class_names)))
        else:
            class_names = sorted({e[2] for entries in images.values() for e in entries})
            if not class_names:
                raise DatasetError(f"{self.ann_file}: no boxes, so no class list: pass class_map=")
            label_to_cat_id = list(range(len(class_names)))
        name_to_label = {n: i for i, n in enumerate(class_names)}

        # Pass 2: images (existence, header size) and boxes (class, geometry).
        records = []
        for k, (path, entries) in enumerate(images.items()):
            file = Path(path) if Path(path).is_absolute() else base / path
            if not file.is_file():
                first = entries[0][0] if entries else "?"
                message = f"{src} (first row for it: line {first}): image file not found: {file}"
                policy(MISSING_IMAGE, message, missing_file=True)
                continue
            try:
                width, height = read_image_size(file)
            except DatasetError as e:
                policy(CORRUPT_IMAGE, f"{src}: {e}")
                continue
            rec = ImageRecord(k + 1, file, path, width, height)
            raw, labels, lines = [], [], []
            for line, coords, name in entries:
                if name not in name_to_label:
                    policy(UNKNOWN_CLASS, f"{src} line {line}: unknown class name '{name}' for image '{path}'")
                    continue
                raw.append(coords)
                labels.append(name_to_label[name])
                lines.append(line)
            raw_arr = np.asarray(raw, dtype=np.float64).reshape(-1, 4)
            sizes = np.tile([width, height], (len(raw_arr), 1))
            boxes, status, was_clipped = validate_boxes(raw_arr, sizes)
            keep = report_boxes(policy, status, was_clipped, raw_arr, sizes, lambda i: (f"{src} line {lines[i]}", path))
            rec.boxes = boxes[keep]
            rec.labels = np.asarray(labels, dtype=np.int64).reshape(-1)[keep]
            records.append(rec)

        super().__init__(records, class_names, label_to_cat_id, policy, transforms, keep_empty, verify_images)

"""YOLO datasets in the ultralytics layout: data.yaml, images/<split>/, labels/<split>/<stem>.txt.

data.yaml (PyYAML):
    path: .                   # optional: the dataset root (relative: to data.yaml's folder)
    train: images/train       # per split: an image folder (searched recursively), a .txt file
    val: images/val           #   listing images (relative lines: to the list's folder), or a
                              #   list of either; relative to the root
    names: {0: cat, 1: dog}   # or a list [cat, dog]; or only `nc: 2` (names class_0, class_1)
    category_ids: [3, 7]      # optional, written by `retinanet data convert`: see below
    retinanet_extra: retinanet_extra.json   # optional, the same
Any key whose value is a path (or a list of paths) and that is not one of the keys above is a
split; an entry that does not exist but starts with "../" is also tried without it (Roboflow's
exports, as ultralytics does).

Labels: the label file of an image is found by ultralytics' rule: the last `/images/` component
of the image path (as listed, symbolic links not followed) becomes `/labels/` and the suffix
becomes .txt; a path without `/images/` has its label file beside it. One object per line,
`class cx cy w h`, class a 0-based index into `names`, the box centre and size normalised by the
image width and height. A polygon line `class x1 y1 x2 y2 x3 y3 ...` (ultralytics'
segmentation labels, 3 or more points) gives its bounding box, as ultralytics does. An image
without a label file, or with an empty one, has no objects (a negative).

Coordinates: normalised values times the image size are pixel edges (x1 = (cx - w/2) * W), this
package's convention, with no ±1. Image sizes come from each file's header (PIL opens lazily) and
are the stored sizes: EXIF orientation is not applied, as in every reader of this package (boxes
refer to the stored pixels). Ultralytics measures such images turned (exif_size), so images with
an EXIF orientation other than 1 are counted and warned about once. An edge outside the image by
less than EDGE_TOLERANCE of its side (the rounding of 6-digit labels) is snapped to the border;
anything more is clipped and counted as the other readers do.

Category and image ids: YOLO has neither. Labels are the names' indices and category ids are
0..K-1, unless data.yaml has `category_ids` (one int per name, the source's ids). Image ids are
1..N in the order of the split's image list, unless `retinanet_extra` names a JSON file
{"splits": {split: {"image_ids": {file_name: id}, "ignore_boxes": {file_name: [[label, x1, y1,
x2, y2], ...]}}}}: the image ids of the source dataset, and its crowd / difficult boxes (pixel
xyxy), which YOLO label files cannot flag (they become `ignore_boxes`, as for COCO and VOC).
`retinanet data convert` writes both, so COCO -> YOLO -> COCO keeps ids and crowd boxes.
A file_name is the image path relative to the split's folder, or the list file's line as written
(without a leading "./").
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml
from PIL import Image

from retinanet.data.common import (
    CORRUPT_IMAGE,
    DEGENERATE_BOX,
    EXIF_ORIENTATION,
    IMAGE_SUFFIXES,
    MALFORMED_ENTRY,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    BadInputPolicy,
    DatasetError,
    DetectionDataset,
    ImageRecord,
    MissingFileError,
    report_boxes,
    require_exists,
    validate_boxes,
)

LOGGER = logging.getLogger("retinanet.data")

YAML_NAMES = ("data.yaml", "data.yml")  # the file a dataset folder holds
# data.yaml keys that are not splits (ultralytics' own, Roboflow's, and the converter's).
META_KEYS = frozenset(
    {"path", "names", "nc", "download", "yaml_file", "channels", "kpt_shape", "flip_idx", "roboflow", "license"}
    | {"category_ids", "retinanet_extra"}
)
# 6-decimal labels put an edge up to ~1e-6 of the side outside [0, 1]: not a clipping worth counting.
EDGE_TOLERANCE = 1e-5


def find_data_yaml(path: str | Path) -> Path:
    """The data.yaml of a dataset: `path` itself when it is a .yaml/.yml file, else the data.yaml
    in the folder `path`."""
    p = require_exists(Path(path), "YOLO dataset path")
    if p.is_file():
        if p.suffix.lower() not in (".yaml", ".yml"):
            raise DatasetError(f"{p}: a YOLO dataset is given by its data.yaml (or its folder), not a {p.suffix} file")
        return p
    for name in YAML_NAMES:
        if (p / name).is_file():
            return p / name
    raise MissingFileError(f"YOLO dataset folder {p}: no data.yaml in it")


def read_data_yaml(yaml_file: Path) -> dict:
    """data.yaml as a dict; a YAML syntax error or another type of content names the file."""
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{yaml_file}: not a UTF-8 text file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise DatasetError(f"{yaml_file}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_file}: expected a mapping (names:, train:, val:, ...), got {type(data).__name__}")
    return data


def parse_names(data: dict, yaml_file: Path) -> list[str]:
    """The class names of data.yaml: `names` as a list or {index: name} with indices 0..K-1, or
    `nc` alone (names class_0 ...). Always raised on error: the list defines the model's outputs."""
    names, nc = data.get("names"), data.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise DatasetError(f"{yaml_file}: nc must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise DatasetError(f"{yaml_file}: no 'names' (and no 'nc'): the class list is needed")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, dict):
        if all(isinstance(k, str) and k.strip().isdigit() for k in names):  # {'0': cat}: quoted indices
            names = {int(k): v for k, v in names.items()}
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(
            range(len(keys))
        ):
            raise DatasetError(f"{yaml_file}: names as a mapping must have the indices 0..{len(keys) - 1}, got {keys}")
        names = [names[i] for i in range(len(keys))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{yaml_file}: names must be a non-empty list or {{index: name}} mapping, got {names!r}")
    if any(n is None or isinstance(n, (dict, list)) for n in names):
        raise DatasetError(f"{yaml_file}: names must be plain values, got {names!r}")
    names = [str(n) for n in names]
    if nc is not None and nc != len(names):
        raise DatasetError(f"{yaml_file}: nc is {nc} but names has {len(names)} entries")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{yaml_file}: duplicate class names {dup}")
    return names


def parse_category_ids(data: dict, yaml_file: Path, num_classes: int) -> list[int]:
    """`category_ids` (one unique int per name), or 0..K-1 without it."""
    ids = data.get("category_ids")
    if ids is None:
        return list(range(num_classes))
    ok = isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    if not ok or len(ids) != num_classes or len(set(ids)) != len(ids):
        raise DatasetError(
            f"{yaml_file}: category_ids must be {num_classes} distinct integers (one per name), got {ids!r}"
        )
    return list(ids)


def dataset_root(data: dict, yaml_file: Path) -> Path:
    """`path:` (relative: to data.yaml's folder), or data.yaml's folder."""
    given = data.get("path")
    if given in (None, ""):
        return yaml_file.parent
    if not isinstance(given, str):
        raise DatasetError(f"{yaml_file}: path must be a folder name, got {given!r}")
    root = Path(os.path.expanduser(given))
    root = root if root.is_absolute() else yaml_file.parent / root
    if not root.is_dir():
        raise MissingFileError(f"{yaml_file}: the dataset root (path: {given}) not found: {root}")
    return root


def split_names(data: dict) -> list[str]:
    """The splits of a data.yaml, in file order: keys naming a path or a list of paths."""
    return [
        k
        for k, v in data.items()
        if isinstance(k, str)
        and k not in META_KEYS
        and (isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)))
    ]


def yolo_splits(path: str | Path) -> list[str]:
    """The splits of the YOLO dataset at `path` (a folder or its data.yaml); [] when there is no
    data.yaml there (so that it can be asked of any folder)."""
    p = Path(path)
    if p.is_dir() and not any((p / n).is_file() for n in YAML_NAMES):
        return []
    if p.is_file() and p.suffix.lower() not in (".yaml", ".yml"):
        return []
    yaml_file = find_data_yaml(p)
    return split_names(read_data_yaml(yaml_file))


def label_path(image: Path) -> Path:
    """The label file of an image, by ultralytics' rule (img2label_paths): the last /images/ of
    the path becomes /labels/, the suffix .txt. The path as listed: links are not followed."""
    text = os.path.abspath(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(os.path.splitext(text)[0] + ".txt")


def _entry_path(root: Path, entry: str) -> Path:
    p = Path(os.path.expanduser(entry))
    p = p if p.is_absolute() else root / p
    if not p.exists() and entry.startswith("../"):
        p = root / entry[3:]  # Roboflow's `train: ../train/images`, as ultralytics reads it
    return p


def split_images(data: dict, root: Path, split: str, yaml_file: Path) -> list[tuple[Path, str, str]]:
    """(image path, file_name, where it is listed) of every image of a split, in order: a
    folder's image files sorted by relative path, a list file's lines as written."""
    value = data[split]
    entries = [value] if isinstance(value, str) else list(value)
    found: list[tuple[Path, str, str]] = []
    for entry in entries:
        p = _entry_path(root, entry)
        if p.is_dir():
            files = [q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()]
            rel = sorted((q.relative_to(p).as_posix(), q) for q in files)
            found += [(q, name, str(q)) for name, q in rel]
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                lines = p.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError as e:
                raise DatasetError(f"{p}: not a UTF-8 text file ({e})") from None
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if not line:
                    continue
                q = Path(os.path.expanduser(line))
                name = line[2:] if line.startswith("./") else line
                found.append((q if q.is_absolute() else p.parent / q, name, f"{p.name} line {n}"))
        elif p.is_file():
            raise DatasetError(f"{yaml_file}: {split}: {entry} is neither an image folder nor a .txt list of images")
        else:
            raise MissingFileError(f"{yaml_file}: {split}: {entry} not found ({p})")
    return found


def read_extra(data: dict, yaml_file: Path, root: Path, split: str) -> tuple[dict[str, int], dict[str, list]]:
    """(file_name -> image id, file_name -> [[label, x1, y1, x2, y2], ...]) of `retinanet_extra`
    for one split; empty without it. Written by the converter, so any problem is an error."""
    name = data.get("retinanet_extra")
    if name is None:
        return {}, {}
    if not isinstance(name, str):
        raise DatasetError(f"{yaml_file}: retinanet_extra must be a file name, got {name!r}")
    path = require_exists(_entry_path(root, name), f"{yaml_file}: retinanet_extra file")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: malformed JSON ({e})") from None
    splits = content.get("splits") if isinstance(content, dict) else None
    part = splits.get(split, {}) if isinstance(splits, dict) else None
    if not isinstance(part, dict):
        raise DatasetError(f"{path}: expected {{'splits': {{split: {{...}}}}}}")
    ids, ignore = part.get("image_ids", {}), part.get("ignore_boxes", {})
    if not isinstance(ids, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids.values()):
        raise DatasetError(f"{path}: splits.{split}.image_ids must map file names to integer ids")
    if len(set(ids.values())) != len(ids):
        raise DatasetError(f"{path}: splits.{split}.image_ids has duplicate ids")
    ok = isinstance(ignore, dict) and all(
        isinstance(v, list)
        and all(
            isinstance(b, list)
            and len(b) == 5
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
            for b in v
        )
        for v in ignore.values()
    )
    if not ok:
        raise DatasetError(f"{path}: splits.{split}.ignore_boxes must map file names to [[label, x1, y1, x2, y2], ...]")
    return ids, ignore


def _header(path: Path) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header only (PIL opens lazily)."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1]), int(im.getexif().get(EXIF_ORIENTATION, 1))
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image file {path}: {e}") from e


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


class YoloDetection(DetectionDataset):
    """A YOLO (ultralytics) dataset split; see the module docstring for the format.

    root: the dataset folder holding data.yaml, or the .yaml file itself. split: a split of
    data.yaml ("train", "val", "test"); None takes the only one. on_bad / keep_empty /
    verify_images: see `CocoDetection`. Errors read like "labels/train/a.txt line 3: class 7 is
    not an index of names (0..1) for image 'a.jpg'" (the label file relative to the root).
    """

    kind = "yolo"

    def __init__(
        self,
        root: str | Path,
        split: Optional[str] = None,
        *,
        transforms: Optional[Callable] = None,
        on_bad: str = "error",
        keep_empty: bool = True,
        verify_images: bool = False,
    ):
        self.yaml_file = find_data_yaml(root)
        data = read_data_yaml(self.yaml_file)
        self.root = dataset_root(data, self.yaml_file)
        splits = split_names(data)
        if split is None:
            if len(splits) != 1:
                raise DatasetError(f"{self.yaml_file} has the splits {splits}: pass split= (e.g. --split train)")
            split = splits[0]
        if split not in splits:
            raise MissingFileError(f"{self.yaml_file}: no split {split!r} (splits: {splits})")
        self.split = split
        class_names = parse_names(data, self.yaml_file)
        cat_ids = parse_category_ids(data, self.yaml_file, len(class_names))
        ids, ignore = read_extra(data, self.yaml_file, self.root, split)
        policy = BadInputPolicy(on_bad, f"{self.root} ({split})")

        images = split_images(data, self.root, split, self.yaml_file)
        next_id = max(ids.values(), default=len(images)) + 1
        records, oriented = [], []
        for pos, (path, file_name, listed) in enumerate(images):
            if file_name in ids:
                image_id = ids[file_name]
            elif ids:  # an image added after the conversion: an id after the converter's
                image_id, next_id = next_id, next_id + 1
            else:  # the position in the list, before skipping: stable under on_bad="skip"
                image_id = pos + 1
            if not path.is_file():
                policy(MISSING_IMAGE, f"{listed}: image file not found: {path}", missing_file=True)
                continue
            try:
                width, height, orientation = _header(path)
            except DatasetError as e:
                policy(CORRUPT_IMAGE, str(e))
                continue
            if orientation != 1:
                oriented.append(file_name)
            rec = ImageRecord(image_id, path, file_name, width, height)
            if not self._read_labels(rec, label_path(path), len(class_names), policy):
                continue
            if file_name in ignore:
                if not all(isinstance(b[0], int) and 0 <= b[0] < len(class_names) for b in ignore[file_name]):
                    raise DatasetError(f"{self.yaml_file}: retinanet_extra: a class outside names for '{file_name}'")
                boxes = np.asarray([b[1:] for b in ignore[file_name]], dtype=np.float32).reshape(-1, 4)
                rec.ignore_boxes = boxes
                rec.ignore_labels = np.asarray([int(b[0]) for b in ignore[file_name]], dtype=np.int64)
            records.append(rec)
        if oriented:
            LOGGER.warning(
                "%s: %d images carry an EXIF orientation (e.g. %s): their labels are read in stored pixels, as by "
                "every reader of this package; ultralytics reads them turned. Check with `retinanet data show`.",
                policy.source,
                len(oriented),
                oriented[0],
            )
        self.exif_oriented = len(oriented)
        super().__init__(records, class_names, cat_ids, policy, transforms, keep_empty, verify_images)

    def _shown(self, path: Path) -> str:
        """A label file's path relative to the root when under it (shorter messages), else in full."""
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)).as_posix()
        except ValueError:
            return str(path)

    def _read_labels(self, rec: ImageRecord, path: Path, num_classes: int, policy: BadInputPolicy) -> bool:
        """Fill rec.boxes / rec.labels from its label file; False when the image is to be skipped
        (an unreadable label file). No file: a negative."""
        if not path.is_file():
            return True
        src = self._shown(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (UnicodeDecodeError, OSError) as e:
            policy(MALFORMED_ENTRY, f"{src}: unreadable label file ({e}) for image '{rec.file_name}'")
            return False
        raw, labels, where = [], [], []
        for n, line in enumerate(lines, 1):
            box = self._parse_line(line, f"{src} line {n}", rec, num_classes, policy)
            if box is not None:
                raw.append(box[1])
                labels.append(box[0])
                where.append(f"{src} line {n}")
        w, h = rec.width, rec.height
        raw_arr = np.asarray(raw, dtype=np.float64).reshape(-1, 4)
        scale = np.array([w, h, w, h], dtype=np.float64)
        # Snap the rounding of normalised labels at the border (see EDGE_TOLERANCE).
        raw_arr = np.where((raw_arr < 0) & (raw_arr > -EDGE_TOLERANCE), 0.0, raw_arr)
        raw_arr = np.where((raw_arr > 1) & (raw_arr < 1 + EDGE_TOLERANCE), 1.0, raw_arr)
        pixels = raw_arr * scale
        sizes = np.tile([w, h], (len(pixels), 1))
        boxes, status, was_clipped = validate_boxes(pixels, sizes)
        keep = report_boxes(policy, status, was_clipped, pixels, sizes, lambda i: (where[i], rec.file_name))
        rec.boxes = boxes[keep]
        rec.labels = np.asarray(labels, dtype=np.int64).reshape(-1)[keep]
        return True

    @staticmethod
    def _parse_line(
        line: str, where: str, rec: ImageRecord, num_classes: int, policy: BadInputPolicy
    ) -> Optional[tuple[int, list[float]]]:
        """(label, normalised xyxy) of one label line, or None (blank, or reported to `policy`)."""
        fields = line.split()
        if not fields:
            return None
        name = rec.file_name
        polygon = len(fields) >= 7 and len(fields) % 2 == 1
        if len(fields) != 5 and not polygon:
            policy(
                MALFORMED_ENTRY,
                f"{where}: expected 5 fields 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...'), "
                f"got {len(fields)}: {line.strip()!r} for image '{name}'",
            )
            return None
        cls = _number(fields[0])
        if cls is None or not np.isfinite(cls) or cls != int(cls):
            policy(MALFORMED_ENTRY, f"{where}: class {fields[0]!r} is not an integer index for image '{name}'")
            return None
        values = []
        tags = ("cx", "cy", "w", "h") if not polygon else [f"{'xy'[k % 2]}{k // 2 + 1}" for k in range(len(fields) - 1)]
        for tag, text in zip(tags, fields[1:]):
            v = _number(text)
            if v is None:
                policy(MALFORMED_ENTRY, f"{where}: {tag} {text!r} is not a number for image '{name}'")
                return None
            values.append(v)
        label = int(cls)
        if not 0 <= label < num_classes:
            policy(
                UNKNOWN_CLASS,
                f"{where}: class {label} is not an index of names (0..{num_classes - 1}) for image '{name}'",
            )
            return None
        shown = " ".join(fields[1:])
        if not all(np.isfinite(values)):
            policy(DEGENERATE_BOX, f"{where}: non-finite box values [{shown}] for image '{name}'")
            return None
        if polygon:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
            if not (box[2] > box[0] and box[3] > box[1]):
                policy(DEGENERATE_BOX, f"{where}: polygon [{shown}] has zero width or height for image '{name}'")
                return None
            return label, box
        cx, cy, bw, bh = values
        if not (bw > 0 and bh > 0):
            policy(DEGENERATE_BOX, f"{where}: box [{shown}] has zero or negative width or height for image '{name}'")
            return None
        return label, [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]

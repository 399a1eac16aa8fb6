"""`retinanet data convert`: a dataset of any format this package reads, written in any other.

The source is read with this package's own readers (`build_dataset`: validated, clipped boxes),
and each target is written in the layout its reader reads, so every format is reachable from
every other, and a conversion can be checked by reading it back. Every split of the source is
converted unless --split says which (VOC: every ImageSets/Main list, so trainval too).
- coco: OUT/annotations/instances_<split>.json and OUT/<split>/<file_name> (the layout of the
  synthetic dataset).
- voc: a VOC<year>-style folder: OUT/Annotations/<id>.xml, OUT/JPEGImages/<file_name>,
  OUT/ImageSets/Main/<split>.txt and OUT/labelmap.txt (the class list in order, Datumaro / CVAT's
  file, which the VOC reader reads). Images keep their format (a PNG stays .png). A file name
  that two splits use for different images is stored as JPEGImages/<split>/<file_name> in both
  (VOC has one image folder for all splits); its id is then <split>/<stem>.
- csv: OUT/classes.csv (`class_name,id`) and OUT/<split>/<split>.csv with its images beside
  it (`file_name,x1,y1,x2,y2,class`, integers, `file_name,,,,,` for an image without boxes).
- yolo: OUT/data.yaml, OUT/images/<split>/<file_name>, OUT/labels/<split>/<stem>.txt and
  OUT/retinanet_extra.json (see retinanet/data/yolo.py).
OUT/CONVERTED.json, written last, records the conversion (this report).

Coordinates: boxes are float xyxy pixel edges. COCO keeps them as floats (the shortest decimal
of the float32 value); YOLO writes normalised centre and size with 6 decimals (1e-6 of the
side: 0.01 px on a 10,000 px image); VOC (1-based inclusive indices: xmin = x1 + 1, xmax = x2)
and CSV (keras-retinanet's integers) round each edge to the nearest pixel edge, at most 0.5 px,
keeping boxes at least 1 px wide (at most 1 px then).

What each format keeps:
- Category ids: COCO, CSV (the class map) and YOLO (data.yaml `category_ids`) keep them; VOC has
  none (read back as 1..K). Class names and order are kept by all (VOC: labelmap.txt).
- Image ids: COCO and YOLO (retinanet_extra.json) keep them; VOC and CSV read ids 1..N in the
  written order, which are the source's when those were 1..N in order.
- Crowd boxes (COCO iscrowd = 1) and VOC `difficult` objects are the same thing to this package:
  boxes that are not training targets and that evaluation ignores (`ignore_boxes`). COCO writes
  them with iscrowd = 1, VOC with <difficult>1</difficult>, YOLO in retinanet_extra.json (not in
  the label files: ultralytics would train on them, and its own COCO converter drops them); CSV
  has no such flag and drops them, counted.
- Only boxes are converted: COCO masks, keypoints, annotation ids and other fields are not.
Boxes skipped or clipped while reading the source (data.on_bad rules) are reported.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np
import yaml

from retinanet.data.build import build_dataset, coco_splits, detect_kind
from retinanet.data.coco import CocoDetection, read_json
from retinanet.data.common import CLIPPED_BOX, IMAGE_SUFFIXES, DatasetError, DetectionDataset
from retinanet.data.voc import LABELMAP, resolve_voc_root
from retinanet.data.yolo import META_KEYS, label_path, yolo_splits

FORMATS = ("coco", "voc", "csv", "yolo")
MARKER = "CONVERTED.json"
EXTRA_FILE = "retinanet_extra.json"


@dataclass
class Item:
    """One image as it is written: the source record's image, its target file name (a relative
    posix path) and all its boxes, crowd / difficult ones flagged."""

    image_id: int
    path: Path
    name: str
    width: int
    height: int
    boxes: np.ndarray  # float32 (n, 4) xyxy pixel edges
    labels: np.ndarray  # int64 (n,)
    crowd: np.ndarray  # bool (n,)


# ---------------------------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------------------------


def source_splits(src: Path, kind: str) -> tuple[list[str], bool]:
    """(split names, whether the source has splits of its own). A source without (a CSV or COCO
    JSON file, a plain VOC folder) is one split named after its file (instances_ dropped) or folder."""
    if kind == "coco" and src.is_dir():
        return coco_splits(src), True
    if kind == "yolo":
        return yolo_splits(src), True
    if kind == "voc":
        layout, root = resolve_voc_root(src)
        if layout == "devkit":
            lists = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
            return lists, True
        return [root.name], False
    stem = src.stem
    return [stem[len("instances_") :] if stem.startswith("instances_") and len(stem) > 10 else stem], False


def parse_split_args(given: Optional[Sequence[str]]) -> list[tuple[str, str]]:
    """--split values `S` or `S=NEW` as (source split, written split)."""
    out = []
    for g in given or ():
        old, _, new = g.partition("=")
        old, new = old.strip(), (new.strip() or old.strip())
        if not old or "/" in new or new in (".", ".."):
            raise DatasetError(f"--split {g!r}: expected a split name S or S=NEW")
        out.append((old, new))
    return out


def read_source(
    src: Path,
    kind: str,
    splits: Optional[Sequence[str]] = None,
    *,
    images_dir: Optional[str | Path] = None,
    class_map: Optional[str | Path] = None,
    on_bad: str = "error",
) -> list[tuple[str, str, DetectionDataset]]:
    """(source split, written split, dataset) of every split converted: all of the source's, or
    those of `splits` (S or S=NEW). A source without splits takes one name, which it is written as."""
    names, has_splits = source_splits(src, kind)
    chosen = parse_split_args(splits)
    if has_splits:
        if not names:
            raise DatasetError(f"{src}: no splits found")
        unknown = [old for old, _ in chosen if old not in names]
        if unknown:
            raise DatasetError(f"{src} has no split {unknown[0]!r} (splits: {names})")
        chosen = chosen or [(n, n) for n in names]
    else:
        if len(chosen) > 1:
            raise DatasetError(f"{src} is one split: give at most one --split (the name it is written as)")
        chosen = [(names[0], chosen[0][1] if chosen else names[0])]
    written = [new for _, new in chosen]
    if len(set(written)) != len(written):
        raise DatasetError(f"--split: two splits would be written as the same one ({written})")
    out = []
    for old, new in chosen:
        ds = build_dataset(
            kind,
            src,
            split=old if has_splits else None,
            images_dir=images_dir,
            class_map=class_map,
            on_bad=on_bad,
        )
        if out and (ds.class_names != out[0][2].class_names or ds.label_to_cat_id != out[0][2].label_to_cat_id):
            first = out[0][2]
            raise DatasetError(
                f"the splits {out[0][0]!r} and {old!r} have different classes "
                f"({list(zip(first.label_to_cat_id, first.class_names))} and "
                f"{list(zip(ds.label_to_cat_id, ds.class_names))}): convert them one at a time (--split)"
            )
        out.append((old, new, ds))
    return out


def target_name(file_name: str) -> tuple[str, bool]:
    """(relative posix file name to write, whether it was shortened): the name as given, unless
    it is absolute or climbs out of its folder (CSV paths may), then only its last part."""
    p = PurePosixPath(file_name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or ".." in parts or not parts:
        return PurePosixPath(file_name.replace("\\", "/")).name, True
    return "/".join(parts), False


def dataset_items(ds: DetectionDataset, split: str, counts: Counter) -> list[Item]:
    """The images of a dataset as written (target names unique within the split)."""
    items, seen = [], {}
    for index, rec in enumerate(ds.records):
        name, shortened = target_name(rec.file_name)
        counts["file names shortened to their last part (absolute or ../ paths)"] += int(shortened)
        if name in seen:
            raise DatasetError(f"split {split!r}: images '{seen[name]}' and '{rec.file_name}' would both be '{name}'")
        seen[name] = rec.file_name
        crowd = np.concatenate([ds.crowd_mask(index), np.ones(len(rec.ignore_boxes), dtype=bool)])
        boxes = np.concatenate([rec.boxes.reshape(-1, 4), rec.ignore_boxes.reshape(-1, 4)]).astype(np.float32)
        labels = np.concatenate([rec.labels, rec.ignore_labels]).astype(np.int64)
        items.append(Item(int(rec.image_id), Path(rec.path), name, rec.width, rec.height, boxes, labels, crowd))
    return items


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (2.1, not 2.0999999046325684)."""
    return float(str(np.float32(v)))


def integer_edges(box: Sequence[float], width: int, height: int) -> list[int]:
    """xyxy pixel edges rounded to the nearest integer (ties up), at least 1 px wide and high,
    inside the image."""
    out = [int(math.floor(float(v) + 0.5)) for v in box]
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        out[lo], out[hi] = min(max(out[lo], 0), size), min(max(out[hi], 0), size)
        if out[hi] <= out[lo]:
            out[lo], out[hi] = (out[lo], out[lo] + 1) if out[lo] < size else (size - 1, size)
    return out


class ImagePlacer:
    """Copies (default) or links the source images to their new place; never re-encodes.
    link: a hard link, or a symbolic link where the file system cannot hard-link (counted)."""

    def __init__(self, link: bool):
        self.link = link
        self.counts: Counter[str] = Counter()

    def __call__(self, src: Path, dst: Path) -> None:
        if dst.exists():  # the same image in two splits of a VOC folder: stored once
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.link:
            try:
                os.link(src, dst)
                self.counts["hard-linked"] += 1
                return
            except OSError:  # another file system, or one without hard links
                os.symlink(os.path.abspath(src), dst)
                self.counts["symbolic links (no hard link possible)"] += 1
                return
        shutil.copy2(src, dst)
        self.counts["copied"] += 1


def write_coco(out: Path, splits: list[tuple[str, list[Item]]], names, cat_ids, place: ImagePlacer) -> None:
    if "annotations" in [split for split, _ in splits]:
        raise DatasetError(
            "split 'annotations': the COCO layout's folder of its own; write it as another (--split S=NEW)"
        )
    categories = [{"id": int(c), "name": n, "supercategory": ""} for n, c in zip(names, cat_ids)]
    for split, items in splits:
        images, annotations = [], []
        for it in items:
            place(it.path, out / split / it.name)
            images.append({"id": it.image_id, "file_name": it.name, "width": it.width, "height": it.height})
            for box, label, crowd in zip(it.boxes.tolist(), it.labels.tolist(), it.crowd.tolist()):
                x, y = _f32(box[0]), _f32(box[1])
                w, h = _f32(box[2] - box[0]), _f32(box[3] - box[1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": it.image_id,
                        "category_id": int(cat_ids[label]),
                        "bbox": [x, y, w, h],
                        "area": _f32(w * h),
                        "iscrowd": int(crowd),
                    }
                )
        data = {"images": images, "annotations": annotations, "categories": categories}
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def _voc_ids(splits: list[tuple[str, list[Item]]]) -> dict[tuple[str, str], str]:
    """(split, name) -> the VOC id (JPEGImages path without suffix): the name's, or <split>/...
    for a name that other splits use for other images."""
    owners: dict[str, set[str]] = {}
    for _, items in splits:
        for it in items:
            owners.setdefault(it.name, set()).add(os.path.abspath(it.path))
    ids, by_id = {}, {}
    for split, items in splits:
        for it in items:
            name = it.name if len(owners[it.name]) == 1 else f"{split}/{it.name}"
            vid = str(PurePosixPath(name).with_suffix(""))
            if by_id.get(vid, name) != name:
                raise DatasetError(f"split {split!r}: '{by_id[vid]}' and '{name}' would have the same VOC id '{vid}'")
            by_id[vid] = name
            ids[(split, it.name)] = vid
    return ids


def write_voc(out: Path, splits: list[tuple[str, list[Item]]], names, place: ImagePlacer) -> None:
    ids = _voc_ids(splits)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    header = "# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
    (out / LABELMAP).write_text(header + "".join(f"{n}:::\n" for n in names), encoding="utf-8")
    for split, items in splits:
        listed = []
        for it in items:
            vid = ids[(split, it.name)]
            file_name = vid + PurePosixPath(it.name).suffix
            listed.append(vid)
            place(it.path, out / "JPEGImages" / file_name)
            xml = out / "Annotations" / f"{vid}.xml"
            if xml.exists():
                continue
            root = ET.Element("annotation")
            ET.SubElement(root, "folder").text = "JPEGImages"
            ET.SubElement(root, "filename").text = file_name
            size = ET.SubElement(root, "size")
            for tag, v in (("width", it.width), ("height", it.height), ("depth", 3)):
                ET.SubElement(size, tag).text = str(v)
            ET.SubElement(root, "segmented").text = "0"
            for box, label, crowd in zip(it.boxes.tolist(), it.labels.tolist(), it.crowd.tolist()):
                x1, y1, x2, y2 = integer_edges(box, it.width, it.height)
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = names[label]
                ET.SubElement(obj, "pose").text = "Unspecified"
                ET.SubElement(obj, "truncated").text = "0"
                ET.SubElement(obj, "difficult").text = str(int(crowd))
                bnd = ET.SubElement(obj, "bndbox")
                for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                    ET.SubElement(bnd, tag).text = str(v)
            ET.indent(root)
            xml.parent.mkdir(parents=True, exist_ok=True)
            ET.ElementTree(root).write(xml, encoding="utf-8", xml_declaration=False)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{v}\n" for v in listed))


def write_csv(out: Path, splits, names, cat_ids, place: ImagePlacer, counts: Counter) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "classes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([n, int(c)] for n, c in zip(names, cat_ids))
    for split, items in splits:
        rows = []
        for it in items:
            place(it.path, out / split / it.name)
            kept = 0
            for box, label, crowd in zip(it.boxes.tolist(), it.labels.tolist(), it.crowd.tolist()):
                if crowd:
                    counts["crowd / difficult boxes dropped (CSV has no flag for them)"] += 1
                    continue
                rows.append([it.name, *integer_edges(box, it.width, it.height), names[label]])
                kept += 1
            if not kept:
                rows.append([it.name, "", "", "", "", ""])
        with open(out / split / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)


def write_yolo(out: Path, splits, names, cat_ids, place: ImagePlacer, source: str) -> None:
    extra: dict = {"written_by": "retinanet data convert", "splits": {}}
    for split, items in splits:
        if split in META_KEYS:
            raise DatasetError(
                f"split {split!r}: a data.yaml key of its own; write it as another (--split {split}=NEW)"
            )
        ids, ignore, labelled = {}, {}, {}
        for it in items:
            if PurePosixPath(it.name).suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetError(f"'{it.name}': YOLO readers find only images ending in {', '.join(IMAGE_SUFFIXES)}")
            image = out / "images" / split / it.name
            # The reader's own rule, so that a name holding images/ itself still finds its labels.
            label_file = label_path(image)
            if label_file in labelled:
                raise DatasetError(
                    f"split {split!r}: '{labelled[label_file]}' and '{it.name}' would share a label file"
                )
            labelled[label_file] = it.name
            place(it.path, image)
            ids[it.name] = it.image_id
            lines = []
            for box, label, crowd in zip(it.boxes.tolist(), it.labels.tolist(), it.crowd.tolist()):
                if crowd:
                    ignore.setdefault(it.name, []).append([int(label)] + [_f32(v) for v in box])
                    continue
                cx, cy = (box[0] + box[2]) / 2 / it.width, (box[1] + box[3]) / 2 / it.height
                w, h = (box[2] - box[0]) / it.width, (box[3] - box[1]) / it.height
                lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
            label_file.parent.mkdir(parents=True, exist_ok=True)
            label_file.write_text("".join(lines))  # empty: an image without objects
        extra["splits"][split] = {"image_ids": ids, "ignore_boxes": ignore}
    (out / EXTRA_FILE).write_text(json.dumps(extra, indent=1))
    data = {split: f"images/{split}" for split, _ in splits}
    data.update(nc=len(names), names=dict(enumerate(names)), category_ids=[int(c) for c in cat_ids])
    data["retinanet_extra"] = EXTRA_FILE
    header = (
        f"# Written by `retinanet data convert` from {source}. category_ids (the source's category id of\n"
        "# each class) and retinanet_extra (its image ids and crowd / difficult boxes, which YOLO label\n"
        "# files cannot hold) are read by the retinanet package; ultralytics ignores them.\n"
    )
    (out / "data.yaml").write_text(
        header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None), encoding="utf-8"
    )


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


def check_out_dir(out: Path, src: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds the source, or that is not empty (with `overwrite`:
    unless it holds a previous conversion, CONVERTED.json, which is then replaced)."""
    src_root = src if src.is_dir() else src.parent
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    here, there = Path(os.path.abspath(out)), Path(os.path.abspath(src_root))
    if here == there or here in there.parents:
        raise DatasetError(f"--out {out} holds the source dataset {src}: choose another folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"--out {out} is not empty: choose a new folder, or --overwrite a previous conversion"
            )
        if not (out / MARKER).is_file():
            raise FileExistsError(
                f"--out {out} is not empty and holds no previous conversion ({MARKER}): not emptied even with "
                "--overwrite; choose a new folder"
            )


def convert_dataset(
    src: str | Path,
    to: str,
    out: str | Path,
    *,
    kind: Optional[str] = None,
    splits: Optional[Sequence[str]] = None,
    images_dir: Optional[str | Path] = None,
    class_map: Optional[str | Path] = None,
    link_images: bool = False,
    overwrite: bool = False,
    on_bad: str = "error",
) -> dict:
    """Convert the dataset at `src` (kind detected unless given) to format `to` in folder `out`;
    see the module docstring. splits: source splits to convert, "S" or "S=NEW" (default all; for
    a source without splits, the name it is written as). images_dir / class_map: as
    `build_dataset` (COCO / CSV). on_bad: "error" stops at the first bad entry of the source,
    "skip" drops it and counts it. Returns the report (also written as OUT/CONVERTED.json)."""
    if to not in FORMATS:
        raise ValueError(f"--to {to!r}: expected one of {FORMATS}")
    src, out = Path(src), Path(out)
    kind = detect_kind(src) if kind in (None, "auto") else kind
    check_out_dir(out, src, overwrite)
    sources = read_source(src, kind, splits, images_dir=images_dir, class_map=class_map, on_bad=on_bad)
    first = sources[0][2]
    names, cat_ids = list(first.class_names), list(first.label_to_cat_id)
    counts: Counter[str] = Counter()
    written = [(new, dataset_items(ds, new, counts)) for _, new, ds in sources]
    for _, _, ds in sources:
        counts.update(coco_extras(ds))

    if (out / MARKER).is_file():  # a previous conversion, to be replaced (check_out_dir)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)  # new, or empty
    place = ImagePlacer(link_images)
    try:
        if to == "coco":
            write_coco(out, written, names, cat_ids, place)
        elif to == "voc":
            write_voc(out, written, names, place)
        elif to == "csv":
            write_csv(out, written, names, cat_ids, place, counts)
        else:
            write_yolo(out, written, names, cat_ids, place, f"{src} ({kind})")
    except BaseException:
        # Everything in `out` is this run's (it was new, empty, or a previous conversion): no half
        # conversion is left behind, which --overwrite would refuse (it has no CONVERTED.json).
        shutil.rmtree(out, ignore_errors=True)
        raise

    notes = _notes(to, written, cat_ids, names)
    report = {
        "source": str(src),
        "kind": kind,
        "to": to,
        "out": str(out),
        "splits": {
            new: {
                "from": old,
                "images": len(items),
                "boxes": int(sum(int((~it.crowd).sum()) for it in items)),
                "crowd_or_difficult": int(sum(int(it.crowd.sum()) for it in items)),
                "skipped_at_reading": {k: v for k, v in ds.skipped.items() if k != CLIPPED_BOX},
                "clipped_at_reading": int(ds.skipped.get(CLIPPED_BOX, 0)),
            }
            for (old, new, ds), (_, items) in zip(sources, written)
        },
        "classes": [{"name": n, "id": int(c)} for n, c in zip(names, cat_ids)],
        "images": dict(place.counts),
        "dropped": {k: v for k, v in counts.items() if v},
        "notes": notes,
    }
    (out / MARKER).write_text(json.dumps(report, indent=1))
    return report


def coco_extras(ds: DetectionDataset) -> Counter[str]:
    """What a COCO source has beyond boxes (counted annotations): not converted."""
    found: Counter[str] = Counter()
    if not isinstance(ds, CocoDetection):
        return found
    keep = set(ds.image_ids)
    for ann in read_json(ds.ann_file).get("annotations", []):
        if isinstance(ann, dict) and ann.get("image_id") in keep:
            found["COCO masks not converted (boxes only)"] += bool(ann.get("segmentation"))
            found["COCO keypoints not converted (boxes only)"] += bool(ann.get("num_keypoints") or ann.get("keypoints"))
    return found


def _notes(to: str, written, cat_ids: list[int], names: list[str]) -> list[str]:
    """What the target cannot hold and the reader will give instead, for this conversion."""
    notes = []
    if to == "voc" and cat_ids != list(range(1, len(names) + 1)):
        notes.append(f"category ids {cat_ids} not kept: VOC has none (read back as 1..{len(names)})")
    if to == "csv" and cat_ids != sorted(cat_ids):
        notes.append("class order not kept: the CSV reader orders classes by id")
    if to in ("voc", "csv"):
        changed = [s for s, items in written if [it.image_id for it in items] != list(range(1, len(items) + 1))]
        if changed:
            notes.append(f"image ids of {changed} not kept: {to.upper()} has none (read back as 1..N in order)")
    if to == "yolo":
        notes.append(f"category ids in data.yaml, image ids and crowd / difficult boxes in {EXTRA_FILE}")
    return notes


def format_report(report: dict) -> str:
    """The report of `convert_dataset` in a few lines."""
    lines = [f"converted {report['source']} ({report['kind']}) -> {report['out']} ({report['to']})"]
    for name, s in report["splits"].items():
        src = f" (from {s['from']})" if s["from"] != name else ""
        crowd = f" + {s['crowd_or_difficult']} crowd/difficult" if s["crowd_or_difficult"] else ""
        lines.append(f"  {name}{src}: {s['images']} images, {s['boxes']} boxes{crowd}")
        if s["clipped_at_reading"]:
            lines.append(f"    clipped to their image when read: {s['clipped_at_reading']} boxes")
        for k, v in sorted(s["skipped_at_reading"].items()):
            lines.append(f"    skipped when read ({k}): {v}")
    lines.append(
        f"  {len(report['classes'])} classes; images: " + ", ".join(f"{v} {k}" for k, v in report["images"].items())
    )
    for k, v in report["dropped"].items():
        lines.append(f"  dropped: {v} {k}")
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)

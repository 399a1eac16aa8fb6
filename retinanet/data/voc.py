"""Pascal VOC XML datasets: the VOCdevkit layout and plain folders of .xml files.

Layouts:
- VOCdevkit: `<root>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}`,
  root given as the VOC2007 folder itself, or as VOCdevkit plus `year`.
- A plain folder: `<folder>/<name>.xml` beside its image (the XML's <filename>, else the same
  stem with an image extension), as written by labelling tools such as LabelImg.

Coordinates: VOC's <bndbox> holds 1-based, inclusive pixel indices (xmin = 1 is the first pixel
column, xmax is the last covered column). In this package's pixel-edge convention that box is
(xmin - 1, ymin - 1, xmax, ymax): same as Detectron/detectron2's VOC readers.

Class list: a `labelmap.txt` in the root (the VOC<year> folder or the plain folder), as Datumaro
and CVAT write it beside a VOC export (`name:color:parts:actions` lines; its "background" entry
is not a class), gives the classes in its order; without one, a VOCdevkit has VOC's 20 classes
and a plain folder the sorted names found in its files. `retinanet data convert --to voc` writes one.

`difficult` objects: by default not training targets (`use_difficult=False`, as mmdetection
and the VOC protocol, which ignores them), and always written to `coco_gt()` with iscrowd = 1 so
that COCO-style evaluation ignores detections on them instead of counting them as false positives.
(pycocotools overwrites an "ignore" field with iscrowd, so iscrowd is the flag that works.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as defused_et

from retinanet.data.common import (
    CORRUPT_IMAGE,
    IMAGE_SUFFIXES,
    MALFORMED_ENTRY,
    MISSING_ANNOTATION,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    BadInputPolicy,
    DatasetError,
    DetectionDataset,
    ImageRecord,
    MissingFileError,
    read_image_size,
    report_boxes,
    require_exists,
    validate_boxes,
)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


LABELMAP = "labelmap.txt"


def read_labelmap(path: Path) -> list[str]:
    """The class names of a Datumaro / CVAT labelmap.txt, in order, without "background".
    Always raises on a bad line: the class list defines the model's outputs."""
    names: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text file ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split(":", 1)[0].strip()
        if not name:
            raise DatasetError(f"{path} line {n}: empty class name")
        if name in names:
            raise DatasetError(f"{path} line {n}: duplicate class name '{name}'")
        if name != "background":  # Datumaro's entry 0: the background of segmentation masks
            names.append(name)
    if not names:
        raise DatasetError(f"{path}: no classes in the label map")
    return names


class VocObject:
    """One <object>: class name, raw 1-based bndbox (xmin, ymin, xmax, ymax), difficult flag;
    `error` is set instead when the element cannot be parsed."""

    __slots__ = ("index", "name", "bndbox", "difficult", "error")

    def __init__(
        self, index: int, name: str = "", bndbox: Sequence[float] = (), difficult: bool = False, error: str = ""
    ):
        self.index, self.name, self.bndbox, self.difficult, self.error = index, name, tuple(bndbox), difficult, error


def parse_voc_xml(path: Path) -> tuple[str, int, int, list[VocObject]]:
    """(filename, width, height, objects) of one VOC XML file; width/height 0 when absent.

    Raises DatasetError (naming the file) when the file is not well-formed XML.
    """
    try:
        # defusedxml: the standard parser's safety against entity expansion depends on the expat
        # it was built with; annotation files have no business declaring entities or a DTD.
        root = defused_et.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path}: malformed XML ({e})") from None
    except DefusedXmlException as e:
        raise DatasetError(
            f"{path}: refused, the XML declares {type(e).__name__.removesuffix('Forbidden').lower()} "
            f"({e}); VOC annotations need none"
        ) from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: not a VOC annotation (root element <{root.tag}>, expected <annotation>)")
    filename = (root.findtext("filename") or "").strip()

    def integer(text: Optional[str]) -> int:
        try:
            return int(float(text)) if text is not None and text.strip() else 0
        except ValueError:
            return 0

    size = root.find("size")
    width = integer(size.findtext("width")) if size is not None else 0
    height = integer(size.findtext("height")) if size is not None else 0
    objects = []
    for j, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            objects.append(VocObject(j, error="no <name>"))
            continue
        box = obj.find("bndbox")
        if box is None:
            objects.append(VocObject(j, name, error="no <bndbox>"))
            continue
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = box.findtext(tag)
            try:
                coords.append(float(text))
            except (TypeError, ValueError):
                coords = None
                objects.append(VocObject(j, name, error=f"<{tag}> is {text!r}, not a number"))
                break
        if coords is None:
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false", "False")
        objects.append(VocObject(j, name, coords, difficult))
    return filename, width, height, objects


def resolve_voc_root(path: Path, year: Optional[str | int] = None) -> tuple[str, Path]:
    """("devkit", VOC<year> folder) or ("folder", folder of .xml files) for a dataset path."""
    require_exists(path, "VOC dataset path")
    if (path / "Annotations").is_dir():
        return "devkit", path
    if year is not None:
        root = path / f"VOC{year}"
        if not (root / "Annotations").is_dir():
            raise MissingFileError(f"VOC dataset path: {root}/Annotations not found")
        return "devkit", root
    years = sorted(p for p in path.glob("VOC*") if (p / "Annotations").is_dir())
    if len(years) == 1:
        return "devkit", years[0]
    if len(years) > 1:
        raise DatasetError(f"{path} holds several VOC years ({', '.join(p.name for p in years)}): pass year=")
    if path.is_dir() and any(path.glob("*.xml")):
        return "folder", path
    raise DatasetError(f"no VOC dataset at {path}: expected an Annotations/ folder, VOC<year>/ folders, or .xml files")


def find_image(folder: Path, filename: str, stem: str) -> Optional[Path]:
    """The image beside an XML: its <filename> if present there, else the stem + an image suffix."""
    if filename and (folder / filename).is_file():
        return folder / filename
    for ext in IMAGE_SUFFIXES:
        for candidate in (folder / (stem + ext), folder / (stem + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


class VocDetection(DetectionDataset):
    """Pascal VOC XML annotations (VOCdevkit layout or a plain folder); see the module docstring.

    root: the VOC<year> folder, VOCdevkit (with `year`), or a folder of .xml files.
    split: the ImageSets/Main list for the devkit layout ("train", "val", "trainval", "test");
    ignored for a plain folder. class_names: the class list (label = index); default the root's
    labelmap.txt when it has one, else the 20 VOC classes for the devkit layout and the sorted
    names found in the files for a plain folder.
    Category ids of `coco_gt()` / results are label + 1 (COCO's habit of starting at 1).
    """

    kind = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        *,
        year: Optional[str | int] = None,
        class_names: Optional[Sequence[str]] = None,
        use_difficult: bool = False,
        transforms: Optional[Callable] = None,
        on_bad: str = "error",
        keep_empty: bool = True,
        verify_images: bool = False,
    ):
        self.layout, self.root = resolve_voc_root(Path(root), year)
        self.split = split if self.layout == "devkit" else None
        self.use_difficult = use_difficult
        source = f"{self.root} ({split})" if self.layout == "devkit" else str(self.root)
        policy = BadInputPolicy(on_bad, source)

        # (xml path, image folder, stem) of every entry, in a stable order.
        if self.layout == "devkit":
            split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                known = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
                raise MissingFileError(f"VOC split list not found: {split_file} (available: {known})")
            ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
            entries = [(self.root / "Annotations" / f"{i}.xml", self.root / "JPEGImages", i) for i in ids]
        else:
            entries = [(p, self.root, p.stem) for p in sorted(self.root.glob("*.xml"))]

        parsed = []  # (image id, xml, image folder, stem, filename, width, height, objects)
        for pos, (xml, folder, stem) in enumerate(entries):
            if not xml.is_file():
                policy(MISSING_ANNOTATION, f"{xml}: annotation file not found (listed in the split)", missing_file=True)
                continue
            try:
                filename, width, height, objects = parse_voc_xml(xml)
            except DatasetError as e:
                policy(MALFORMED_ENTRY, str(e))
                continue
            # Ids from the position in the list, before skipping: stable under on_bad="skip".
            parsed.append((pos + 1, xml, folder, stem, filename, width, height, objects))

        if class_names is None and (self.root / LABELMAP).is_file():
            class_names = read_labelmap(self.root / LABELMAP)
        if class_names is None:
            if self.layout == "devkit":
                class_names = list(VOC_CLASSES)
            else:
                class_names = sorted({o.name for p in parsed for o in p[-1] if not o.error})
                if not class_names:
                    raise DatasetError(f"{self.root}: no objects in any .xml file, so no class list: pass class_names=")
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names):
            raise DatasetError(f"duplicate names in class_names {class_names}")
        name_to_label = {n: i for i, n in enumerate(class_names)}

        records = []
        masks: dict[int, np.ndarray] = {}  # id(record) -> difficult flags of its boxes
        for image_id, xml, folder, stem, filename, width, height, objects in parsed:
            image_path = find_image(folder, filename, stem)
            shown = filename or stem
            if image_path is None:
                expected = folder / (filename or stem + ".jpg")
                policy(MISSING_IMAGE, f"{xml}: image file not found: {expected}", missing_file=True)
                continue
            if width <= 0 or height <= 0:  # no <size> (some tools): read the image header
                try:
                    width, height = read_image_size(image_path)
                except DatasetError as e:
                    policy(CORRUPT_IMAGE, f"{xml}: {e}")
                    continue
            rec = ImageRecord(image_id, image_path, image_path.name, width, height)
            raw, labels, difficult, where = [], [], [], []
            for obj in objects:
                at = f"{xml} object {obj.index}"
                if obj.error:
                    policy(MALFORMED_ENTRY, f"{at}: {obj.error} for image '{shown}'")
                    continue
                if obj.name not in name_to_label:
                    policy(UNKNOWN_CLASS, f"{at}: unknown class name '{obj.name}' for image '{shown}'")
                    continue
                raw.append(obj.bndbox)
                labels.append(name_to_label[obj.name])
                difficult.append(obj.difficult)
                where.append(f"{at} ('{obj.name}')")
            raw_arr = np.asarray(raw, dtype=np.float64).reshape(-1, 4)
            edges = raw_arr - np.array([1.0, 1.0, 0.0, 0.0])  # 1-based inclusive -> pixel edges
            sizes = np.tile([width, height], (len(raw_arr), 1))
            boxes, status, was_clipped = validate_boxes(edges, sizes)
            keep = report_boxes(policy, status, was_clipped, raw_arr, sizes, lambda i: (where[i], shown))
            label_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
            hard = np.asarray(difficult, dtype=bool).reshape(-1)
            if use_difficult:
                rec.boxes, rec.labels = boxes[keep], label_arr[keep]
                masks[id(rec)] = hard[keep]
            else:
                rec.boxes, rec.labels = boxes[keep & ~hard], label_arr[keep & ~hard]
                rec.ignore_boxes, rec.ignore_labels = boxes[keep & hard], label_arr[keep & hard]
            records.append(rec)

        cat_ids = [i + 1 for i in range(len(class_names))]
        super().__init__(records, class_names, cat_ids, policy, transforms, keep_empty, verify_images)
        self._difficult_masks = [masks[id(r)] for r in self.records] if use_difficult else None

    def crowd_mask(self, index: int) -> np.ndarray:
        """With use_difficult, the difficult boxes are training targets and still crowd in
        `coco_gt()`; this marks them among the record's boxes."""
        return self._difficult_masks[index] if self._difficult_masks is not None else super().crowd_mask(index)

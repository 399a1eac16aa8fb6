"""What every dataset format shares: the per-image record, box validation, the bad-input policy,
image decoding, the COCO ground-truth writer and the collate function.

Conventions used throughout `retinanet.data`:
- Boxes are float32 (n, 4) xyxy in absolute pixels with pixel *edges* as coordinates: a box that
  covers pixel columns 0..9 is x1 = 0, x2 = 10 (the COCO convention; VOC's 1-based inclusive
  indices are converted by its reader).
- Labels are int64 contiguous 0..K-1; `label_to_cat_id[label]` is the dataset's own category id.
- Images are uint8 (3, H, W) RGB tensors (`load_image(path)`: float32 in [0, 1]).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from torchcodec.decoders import decode_image

LOGGER = logging.getLogger("retinanet.data")

ON_BAD = ("error", "skip")

# Kinds of bad input: the keys of `dataset.skipped`. Each counts skipped entries (boxes for the
# box-level kinds, images for the image-level ones), except CLIPPED_BOX, which is not an error: a
# box partly outside its image is clipped to it and kept, and only counted.
DEGENERATE_BOX = "degenerate_box"  # zero/negative width or height, NaN/inf, or outside the image
CLIPPED_BOX = "clipped_box"
UNKNOWN_CLASS = "unknown_class"  # a box whose class name / category id is not in the class list
MALFORMED_ENTRY = "malformed_entry"  # a row/element/record that cannot be parsed (box or image)
MISSING_ANNOTATION = "missing_annotation"  # VOC: an id of the split list without its XML file
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"  # cannot be decoded, or its size differs from the annotation's

# COCO's area ranges (AP_S / AP_M / AP_L): small < 32², medium 32²..96², large > 96².
# Image files the library reads (Pillow decodes them all): VOC's JPEGImages lookup and the
# folders `retinanet predict` searches.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SMALL_AREA = 32.0**2
LARGE_AREA = 96.0**2


class DatasetError(ValueError):
    """Bad dataset input. The message names the file and the entry (line, element, index)."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A file the dataset refers to does not exist (an image, an annotation file, a root)."""


class BadInputPolicy:
    """What to do with a bad entry: raise (`on_bad="error"`) or skip it and count it ("skip").

    With "skip", each kind is warned about once (its first message, on the "retinanet.data"
    logger) and counted; `log_summary` writes one line with all counts at the end of loading.
    """

    def __init__(self, on_bad: str, source: str):
        if on_bad not in ON_BAD:
            raise ValueError(f"on_bad={on_bad!r}: expected one of {ON_BAD}")
        self.on_bad = on_bad
        self.source = source
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def __call__(self, kind: str, message: str, missing_file: bool = False) -> None:
        """Report one bad entry of `kind`: raise, or count it and warn on the first of its kind."""
        if self.on_bad == "error":
            raise (MissingFileError if missing_file else DatasetError)(message)
        self.counts[kind] += 1
        if kind not in self.examples:
            self.examples[kind] = message
            LOGGER.warning("skipped (%s): %s [further ones counted, not logged]", kind, message)

    def clipped(self, message: str) -> None:
        """Count a box clipped to its image; not an error under either policy."""
        self.counts[CLIPPED_BOX] += 1
        self.examples.setdefault(CLIPPED_BOX, message)

    def log_summary(self, num_images: int) -> None:
        if self.counts:
            parts = ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items()))
            LOGGER.info("%s: %d images kept; skip/clip counts: %s", self.source, num_images, parts)


@dataclass
class ImageRecord:
    """One image and its validated annotations.

    boxes: float32 (n, 4) xyxy absolute pixels, inside [0, width] x [0, height], non-empty.
    labels: int64 (n,) contiguous labels. ignore_boxes / ignore_labels: boxes that are not
    training targets but must be seen by evaluation as crowd (COCO iscrowd, VOC difficult).
    """

    image_id: int
    path: Path
    file_name: str  # as written in the annotation (the COCO ground truth's file_name)
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


# ---------------------------------------------------------------------------------------------
# Box validation
# ---------------------------------------------------------------------------------------------

BOX_OK = 0
BOX_NONFINITE = 1
BOX_EMPTY = 2  # x2 <= x1 or y2 <= y1 as given
BOX_OUTSIDE = 3  # non-empty as given, empty after clipping to the image


def validate_boxes(boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and clip boxes, vectorized (COCO train has ~860k boxes).

    boxes: (n, 4) xyxy as given; sizes: (n, 2) the (width, height) of each box's image.
    Returns (clipped float32 (n, 4), status int (n,) with BOX_* codes, was_clipped bool (n,)).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    status = np.zeros(len(boxes), dtype=np.int64)
    finite = np.isfinite(boxes).all(axis=1)
    status[~finite] = BOX_NONFINITE
    with np.errstate(invalid="ignore"):
        empty = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        status[empty] = BOX_EMPTY
        upper = np.concatenate([sizes, sizes], axis=1)
        clipped = np.clip(boxes, 0.0, upper)
        was_clipped = (status == BOX_OK) & (clipped != boxes).any(axis=1)
        outside = (status == BOX_OK) & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    status[outside] = BOX_OUTSIDE
    was_clipped &= ~outside
    return clipped.astype(np.float32), status, was_clipped


def _num(v: float) -> str:
    return repr(float(v))


def box_problem(status: int, box: Sequence[float], width: int, height: int, xywh: bool = False) -> str:
    """Words for a BOX_* status; `box` as given (xyxy, or xywh when `xywh`)."""
    b = [float(v) for v in box]
    shown = "[" + ", ".join(_num(v) for v in b) + "]"
    if status == BOX_NONFINITE:
        return f"non-finite box coordinates {shown}"
    if status == BOX_EMPTY:
        if xywh:
            return f"bbox {shown} (x, y, w, h) has zero or negative width or height"
        if not b[2] > b[0]:
            return f"x2 ({_num(b[2])}) <= x1 ({_num(b[0])})"
        return f"y2 ({_num(b[3])}) <= y1 ({_num(b[1])})"
    if status == BOX_OUTSIDE:
        return f"box {shown} lies entirely outside the {width}x{height} image"
    raise ValueError(f"not a problem status: {status}")


def report_boxes(
    policy: BadInputPolicy,
    status: np.ndarray,
    was_clipped: np.ndarray,
    raw: np.ndarray,
    sizes: np.ndarray,
    describe: Callable[[int], tuple[str, str]],
    xywh: bool = False,
) -> np.ndarray:
    """Report every bad box to `policy` and count clipped ones; returns the keep mask (n,).

    describe(i) -> (where, image name), e.g. ("annotations.csv line 17", "a.jpg").
    """
    for i in np.flatnonzero(status != BOX_OK):
        where, name = describe(int(i))
        w, h = int(sizes[i][0]), int(sizes[i][1])
        policy(DEGENERATE_BOX, f"{where}: {box_problem(int(status[i]), raw[i], w, h, xywh)} for image '{name}'")
    for i in np.flatnonzero(was_clipped):
        if CLIPPED_BOX not in policy.examples:
            where, name = describe(int(i))
            policy.clipped(f"{where}: box clipped to the {int(sizes[i][0])}x{int(sizes[i][1])} image '{name}'")
        else:
            policy.counts[CLIPPED_BOX] += 1
    return status == BOX_OK


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def to_rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded PIL image of any mode.

    PIL's own convert("RGB") clips high-bit-depth pixels to 255 (a 16-bit PNG becomes almost
    white) and takes the hidden colour of transparent pixels, so: 16-bit and 32-bit integer
    grey levels are scaled from 0..65535 to 0..255; float images are read as 0..1 when their
    maximum is at most 1 (else as 0..255); images with transparency are composited on black.
    """
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        if mode.startswith("I"):
            grey = np.clip(grey, 0, 65535) / 257.0
        elif np.nanmax(grey, initial=0.0) <= 1.0:
            grey = np.clip(np.nan_to_num(grey), 0, 1) * 255.0
        grey = np.clip(np.rint(np.nan_to_num(grey)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.array(Image.alpha_composite(black, rgba).convert("RGB"), dtype=np.uint8)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 = as stored; 2-8 = flipped and/or rotated for display


# Formats and modes that TorchCodec's image decoder (torchvision.io's successor) reads to the
# same pixels as PIL + to_rgb8, and faster (benchmarks/RESULTS.md, the data loader): 8-bit RGB or
# grey JPEG/PNG without transparency or EXIF orientation. Everything else (16-bit, palette,
# CMYK, alpha, other formats, turned photos) goes through PIL.
_FAST_DECODE = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "L")}


def _decode(path: str | os.PathLike, orient: bool) -> tuple[Tensor, int]:
    """(uint8 (3, H, W) RGB, the file's EXIF orientation), turned by it when `orient`."""
    try:
        with Image.open(path) as im:  # lazy: the header only
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
            fast = (
                im.mode in _FAST_DECODE.get(im.format or "", ())
                and "transparency" not in im.info
                and orientation == 1  # TorchCodec turns by EXIF on its own; datasets must not be
            )
            if not fast:
                im.load()  # forces the full decode: truncated files fail here
                array = to_rgb8(ImageOps.exif_transpose(im) if orient else im)
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot decode image file {path}: {e}") from e
    if not fast:
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), orientation
    try:
        return decode_image(os.fspath(path), mode="RGB"), orientation
    except RuntimeError as e:  # truncated or corrupt data; the message's last line says what
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DatasetError(f"cannot decode image file {path}: {reason}") from e


def load_image(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Tensor:
    """Decode an image file into a (3, H, W) RGB tensor (`to_rgb8`): float32 in [0, 1] by
    default, or the decoded uint8 pixels with dtype=torch.uint8 (what the datasets yield: the
    model converts and normalises on its device, and a uint8 batch is a quarter of the bytes
    to pin and copy).

    EXIF orientation is not applied: COCO/VOC boxes refer to the stored pixels. Errors name the
    file, so that a failure inside a DataLoader worker is readable.
    """
    image = _decode(path, orient=False)[0]
    return image if dtype == torch.uint8 else image.to(dtype).div_(255.0)


def load_photo(path: str | os.PathLike) -> tuple[Tensor, int]:
    """(uint8 (3, H, W) image, EXIF orientation) with the image turned as viewers show it, for
    prediction on photos: the boxes are then in the frame the user sees. Orientation 1: stored
    as shown."""
    return _decode(path, orient=True)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the image header only (PIL opens lazily: no pixel decoding)."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image file {path}: {e}") from e


def verify_image(path: str | os.PathLike, width: int, height: int) -> Optional[str]:
    """Decode once; None if fine, else the problem in words (naming the file)."""
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
    except FileNotFoundError:
        return f"image file not found: {path}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"cannot decode image file {path}: {e}"
    if size != (width, height):
        return f"image file {path} is {size[0]}x{size[1]} but its annotation says {width}x{height}"
    return None


# ---------------------------------------------------------------------------------------------
# The dataset base class
# ---------------------------------------------------------------------------------------------


class DetectionDataset(Dataset):
    """A detection dataset over validated `ImageRecord`s.

    `dataset[i]` -> (image, target): image uint8 (3, H, W) RGB (the model converts and
    normalises it on its device); target {"boxes": float32 (n, 4) xyxy absolute pixels,
    "labels": int64 (n,) in 0..K-1, "image_id": int}. n may be 0 (a negative image). `transforms(image, target)` is applied last.

    Attributes: class_names (index = label), label_to_cat_id (label -> the dataset's category id,
    for COCO results JSON), image_ids, skipped (kind -> count of skipped / clipped entries),
    skip_examples (kind -> the first message of that kind).
    """

    kind = "generic"

    def __init__(
        self,
        records: list[ImageRecord],
        class_names: list[str],
        label_to_cat_id: list[int],
        policy: BadInputPolicy,
        transforms: Optional[Callable] = None,
        keep_empty: bool = True,
        verify_images: bool = False,
    ):
        if len(class_names) != len(label_to_cat_id):
            raise ValueError("class_names and label_to_cat_id must have the same length")
        self.class_names = list(class_names)
        self.label_to_cat_id = [int(c) for c in label_to_cat_id]
        self.cat_id_to_label = {c: i for i, c in enumerate(self.label_to_cat_id)}
        self.transforms = transforms
        self.source = policy.source

        kept = []
        for rec in records:
            if not keep_empty and len(rec.boxes) == 0:
                continue
            if verify_images:
                problem = verify_image(rec.path, rec.width, rec.height)
                if problem is not None:
                    policy(CORRUPT_IMAGE, problem)
                    continue
            kept.append(rec)
        self.records = kept
        policy.log_summary(len(kept))
        self.skipped: dict[str, int] = dict(policy.counts)
        self.skip_examples: dict[str, str] = dict(policy.examples)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        rec = self.records[index]
        image = load_image(rec.path, dtype=torch.uint8)  # the model converts on its device
        if image.shape[1] != rec.height or image.shape[2] != rec.width:
            raise DatasetError(
                f"image file {rec.path} is {image.shape[2]}x{image.shape[1]} but its annotation "
                f"says {rec.width}x{rec.height} (check the dataset with verify_images=True)"
            )
        target = {
            "boxes": torch.from_numpy(rec.boxes.copy()).reshape(-1, 4),
            "labels": torch.from_numpy(rec.labels.copy()).reshape(-1),
            "image_id": int(rec.image_id),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_ids(self) -> list[int]:
        return [int(r.image_id) for r in self.records]

    def aspect_ratios(self) -> list[float]:
        """width / height of every image, from the annotations (no decoding)."""
        return [r.width / r.height for r in self.records]

    def image_info(self, index: int) -> dict:
        """{"id", "file_name", "width", "height", "path"} of one image, without decoding it."""
        r = self.records[index]
        return {"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height, "path": str(r.path)}

    def coco_gt(self) -> dict:
        """COCO-format ground truth of exactly this dataset's images.

        bbox is [x, y, w, h] in pixels; area = w * h (box area: these formats carry no masks);
        ids are 1.. in order. Ignore boxes (VOC difficult) and boxes flagged by `crowd_mask` are
        written with iscrowd = 1, which pycocotools and faster-coco-eval treat as regions where
        detections count neither as true nor as false positives. Entries skipped at loading
        (degenerate, unknown class) are not in it.
        """
        images, annotations = [], []
        for index, r in enumerate(self.records):
            images.append({"id": int(r.image_id), "file_name": r.file_name, "width": r.width, "height": r.height})
            crowd_flags = np.concatenate([self.crowd_mask(index), np.ones(len(r.ignore_boxes), dtype=bool)])
            boxes = np.concatenate([r.boxes, r.ignore_boxes]).reshape(-1, 4)
            labels = np.concatenate([r.labels, r.ignore_labels])
            for box, label, crowd in zip(boxes.tolist(), labels.tolist(), crowd_flags.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(r.image_id),
                        "category_id": self.label_to_cat_id[label],
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": int(crowd),
                    }
                )
        categories = [{"id": c, "name": n, "supercategory": ""} for n, c in zip(self.class_names, self.label_to_cat_id)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def crowd_mask(self, index: int) -> np.ndarray:
        """bool (n,): which of record `index`'s training boxes `coco_gt()` marks as crowd."""
        return np.zeros(len(self.records[index].boxes), dtype=bool)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, images={len(self)}, classes={self.num_classes}"
            + (f", skipped={self.skipped}" if self.skipped else "")
            + ")"
        )


def collate_fn(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """DataLoader collate: images stay a list (they differ in size; the model pads them)."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


def require_exists(path: Path, what: str) -> Path:
    """A wrong dataset path is always an error (never skipped): say which path and what it is."""
    if not path.exists():
        raise MissingFileError(f"{what} not found: {path}")
    return path


def worker_error_message(e: Exception) -> str:
    """The original one-line message of an exception re-raised from a DataLoader worker (whose
    message is "Caught X in DataLoader worker process N. Original Traceback ...: message")."""
    text = str(e).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last

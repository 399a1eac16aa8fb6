"""Prediction over many inputs, for `retinanet predict`: image files and folders, video frames,
JSON records and pictures of the detections, and COCO-style JSON of all of them.

The COCO-style file is a COCO instances file whose annotations carry a "score": it loads with
the usual COCO tools (as ground truth for pseudo-labelling or viewing, or `loadRes` on its
"annotations" list against real ground truth with the same image ids):

    {"info": {...}, "images": [{"id", "file_name", "width", "height", ...}],
     "categories": [{"id", "name"}],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "score", "iscrowd": 0}]}

Category ids: a model of this library predicts labels 0..K-1, written as the category ids of the
dataset it was trained on (saved in its checkpoint: {7, 1000} stay 7 and 1000, COCO's 80 classes
keep their ids 1..90); torchvision's COCO weights predict COCO category ids, kept as they are.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..data.common import IMAGE_SUFFIXES, LOGGER, DatasetError, load_photo
from ..utils.io import atomic_write
from ..utils.paths import unique_stems
from ..utils.visualize import draw_detections, save_grid
from .video import VideoSource, annotated_video_path, open_video, video_writer


def find_images(inputs: Sequence[str | Path], exclude: Optional[Path] = None) -> list[Path]:
    """Image files named in `inputs`, or found (recursively, sorted) in the folders named there;
    files under `exclude` (the output folder) are skipped. FileNotFoundError for a missing input."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if exclude is not None:
                files = [q for q in files if not q.resolve().is_relative_to(exclude.resolve())]
            found += files
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return list(dict.fromkeys(found))


def detection_records(det: dict, class_names: Sequence[str], score_thresh: float) -> list[dict]:
    """JSON-ready detections with score >= score_thresh: [{"box" xyxy, "score", "label", "class_name"}]."""
    keep = det["scores"] >= score_thresh
    boxes, scores, labels = det["boxes"][keep].tolist(), det["scores"][keep].tolist(), det["labels"][keep].tolist()
    out = []
    for box, score, label in zip(boxes, scores, labels):
        name = class_names[label] if 0 <= label < len(class_names) else f"class_{label}"
        out.append(
            {"box": [round(v, 2) for v in box], "score": round(score, 4), "label": int(label), "class_name": name}
        )
    return out


def draw_records(image: Tensor, records: Sequence[dict], class_names: Sequence[str]):
    """A PIL picture of `image` with `detection_records` drawn."""
    boxes, labels, scores = ([r[k] for r in records] for k in ("box", "label", "score"))
    return draw_detections(image, boxes, labels, scores, class_names)


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of n consecutive items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(islice(it, max(1, n))):
        yield chunk


class CocoPredictions:
    """Accumulates detections image by image into a COCO-style dict (see the module docstring)."""

    def __init__(
        self, class_names: Sequence[str], category_ids: Optional[Sequence[int]] = None, info: Optional[dict] = None
    ):
        """category_ids: the dataset's category id of each label (`LoadedModel.category_ids`, saved
        in every checkpoint); None: label + 1. Names "__background__" and "N/A" (torchvision's
        unused COCO ids) are not categories."""
        self.category_ids = [i + 1 for i in range(len(class_names))] if category_ids is None else list(category_ids)
        if len(self.category_ids) != len(class_names):
            raise ValueError(f"{len(class_names)} class names but {len(self.category_ids)} category ids")
        cats = [(c, n) for c, n in zip(self.category_ids, class_names) if n not in ("__background__", "N/A")]
        self.data = {
            "info": dict(info or {}),
            "images": [],
            "categories": [{"id": int(i), "name": n} for i, n in cats],
            "annotations": [],
        }

    def category_id(self, label: int) -> int:
        return int(self.category_ids[int(label)])

    def add(self, file_name: str, width: int, height: int, records: Sequence[dict], **extra) -> int:
        """One image and its detections (`detection_records` entries); returns its id."""
        image_id = len(self.data["images"]) + 1
        self.data["images"].append(
            {"id": image_id, "file_name": file_name, "width": int(width), "height": int(height), **extra}
        )
        anns = self.data["annotations"]
        for r in records:
            x1, y1, x2, y2 = r["box"]
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": self.category_id(r["label"]),
                    "bbox": [x1, y1, w, h],
                    "area": round(w * h, 2),
                    "score": r["score"],
                    "iscrowd": 0,
                }
            )
        return image_id

    def write(self, path: str | Path) -> Path:
        return atomic_write(path, json.dumps(self.data))


def frame_tensor(rgb: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1], the model's input."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)  # a writable copy


@torch.no_grad()
def detect(model, images: Sequence[Tensor], device: torch.device) -> list[dict[str, Tensor]]:
    """The model's detections of a list of (3, H, W) images, on the CPU (float32 boxes / scores)."""
    dets = model([im.to(device) for im in images])
    return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()} for d in dets]


def predict_images(
    model,
    device: torch.device,
    images: Sequence[Path],
    out: Path,
    class_names: Sequence[str],
    score_thresh: float,
    batch_size: int = 1,
    pictures: bool = True,
    coco: Optional[CocoPredictions] = None,
) -> tuple[int, list[str]]:
    """Detect objects in image files, `batch_size` at a time, each turned as its EXIF orientation
    says (as viewers show it; the JSON then records "exif_orientation"): OUT/<stem>.json with
    {image, width, height, detections: `detection_records`} and, with `pictures`, OUT/<stem>.png with the boxes,
    class names and scores drawn (repeated stems get -2, -3, ...); every image is also added to
    `coco` when given. A file that cannot be read is skipped and named (a warning), and the rest
    go on. Returns (the number of detections, the messages of the skipped files)."""
    total, failed = 0, []
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not images)
    for chunk in batched(zip(images, unique_stems(images)), batch_size):
        readable, loaded, orientations = [], [], []
        for path, stem in chunk:
            try:
                image, orientation = load_photo(path)  # as viewers show it: boxes in the frame the user sees
                loaded.append(image)
                orientations.append(orientation)
                readable.append((path, stem))
            except DatasetError as e:  # truncated, empty, not an image, vanished since the listing
                failed.append(str(e))
                LOGGER.warning("skipped: %s", e)
        dets = detect(model, loaded, device) if loaded else []
        for (path, stem), image, orientation, det in zip(readable, loaded, orientations, dets):
            records = detection_records(det, class_names, score_thresh)
            total += len(records)
            height, width = image.shape[-2:]
            if pictures:
                draw_records(image, records, class_names).save(out / f"{stem}.png")
            result = {"image": str(path), "width": int(width), "height": int(height), "detections": records}
            if orientation != 1:  # the stored pixels are turned: width, height and boxes are the turned image's
                result["exif_orientation"] = orientation
            (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
            if coco is not None:
                coco.add(str(path), width, height, records)
        bar.update(len(chunk))
    bar.close()
    return total, failed


def predict_video(
    model,
    device: torch.device,
    source,
    out: Path,
    class_names: Sequence[str],
    score_thresh: float,
    category_ids: Optional[Sequence[int]] = None,
    save_video: bool = False,
    batch_size: int = 1,
) -> dict:
    """Detect objects in every frame of a video (a `video.VideoSource` or a path):
    OUT/<stem>_detections.json (COCO-style, one
    image per frame with its "frame_index" and "timestamp" in seconds) and, with `save_video`,
    the annotated video (OUT/<stem>_detections.mp4, or .gif / .webp like the input).
    Returns {"frames", "detections", "json", "video"}."""
    source = source if isinstance(source, VideoSource) else open_video(source)
    path = source.path
    info = {
        "description": "retinanet predict",
        "video": str(path),
        "fps": round(source.fps, 4),
        "width": source.width,
        "height": source.height,
        "score_thresh": score_thresh,
    }
    coco = CocoPredictions(class_names, category_ids, info)
    writer = video_writer(annotated_video_path(out, source), source) if save_video else None
    frames = detections = 0
    try:
        bar = tqdm(source.frames(), total=source.num_frames, desc=path.name, unit="frame")
        for chunk in batched(bar, batch_size):
            images = [frame_tensor(rgb) for _, rgb, _ in chunk]
            for (index, rgb, t), image, det in zip(chunk, images, detect(model, images, device)):
                records = detection_records(det, class_names, score_thresh)
                coco.add(
                    f"{path.name}#frame={index}",
                    rgb.shape[1],
                    rgb.shape[0],
                    records,
                    frame_index=index,
                    timestamp=round(t, 4),
                )
                frames += 1
                detections += len(records)
                if writer is not None:
                    writer.write(np.asarray(draw_records(image, records, class_names)))
    finally:
        if writer is not None:
            writer.close()
    json_path = coco.write(out / f"{path.stem}_detections.json")
    return {
        "frames": frames,
        "detections": detections,
        "json": json_path,
        "video": annotated_video_path(out, source) if writer is not None else None,
    }


@torch.no_grad()
def detections_grid(model, dataset, path: Path, score_thresh: float, num_images: int = 4) -> Path:
    """A grid of the first `num_images` images of `dataset` that have objects, with the model's
    detections (score >= score_thresh) drawn: the demo's picture."""
    with_objects = [i for i, r in enumerate(dataset.records) if len(r.boxes)] or list(range(len(dataset)))
    indices = with_objects[:num_images]
    model.eval()
    images = [dataset[i][0] for i in indices]
    pictures, titles = [], []
    for i, image, det in zip(indices, images, model(images)):
        keep = det["scores"] >= score_thresh
        pictures.append(
            draw_detections(image, det["boxes"][keep], det["labels"][keep], det["scores"][keep], dataset.class_names)
        )
        titles.append(f"{Path(dataset.image_info(i)['file_name']).name}: {int(keep.sum())} detections")
    return save_grid(pictures, path, titles=titles)


__all__ = [
    "CocoPredictions",
    "batched",
    "detect",
    "detection_records",
    "detections_grid",
    "find_images",
    "frame_tensor",
    "predict_images",
    "predict_video",
]

"""Prediction over many inputs, for `retinanet predict`: batches of image files, video frames,
and COCO-style JSON of the detections.

The COCO-style file is a COCO instances file whose annotations carry a "score": it loads with
the usual COCO tools (as ground truth for pseudo-labelling or viewing, or `loadRes` on its
"annotations" list against real ground truth with the same image ids):

    {"info": {...}, "images": [{"id", "file_name", "width", "height", ...}],
     "categories": [{"id", "name"}],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "score", "iscrowd": 0}]}

Category ids: a model of this library predicts labels 0..K-1, written as category_id = label + 1
(COCO ids start at 1); torchvision's COCO weights predict COCO category ids, kept as they are.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of n consecutive items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(islice(it, max(1, n))):
        yield chunk


class CocoPredictions:
    """Accumulates detections image by image into a COCO-style dict (see the module docstring)."""

    def __init__(self, class_names: Sequence[str], labels_are_category_ids: bool = False, info: Optional[dict] = None):
        self.labels_are_ids = labels_are_category_ids
        if labels_are_category_ids:  # torchvision's list: index = category id; "N/A" marks unused ids
            cats = [(i, n) for i, n in enumerate(class_names) if n not in ("__background__", "N/A")]
        else:
            cats = [(i + 1, n) for i, n in enumerate(class_names)]
        self.data = {"info": dict(info or {}), "images": [], "categories": [{"id": i, "name": n} for i, n in cats],
                     "annotations": []}

    def category_id(self, label: int) -> int:
        return int(label) if self.labels_are_ids else int(label) + 1

    def add(self, file_name: str, width: int, height: int, records: Sequence[dict], **extra) -> int:
        """One image and its detections (`cli.detection_records` entries); returns its id."""
        image_id = len(self.data["images"]) + 1
        self.data["images"].append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height), **extra})
        anns = self.data["annotations"]
        for r in records:
            x1, y1, x2, y2 = r["box"]
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": self.category_id(r["label"]),
                         "bbox": [x1, y1, w, h], "area": round(w * h, 2), "score": r["score"], "iscrowd": 0})
        return image_id

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data))
        return path


def frame_tensor(rgb: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1], the model's input."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)  # a writable copy


@torch.no_grad()
def detect(model, images: Sequence[Tensor], device: torch.device) -> list[dict[str, Tensor]]:
    """The model's detections of a list of (3, H, W) images, on the CPU (float32 boxes / scores)."""
    dets = model([im.to(device) for im in images])
    return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()} for d in dets]


def predict_video(model, device: torch.device, source, out: Path, class_names: Sequence[str], score_thresh: float,
                  records_of, labels_are_category_ids: bool = False, save_video: bool = False, batch_size: int = 1) -> dict:
    """Detect objects in every frame of a video (a `video.VideoSource` or a path): OUT/<stem>_detections.json (COCO-style, one
    image per frame with its "frame_index" and "timestamp" in seconds) and, with `save_video`,
    the annotated video (OUT/<stem>_detections.mp4, or .gif / .webp like the input).
    `records_of(det, class_names, score_thresh)` turns detections into JSON records.
    Returns {"frames", "detections", "json", "video"}."""
    from tqdm import tqdm

    from .video import VideoSource, annotated_video_path, open_video, video_writer
    from ..utils.visualize import draw_detections

    source = source if isinstance(source, VideoSource) else open_video(source)
    path = source.path
    info = {"description": "retinanet predict", "video": str(path), "fps": round(source.fps, 4),
            "width": source.width, "height": source.height, "score_thresh": score_thresh}
    coco = CocoPredictions(class_names, labels_are_category_ids, info)
    writer = video_writer(annotated_video_path(out, source), source) if save_video else None
    frames = detections = 0
    try:
        bar = tqdm(source.frames(), total=source.num_frames, desc=path.name, unit="frame")
        for chunk in batched(bar, batch_size):
            images = [frame_tensor(rgb) for _, rgb, _ in chunk]
            for (index, rgb, t), image, det in zip(chunk, images, detect(model, images, device)):
                records = records_of(det, class_names, score_thresh)
                coco.add(f"{path.name}#frame={index}", rgb.shape[1], rgb.shape[0], records, frame_index=index, timestamp=round(t, 4))
                frames += 1
                detections += len(records)
                if writer is not None:
                    picture = draw_detections(image, [r["box"] for r in records], [r["label"] for r in records],
                                              [r["score"] for r in records], class_names)
                    writer.write(np.asarray(picture))
    finally:
        if writer is not None:
            writer.close()
    json_path = coco.write(out / f"{path.stem}_detections.json")
    return {"frames": frames, "detections": detections, "json": json_path,
            "video": annotated_video_path(out, source) if writer is not None else None}


__all__ = ["CocoPredictions", "batched", "detect", "frame_tensor", "predict_video"]

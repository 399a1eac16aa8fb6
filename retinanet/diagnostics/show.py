"""`retinanet data show`: ground truth drawn with the anchors that training would assign to it.

For each image, the model's own geometry and matcher decide: the image is resized and padded as
`RetinaNet.preprocess` does, the anchors come from `AnchorGenerator` on the P3-P7 feature sizes,
and `Matcher` (the paper's IoU >= 0.5 foreground rule, Lin et al. 2017 §4, plus the low-quality
matches when `allow_low_quality_matches`) assigns them. Everything is drawn back in the original
image's pixels. A box that no anchor reaches at the foreground threshold is marked: it trains
on low-quality matches only, or on none.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..data.common import DetectionDataset
from ..model.anchors import STRIDES, AnchorGenerator
from ..model.assignment import Matcher, pairwise_iou
from ..model.config import ModelConfig
from ..model.preprocess import resize_geometry
from ..utils.paths import unique_stems


def anchor_generator(cfg: ModelConfig) -> AnchorGenerator:
    return AnchorGenerator(
        cfg.anchor_sizes, cfg.scales_per_octave, cfg.aspect_ratios, offset=cfg.anchor_offset, style=cfg.anchor_style
    )


def match_anchors(
    boxes: Tensor, height: int, width: int, cfg: ModelConfig, generator: Optional[AnchorGenerator] = None
) -> dict:
    """Which anchors training would make positives for each box of one image.

    boxes: (n, 4) xyxy in the image's pixels (height x width). Returns {"positives": [(k_i, 4)],
    "low_quality": [(j_i, 4)] (assigned below the foreground threshold), "best_iou": (n,),
    "reached": (n,) bool best_iou >= fg_iou_thresh}; anchors in the image's pixels.
    """
    generator = generator or anchor_generator(cfg)
    _, (h, w), (hp, wp) = resize_geometry(height, width, cfg.min_size, cfg.max_size, cfg.size_divisor)
    # feature sizes: the backbone's stride-2 convolutions round up
    shapes = [(math.ceil(hp / s), math.ceil(wp / s)) for s in STRIDES]
    anchors, _ = generator(shapes, (hp, wp))
    ratio = torch.tensor([w, h], dtype=torch.float32) / torch.tensor([width, height], dtype=torch.float32)
    gt = boxes.float().reshape(-1, 4) * ratio[[0, 1, 0, 1]]  # as RetinaNet._scale_targets
    n = gt.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.float32)
        return {"positives": [], "low_quality": [], "best_iou": empty, "reached": empty.bool()}
    matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches)
    matches = matcher(gt[None], torch.ones(1, n, dtype=torch.bool), anchors)[0]  # (N,)
    iou = pairwise_iou(gt, anchors)  # (n, N)
    best = iou.amax(dim=1)
    back = ratio[[0, 1, 0, 1]]
    positives, low = [], []
    for i in range(n):
        mine = matches == i
        strong = mine & (iou[i] >= cfg.fg_iou_thresh)
        positives.append(anchors[strong] / back)
        low.append(anchors[mine & ~strong] / back)
    return {"positives": positives, "low_quality": low, "best_iou": best, "reached": best >= cfg.fg_iou_thresh}


def show_images(
    dataset: DetectionDataset, cfg: ModelConfig, out: str | Path, indices: Sequence[int], draws: int = 0
) -> list[dict]:
    """Draw `indices` of `dataset` with their anchor matches into out/<stem>.png (one picture per
    image; repeated stems get -2, -3, ...). Returns per image {"index", "file_name", "path",
    "boxes", "positives" [per box], "low_quality" [per box], "best_iou" [per box], "unreached"}.
    draws > 0: that many pictures per image, out/<stem>_aug<k>.png, each through the dataset's
    random transforms seeded by (image, k) (the augmented training samples)."""
    from ..utils.visualize import draw_anchor_matches

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = anchor_generator(cfg)
    infos = [dataset.image_info(i) for i in indices]
    results = []
    jobs = [
        (i, info, stem if not draws else f"{stem}_aug{k}", k)
        for i, info, stem in zip(indices, infos, unique_stems([info["file_name"] for info in infos]))
        for k in (range(1, draws + 1) if draws else [0])
    ]
    for i, info, stem, k in jobs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i * 1_000 + k)
            image, target = dataset[i]
        m = match_anchors(target["boxes"], image.shape[1], image.shape[2], cfg, generator)
        picture = draw_anchor_matches(
            image,
            target["boxes"],
            target["labels"],
            m["positives"],
            m["low_quality"],
            m["best_iou"],
            dataset.class_names,
            cfg.fg_iou_thresh,
        )
        path = out / f"{stem}.png"
        picture.save(path)
        results.append(
            {
                "index": i,
                "file_name": info["file_name"],
                "path": str(path),
                "boxes": int(len(target["boxes"])),
                "positives": [int(len(p)) for p in m["positives"]],
                "low_quality": [int(len(p)) for p in m["low_quality"]],
                "best_iou": [round(float(v), 4) for v in m["best_iou"]],
                "unreached": int((~m["reached"]).sum()),
            }
        )
    return results


__all__ = ["anchor_generator", "match_anchors", "show_images"]

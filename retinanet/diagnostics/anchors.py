"""Anchor coverage: which ground-truth boxes of a dataset can the configured anchors learn?

An anchor is a positive for a box when their IoU is at least the foreground threshold (0.5 in
Lin et al. 2017, §4). A box that reaches that IoU with no anchor only ever gets the matcher's
low-quality matches (if enabled): few, poorly fitting positives, which is why tiny or very
elongated objects are often missed. `coverage_report` measures, at the model's input scale,
the share of boxes that reach IoU >= threshold with at least one anchor ("coverage"), overall,
by COCO size bucket (box area in the original image: small < 32², medium, large > 96²) and by
aspect ratio h/w; `propose_anchors` searches anchor sizes / scales per octave / aspect ratios
that raise it.

The best IoU of a box over an anchor grid is computed exactly without enumerating the ~100k
anchors of an image: for one anchor shape the IoU with the box is the product of two 1-D
overlaps, each non-increasing in the distance between centres along its axis, so the best
anchor of that shape is the one whose centre is nearest to the box centre in x and in y
separately (clamped to the feature map). That is O(boxes x shapes), vectorized.

Geometry follows the model exactly: each image resized as `RetinaNet.preprocess` (shorter side
`min_size`, longer at most `max_size`, sizes floor(side · scale)), boxes scaled by the resized /
original ratios (as the training targets), padded to a multiple of `size_divisor` alone (batch of
one), feature maps of ceil(padded / 2^l) cells on P3-P7, anchor centres (i + offset) · stride
(stride 2^l, or padded // cells for `anchor_style="torchvision"`), cell anchors from
`cell_anchors`. Training scale jitter (`train_min_sizes`) is not modelled: the inference scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.common import LARGE_AREA, SMALL_AREA, DetectionDataset
from ..model.anchors import STRIDES, cell_anchors
from ..model.config import ModelConfig
from ..model.preprocess import resize_geometry

SIZE_BUCKETS = ("small", "medium", "large")
# h/w edges: wide < 1/3 <= ... <= 3 < tall; the middle bucket holds roughly square boxes.
ASPECT_EDGES = (1 / 3, 2 / 3, 3 / 2, 3.0)
ASPECT_BUCKETS = ("h/w<1/3", "1/3-2/3", "2/3-3/2", "3/2-3", "h/w>3")
# The proposal search: base sizes (the P3 anchor size, doubling per level) at quarter octaves
# from 1/8 to 2 times the configured one, scales per octave 1-4, and these ratio sets plus two
# fitted to the data.
BASE_STEPS = tuple(k / 4 for k in range(-12, 5))
SCALES_PER_OCTAVE = (1, 2, 3, 4)
RATIO_SETS = ((1.0,), (0.5, 1.0, 2.0), (1 / 3, 1.0, 3.0), (0.25, 0.5, 1.0, 2.0, 4.0), (1 / 3, 0.5, 1.0, 2.0, 3.0))
SEARCH_SAMPLE = 5000  # boxes the search scores each candidate on (all of them for the result)
COVERAGE_TOLERANCE = 0.002  # candidates this close to the best coverage count as equally good


@dataclass(frozen=True)
class AnchorSetting:
    """What the search varies: one anchor size per level P3-P7, scales per octave, ratios h/w."""

    sizes: tuple[float, ...]
    scales_per_octave: int
    aspect_ratios: tuple[float, ...]

    @property
    def anchors_per_location(self) -> int:
        return self.scales_per_octave * len(self.aspect_ratios)

    def overrides(self) -> list[str]:
        """The `key=value` overrides that configure it."""
        return [
            f"model.anchor_sizes=[{','.join(_num(s) for s in self.sizes)}]",
            f"model.scales_per_octave={self.scales_per_octave}",
            f"model.aspect_ratios=[{','.join(_num(r) for r in self.aspect_ratios)}]",
        ]

    def describe(self) -> str:
        return (
            f"sizes ({', '.join(_num(s) for s in self.sizes)}), {self.scales_per_octave} scales/octave, "
            f"ratios h/w ({', '.join(_num(r) for r in self.aspect_ratios)}): "
            f"{self.anchors_per_location} anchors/location"
        )

    @classmethod
    def of(cls, cfg: ModelConfig) -> "AnchorSetting":
        sizes, ratios = tuple(float(s) for s in cfg.anchor_sizes), tuple(float(r) for r in cfg.aspect_ratios)
        return cls(sizes, int(cfg.scales_per_octave), ratios)


def _num(v: float) -> str:
    """A short exact-enough form: 32, 22.63, 0.333."""
    return f"{v:.4g}" if abs(v - round(v)) > 1e-9 else str(int(round(v)))


# ---------------------------------------------------------------------------------------------
# Boxes at the network's scale
# ---------------------------------------------------------------------------------------------


@dataclass
class NetworkBoxes:
    """All training boxes of a dataset at the network input's scale, with what the grid of each
    box's image looks like. boxes (n, 4) float64 xyxy in network pixels; padded (n, 2) the
    padded input (h, w) of the box's image; orig_area (n,) box area in original pixels (COCO
    buckets); aspect (n,) h/w; image_index (n,)."""

    boxes: Tensor
    padded: Tensor
    orig_area: Tensor
    aspect: Tensor
    image_index: Tensor
    num_images: int
    source: str = ""


def input_geometry(height: int, width: int, cfg: ModelConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized h, w), (padded h, w)) of one image, as `RetinaNet.preprocess` computes them."""
    _, resized, padded = resize_geometry(height, width, cfg.min_size, cfg.max_size, cfg.size_divisor)
    return resized, padded


def network_boxes(dataset: DetectionDataset, cfg: ModelConfig) -> NetworkBoxes:
    """The dataset's training boxes (not crowd / difficult ones) at the input scale of `cfg`."""
    boxes, padded, area, index = [], [], [], []
    for i, r in enumerate(dataset.records):
        if not len(r.boxes):
            continue
        (h, w), (hp, wp) = input_geometry(r.height, r.width, cfg)
        b = torch.from_numpy(np.asarray(r.boxes, dtype=np.float32)).reshape(-1, 4)
        # float32 ratios times float32 boxes, as RetinaNet._scale_targets scales the targets
        ratio = torch.tensor([w, h], dtype=torch.float32) / torch.tensor([r.width, r.height], dtype=torch.float32)
        boxes.append((b * ratio[[0, 1, 0, 1]]).double())
        padded.append(torch.tensor([[hp, wp]], dtype=torch.float64).expand(len(b), 2))
        area.append(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).double())
        index.append(torch.full((len(b),), i, dtype=torch.int64))
    if not boxes:
        empty = torch.zeros(0, dtype=torch.float64)
        no_index = torch.zeros(0, dtype=torch.int64)
        return NetworkBoxes(
            empty.reshape(0, 4), empty.reshape(0, 2), empty, empty, no_index, len(dataset), dataset.source
        )
    boxes_t = torch.cat(boxes)
    wh = boxes_t[:, 2:] - boxes_t[:, :2]
    return NetworkBoxes(
        boxes_t, torch.cat(padded), torch.cat(area), wh[:, 1] / wh[:, 0], torch.cat(index), len(dataset), dataset.source
    )


# ---------------------------------------------------------------------------------------------
# Best IoU over an anchor grid
# ---------------------------------------------------------------------------------------------


def _level_shapes(setting: AnchorSetting, style: str) -> tuple[Tensor, Tensor]:
    """All cell anchors of a setting: (S, 4) float64 xyxy around (0, 0) and their level (S,)."""
    ratios = tuple(setting.aspect_ratios)
    cells = [cell_anchors(float(s), setting.scales_per_octave, ratios, style) for s in setting.sizes]
    shapes = torch.cat(cells).double()
    levels = torch.cat([torch.full((len(c),), lvl, dtype=torch.int64) for lvl, c in enumerate(cells)])
    return shapes, levels


def best_iou_per_shape(
    nb: NetworkBoxes, shapes: Tensor, levels: Tensor, offset: float, style: str, chunk: int = 2048
) -> Tensor:
    """(n, S): the best IoU of each box with the anchors of each cell shape (at its level's grid
    in the box's image). See the module docstring for why the nearest centre is the best."""
    n, S = nb.boxes.shape[0], shapes.shape[0]
    out = torch.empty((n, S), dtype=torch.float64)
    strides = torch.tensor(STRIDES, dtype=torch.float64)[levels]  # (S,)
    ax1, ay1, ax2, ay2 = shapes.unbind(1)  # (S,)
    acx, acy = (ax1 + ax2) / 2, (ay1 + ay2) / 2  # the cell's centre (0 unless rounding moved it)
    a_area = (ax2 - ax1) * (ay2 - ay1)
    for start in range(0, n, chunk):
        b = nb.boxes[start : start + chunk]
        pad = nb.padded[start : start + chunk]
        # cells per level: the backbone's stride-2 convolutions round up, ceil(padded / 2^l)
        cells_y = torch.ceil(pad[:, :1] / strides)  # (c, S)
        cells_x = torch.ceil(pad[:, 1:] / strides)
        if style == "torchvision":  # its stride: padded size // feature size
            sy, sx = torch.floor(pad[:, :1] / cells_y), torch.floor(pad[:, 1:] / cells_x)
        else:
            sy = sx = strides.expand_as(cells_y)
        bx1, by1, bx2, by2 = (v[:, None] for v in b.unbind(1))
        bcx, bcy = (bx1 + bx2) / 2, (by1 + by2) / 2
        # nearest anchor centre (i + offset)·stride + cell centre, clamped to the map
        ix = torch.minimum(torch.clamp(torch.round((bcx - acx) / sx - offset), min=0), cells_x - 1)
        iy = torch.minimum(torch.clamp(torch.round((bcy - acy) / sy - offset), min=0), cells_y - 1)
        cx, cy = (ix + offset) * sx, (iy + offset) * sy
        ow = (torch.minimum(bx2, cx + ax2) - torch.maximum(bx1, cx + ax1)).clamp(min=0)
        oh = (torch.minimum(by2, cy + ay2) - torch.maximum(by1, cy + ay1)).clamp(min=0)
        inter = ow * oh
        out[start : start + chunk] = inter / ((bx2 - bx1) * (by2 - by1) + a_area - inter)
    return out


def best_anchor_iou(nb: NetworkBoxes, setting: AnchorSetting, offset: float = 0.5, style: str = "exact") -> Tensor:
    """(n,): each box's best IoU with any anchor of `setting`."""
    shapes, levels = _level_shapes(setting, style)
    if nb.boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    return best_iou_per_shape(nb, shapes, levels, offset, style).amax(dim=1)


# ---------------------------------------------------------------------------------------------
# Coverage by bucket
# ---------------------------------------------------------------------------------------------


def bucket_masks(nb: NetworkBoxes) -> dict[str, Tensor]:
    """name -> bool (n,): "all", COCO size buckets (original box area), aspect buckets (h/w)."""
    masks = {"all": torch.ones(nb.boxes.shape[0], dtype=torch.bool)}
    masks["small"] = nb.orig_area < SMALL_AREA
    masks["large"] = nb.orig_area > LARGE_AREA
    masks["medium"] = ~masks["small"] & ~masks["large"]
    edges = torch.tensor(ASPECT_EDGES, dtype=torch.float64)
    which = torch.bucketize(nb.aspect, edges)  # 0..4; h/w exactly at an edge joins the lower bucket
    for k, name in enumerate(ASPECT_BUCKETS):
        masks[name] = which == k
    return masks


def coverage_table(best_iou: Tensor, masks: dict[str, Tensor], iou_thresh: float) -> dict[str, dict]:
    """bucket -> {"boxes", "covered", "coverage" (None for an empty bucket), "mean_best_iou"}."""
    covered = best_iou >= iou_thresh
    table = {}
    for name, m in masks.items():
        n = int(m.sum())
        table[name] = {
            "boxes": n,
            "covered": int(covered[m].sum()),
            "coverage": float(covered[m].double().mean()) if n else None,
            "mean_best_iou": float(best_iou[m].mean()) if n else None,
        }
    return table


# ---------------------------------------------------------------------------------------------
# The proposal
# ---------------------------------------------------------------------------------------------


def _fitted_ratio_sets(aspect: Tensor) -> list[tuple[float, ...]]:
    """Two ratio sets fitted to the boxes: quantiles of log(h/w) (3 and 5 ratios), rounded to
    two significant digits, so that most of the shapes present get an anchor shape near them."""
    if aspect.numel() == 0:
        return []
    log_r = aspect.log()
    sets = []
    for qs in ((1 / 6, 0.5, 5 / 6), (0.1, 0.3, 0.5, 0.7, 0.9)):
        values = torch.quantile(log_r, torch.tensor(qs, dtype=log_r.dtype)).exp().tolist()
        rounded = tuple(sorted({float(f"{v:.2g}") for v in values}))
        sets.append(rounded)
    return sets


def candidate_settings(configured: AnchorSetting, aspect: Tensor) -> list[AnchorSetting]:
    """The search space: sizes base·2^l (the paper's one octave per level, Lin et al. 2017 §4)
    for base = configured P3 size · 2^(k/4), k = -12..4; scales per octave 1-4; RATIO_SETS, the
    configured ratios and two sets fitted to the data. The configured setting is included."""
    base0 = float(configured.sizes[0])
    ratio_sets = list(dict.fromkeys([tuple(configured.aspect_ratios), *RATIO_SETS, *_fitted_ratio_sets(aspect)]))
    out = [configured]
    for step in BASE_STEPS:
        base = base0 * 2**step
        sizes = tuple(float(f"{base * 2**lvl:.4g}") for lvl in range(len(configured.sizes)))
        for spo in SCALES_PER_OCTAVE:
            for ratios in ratio_sets:
                out.append(AnchorSetting(sizes, spo, tuple(float(r) for r in ratios)))
    return list(dict.fromkeys(out))


@dataclass
class SearchResult:
    setting: AnchorSetting
    coverage: float  # on the search sample
    mean_best_iou: float


def search_anchors(
    nb: NetworkBoxes,
    candidates: Sequence[AnchorSetting],
    iou_thresh: float,
    offset: float,
    style: str,
    sample: int = SEARCH_SAMPLE,
    seed: int = 0,
) -> list[SearchResult]:
    """Every candidate's coverage on a random sample of at most `sample` boxes, best first
    (coverage, then fewer anchors per location, then mean best IoU).

    Candidates share most of their cell shapes, so the best IoU is computed once per distinct
    (level, shape) on the sample, and each candidate is a max over its columns."""
    n = nb.boxes.shape[0]
    if n > sample:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:sample]
        nb = NetworkBoxes(
            nb.boxes[idx], nb.padded[idx], nb.orig_area[idx], nb.aspect[idx], nb.image_index[idx], nb.num_images
        )
    per_candidate = [_level_shapes(c, style) for c in candidates]
    keys = torch.cat([torch.cat([lv[:, None].double(), sh], 1) for sh, lv in per_candidate])
    unique, inverse = torch.unique(keys.round(decimals=6), dim=0, return_inverse=True)
    table = best_iou_per_shape(nb, unique[:, 1:], unique[:, 0].long(), offset, style)  # (n, U)
    results, start = [], 0
    for cand, (sh, _) in zip(candidates, per_candidate):
        cols = inverse[start : start + len(sh)]
        start += len(sh)
        best = table[:, cols].amax(dim=1)
        results.append(SearchResult(cand, float((best >= iou_thresh).double().mean()), float(best.mean())))
    results.sort(key=lambda r: (-r.coverage, r.setting.anchors_per_location, -r.mean_best_iou))
    return results


def pick_proposal(
    results: Sequence[SearchResult], configured: AnchorSetting, tolerance: float = COVERAGE_TOLERANCE
) -> SearchResult:
    """The configured setting when its coverage is within `tolerance` of the best; else, among
    the candidates within `tolerance` of the best, the one whose number of anchors per location
    is closest to the configured one (coverage is not everything: Lin et al. 2017, Table 1c,
    gain AP from more anchors per location at equal reach; and the head keeps its size), then
    the highest mean best IoU (anchors that fit tighter), then the highest coverage."""
    best = results[0].coverage
    for r in results:
        if r.setting == configured and r.coverage >= best - tolerance:
            return r
    close = [r for r in results if r.coverage >= best - tolerance]
    a = configured.anchors_per_location
    return min(close, key=lambda r: (abs(r.setting.anchors_per_location - a), -r.mean_best_iou, -r.coverage))


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def class_imbalance(nb: NetworkBoxes, cfg: ModelConfig, num_classes: int, max_images: int = 1000) -> dict:
    """The premise of the focal loss (§1, §3), measured on a dataset: per image (with boxes, the
    first `max_images`), its anchors at the network input and how the paper's assignment (§4:
    IoU >= fg_iou_thresh positive, < bg_iou_thresh negative, between ignored) splits them; and,
    with K sigmoid outputs, how many negative (anchor, class) pairs each positive pair faces:
    every class of a negative anchor and every other class of a positive one. The paper's COCO
    setting has ~100k anchors per image and K = 80."""
    from ..model.anchors import AnchorGenerator
    from ..model.assignment import IGNORE, Matcher

    gen = AnchorGenerator(
        cfg.anchor_sizes, cfg.scales_per_octave, cfg.aspect_ratios, offset=cfg.anchor_offset, style=cfg.anchor_style
    )
    matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches)
    order = torch.sort(nb.image_index, stable=True).indices
    counts = torch.unique_consecutive(nb.image_index[order], return_counts=True)[1].tolist()[:max_images]
    order = order[: sum(counts)]  # the boxes of those images only
    stats = []  # (anchors, positive, ignored, objects) per image
    for boxes, padded in zip(nb.boxes[order].float().split(counts), nb.padded[order].split(counts)):
        hp, wp = int(padded[0, 0]), int(padded[0, 1])
        shapes = [(-(-hp // s), -(-wp // s)) for s in STRIDES[: len(cfg.anchor_sizes)]]
        anchors, _ = gen(shapes, (hp, wp))
        m = matcher(boxes[None], torch.ones(1, len(boxes), dtype=torch.bool), anchors)[0]
        stats.append((anchors.shape[0], int((m >= 0).sum()), int((m == IGNORE).sum()), len(boxes)))
    if not stats:
        return {"images": 0}
    n, pos, ign, objs = (float(sum(col)) for col in zip(*stats))
    k = len(stats)
    neg_pairs = (n - pos - ign) * num_classes + pos * (num_classes - 1)
    return {
        "images": k,
        "num_classes": num_classes,
        "anchors_per_image": n / k,
        "objects_per_image": objs / k,
        "positive_per_image": pos / k,
        "ignored_per_image": ign / k,
        "positive_per_object": pos / objs,
        "negative_per_positive_anchor": (n - pos - ign) / pos if pos else None,
        "negative_pairs_per_positive_pair": neg_pairs / pos if pos else None,
    }


def coverage_report(
    dataset: DetectionDataset, cfg: ModelConfig, search: bool = True, sample: int = SEARCH_SAMPLE
) -> dict:
    """The anchor coverage of `dataset` under `cfg`'s anchors and input scale, and (search=True)
    a proposed anchor setting with its coverage. A dict (JSON-ready):

    {"dataset", "num_images", "num_boxes", "iou_thresh", "input": {min_size, max_size,
     size_divisor, anchor_style, anchor_offset}, "configured": {"setting", "anchors_per_location",
     "overrides", "buckets": {bucket: {boxes, covered, coverage, mean_best_iou}}}, "proposed":
     same plus "candidates" (how many were scored) and "sample" (boxes per candidate) or None,
     "top": the 5 best candidates [{setting, anchors_per_location, coverage}]}
    """
    nb = network_boxes(dataset, cfg)
    report = coverage_report_from_boxes(nb, cfg, search, sample)
    report["imbalance"] = class_imbalance(nb, cfg, len(dataset.class_names))
    return report


def coverage_report_from_boxes(
    nb: NetworkBoxes, cfg: ModelConfig, search: bool = True, sample: int = SEARCH_SAMPLE
) -> dict:
    thresh = float(cfg.fg_iou_thresh)
    masks = bucket_masks(nb)
    configured = AnchorSetting.of(cfg)
    best = best_anchor_iou(nb, configured, cfg.anchor_offset, cfg.anchor_style)

    def entry(setting: AnchorSetting, best_iou: Tensor) -> dict:
        return {
            "setting": {
                "anchor_sizes": list(setting.sizes),
                "scales_per_octave": setting.scales_per_octave,
                "aspect_ratios": list(setting.aspect_ratios),
            },
            "description": setting.describe(),
            "anchors_per_location": setting.anchors_per_location,
            "overrides": setting.overrides(),
            "buckets": coverage_table(best_iou, masks, thresh),
        }

    report = {
        "dataset": nb.source,
        "num_images": nb.num_images,
        "num_boxes": int(nb.boxes.shape[0]),
        "iou_thresh": thresh,
        "input": {
            "min_size": cfg.min_size,
            "max_size": cfg.max_size,
            "size_divisor": cfg.size_divisor,
            "anchor_style": cfg.anchor_style,
            "anchor_offset": cfg.anchor_offset,
        },
        "configured": entry(configured, best),
        "proposed": None,
        "top": [],
        # for the plot; not part of the JSON output
        "_boxes": nb,
        "_best_configured": best,
        "_best_proposed": None,
    }
    if search and nb.boxes.shape[0]:
        candidates = candidate_settings(configured, nb.aspect)
        results = search_anchors(nb, candidates, thresh, cfg.anchor_offset, cfg.anchor_style, sample)
        pick = pick_proposal(results, configured)
        best_p = best_anchor_iou(nb, pick.setting, cfg.anchor_offset, cfg.anchor_style)  # on every box
        report["proposed"] = {
            **entry(pick.setting, best_p),
            "candidates": len(candidates),
            "sample": min(sample, int(nb.boxes.shape[0])),
        }
        report["top"] = [
            {
                "description": r.setting.describe(),
                "anchors_per_location": r.setting.anchors_per_location,
                "coverage": r.coverage,
            }
            for r in results[:5]
        ]
        report["_best_proposed"] = best_p
    return report


__all__ = [
    "ASPECT_BUCKETS",
    "AnchorSetting",
    "NetworkBoxes",
    "SIZE_BUCKETS",
    "best_anchor_iou",
    "best_iou_per_shape",
    "bucket_masks",
    "candidate_settings",
    "coverage_report",
    "coverage_report_from_boxes",
    "coverage_table",
    "input_geometry",
    "network_boxes",
    "pick_proposal",
    "search_anchors",
]

"""COCO-style evaluation of detections: AP, AP50, AP75, AP_S/M/L (Lin et al. 2017, §5: COCO's AP over IoU .5:.95).

The model's eval-mode output (per image: `boxes` (n, 4) xyxy in input-image pixels, `scores`
(n,), `labels` (n,) int64 contiguous 0..K-1) becomes COCO results JSON (`bbox` xywh,
`category_id` mapped through `label_to_cat_id`, `score`), scored with faster-coco-eval (default)
or pycocotools (the reference implementation; both give the same numbers, tests/engine/test_metrics.py).
All metrics are reported in percent, as in the paper's tables.

Distributed use: each rank runs its own `CocoEvaluator`; the engine gathers the plain lists
`(evaluator.image_ids, evaluator.results())` with `torch.distributed.all_gather_object` and feeds
them to one evaluator with `extend`, or calls `evaluate_results(coco_gt, results, image_ids)`.
An image seen twice (DistributedSampler pads the last batch with repeats) is counted once.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..utils.io import atomic_write

BACKENDS = ("faster_coco_eval", "pycocotools")
DEFAULT_BACKEND = "faster_coco_eval"

# Keys of `evaluate()`'s summary, in the order of COCOeval.stats (both backends, default params:
# IoU .50:.05:.95, maxDets 1/10/100, areas small < 32², medium 32²-96², large > 96²).
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AP_TABLE_COLUMNS = (("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "AP_S"), ("APm", "AP_M"), ("APl", "AP_L"))


# ---------------------------------------------------------------------------------------------
# Detections -> COCO results
# ---------------------------------------------------------------------------------------------


def detections_to_results(image_id: int, detections: Mapping[str, Any], label_to_cat_id: Sequence[int]) -> list[dict]:
    """One image's detections as COCO result dicts.

    detections: {"boxes": (n, 4) xyxy pixels, "scores": (n,), "labels": (n,) ints in 0..K-1}, torch
    tensors or numpy arrays. Returns [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].
    """
    boxes = _to_numpy(detections["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(detections["scores"]).astype(np.float64).reshape(-1)
    labels = _to_numpy(detections["labels"]).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"image {image_id}: boxes/scores/labels lengths differ: {len(boxes)}/{len(scores)}/{len(labels)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(label_to_cat_id)):
        raise ValueError(
            f"image {image_id}: labels must lie in 0..{len(label_to_cat_id) - 1} (contiguous), got "
            f"{labels.min()}..{labels.max()}"
        )
    cat_ids = np.asarray(label_to_cat_id, dtype=np.int64)[labels]
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    image_id = int(image_id)
    return [
        {"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
        for c, b, s in zip(cat_ids.tolist(), xywh.tolist(), scores.tolist())
    ]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()  # bf16/fp16 outputs have no numpy dtype
        return x.numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def prepare_ground_truth(coco_gt: Mapping[str, Any]) -> dict:
    """A copy of a COCO ground-truth dict that both backends evaluate correctly.

    Fills what converted datasets (VOC, CSV) often lack: `area` (box area), `iscrowd` (0), and
    annotation ids. Ids are renumbered 1..N when any is missing, repeated or 0, because both
    backends use 0 as "unmatched" when matching, so a GT box with id 0 never counts as found.
    The caller's dict is not modified (pycocotools writes an `ignore` flag into each annotation).
    """
    anns = [dict(a) for a in coco_gt.get("annotations", [])]
    for a in anns:
        x, y, w, h = a["bbox"]
        a.setdefault("area", float(w) * float(h))
        a.setdefault("iscrowd", 0)
    ids = [a.get("id") for a in anns]
    if None in ids or 0 in ids or len(set(ids)) != len(ids):
        for i, a in enumerate(anns, start=1):
            a["id"] = i
    gt = {k: v for k, v in coco_gt.items() if k not in ("annotations",)}
    gt["images"] = [dict(im) for im in coco_gt.get("images", [])]
    gt["categories"] = [dict(c) for c in coco_gt.get("categories", [])]
    gt["annotations"] = anns
    gt.setdefault("info", {})
    return gt


def _load_gt(gt: dict, backend: str):
    """The backend's COCO object for a dict from `prepare_ground_truth` (stdout silenced)."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO

        return COCO(gt, print_function=_silent)
    if backend == "pycocotools":
        from pycocotools.coco import COCO

        coco = COCO()  # pycocotools' constructor only reads files
        coco.dataset = gt
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
    raise ValueError(f"unknown evaluation backend {backend!r}; expected one of {BACKENDS}")


def _load_results(coco_gt, results: list[dict], verbose: bool):
    # loadRes writes id/area/segmentation into each dict it is given: hand it copies.
    results = [dict(r) for r in results]
    if not results:
        # pycocotools' loadRes indexes results[0]; build the empty result set by hand.
        dt = type(coco_gt)()
        dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        with _maybe_silent(verbose):
            dt.createIndex()
        return dt
    with _maybe_silent(verbose):
        return coco_gt.loadRes(results)


def _silent(*args, **kwargs) -> None:
    pass


def _maybe_silent(verbose: bool):
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _run_cocoeval(coco_gt, coco_dt, backend: str, image_ids: Sequence[int] | None, verbose: bool):
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=print if verbose else _silent)
    else:
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco_gt, coco_dt, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted({int(i) for i in image_ids})
    with _maybe_silent(verbose):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _percent(x: float) -> float:
    # COCOeval reports -1 where nothing can be measured (no GT in that area range, say).
    return float("nan") if x < 0 else 100.0 * float(x)


def evaluate_results(
    coco_gt: Mapping[str, Any] | Any,
    results: list[dict],
    image_ids: Iterable[int] | None = None,
    backend: str = DEFAULT_BACKEND,
    verbose: bool = False,
) -> dict:
    """COCO bbox metrics of a results list against ground truth.

    coco_gt: a COCO ground-truth dict (or a backend COCO object built from
    `prepare_ground_truth`). image_ids: the images to score; None = every GT image. Images in
    that set without detections count as misses; images without GT only contribute false
    positives; crowd GT boxes are ignore regions (the COCO rules).

    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
    "ARl": percent, NaN where undefined; "per_class": {name (or cat id): AP in percent, NaN for
    a category with no GT box in the evaluated images, which the mean AP leaves out}}.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; expected one of {BACKENDS}")
    gt = _load_gt(prepare_ground_truth(coco_gt), backend) if isinstance(coco_gt, Mapping) else coco_gt
    if image_ids is not None:
        image_ids = list(image_ids)
    dt = _load_results(gt, results, verbose)
    ev = _run_cocoeval(gt, dt, backend, image_ids, verbose)

    metrics: dict[str, Any] = {k: _percent(v) for k, v in zip(SUMMARY_KEYS, ev.stats[: len(SUMMARY_KEYS)])}
    # precision: [T iou thresholds, R recall points, K categories, A areas ("all" first), M maxDets]
    precision = np.asarray(ev.eval["precision"])
    cat_ids = list(ev.params.catIds)
    names = _category_names(gt, cat_ids)
    per_class = {}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        per_class[names[cat_id]] = 100.0 * float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    metrics["per_class"] = per_class
    return metrics


def _category_names(coco_gt, cat_ids: Sequence[int]) -> dict[int, str | int]:
    """Category names where present and unique, else the category id."""
    cats = coco_gt.cats
    names = [cats.get(c, {}).get("name") for c in cat_ids]
    unique = len(set(names)) == len(names) and None not in names
    return {c: (n if unique else c) for c, n in zip(cat_ids, names)}


class CocoEvaluator:
    """Accumulates detections over a data set and scores them with the COCO metrics.

    coco_gt: COCO ground-truth dict ("images", "annotations", "categories"). label_to_cat_id:
    the COCO category id of each contiguous model label 0..K-1 (e.g. [1, 3, 7]).
    backend: "faster_coco_eval" (default, C++) or "pycocotools" (the reference).
    verbose: let the backend print its usual summary to stdout.
    """

    def __init__(
        self,
        coco_gt: Mapping[str, Any],
        label_to_cat_id: Sequence[int],
        backend: str = DEFAULT_BACKEND,
        verbose: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown evaluation backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        self.verbose = verbose
        self.label_to_cat_id = [int(c) for c in label_to_cat_id]
        self._gt_dict = prepare_ground_truth(coco_gt)
        gt_cat_ids = {c["id"] for c in self._gt_dict["categories"]}
        missing = sorted(set(self.label_to_cat_id) - gt_cat_ids)
        if missing:
            raise ValueError(f"label_to_cat_id has category ids {missing} absent from the ground truth's categories")
        self._gt_image_ids = {int(im["id"]) for im in self._gt_dict["images"]}
        self._coco_gt = None  # the backend's COCO object, built once on first evaluate()
        self._by_image: dict[int, list[dict]] = {}

    def reset(self) -> None:
        self._by_image = {}

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images seen so far (sorted)."""
        return sorted(self._by_image)

    def update(self, image_ids: Sequence[int], detections: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch: `detections[i]` is the model's output for image `image_ids[i]`."""
        if len(image_ids) != len(detections):
            raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection dicts")
        for image_id, det in zip(image_ids, detections):
            image_id = int(image_id)
            self._check_image_id(image_id)
            self._by_image.setdefault(image_id, detections_to_results(image_id, det, self.label_to_cat_id))

    def extend(self, results: Iterable[Mapping[str, Any]], image_ids: Iterable[int] = ()) -> None:
        """Add results gathered from another rank: its `results()` and its `image_ids` (which
        also covers its images without detections). Images already present are skipped."""
        grouped: dict[int, list[dict]] = {int(i): [] for i in image_ids}
        for r in results:
            grouped.setdefault(int(r["image_id"]), []).append(dict(r))
        for image_id, rs in grouped.items():
            self._check_image_id(image_id)
            self._by_image.setdefault(image_id, rs)

    def merge(self, other: "CocoEvaluator") -> None:
        """Add another evaluator's images (same ground truth assumed)."""
        self.extend(other.results(), other.image_ids)

    def results(self) -> list[dict]:
        """The COCO results JSON content, ordered by image id."""
        return [dict(r) for i in sorted(self._by_image) for r in self._by_image[i]]

    def write_results(self, path: str | os.PathLike) -> None:
        """Write `results()` as JSON, atomically (temp file in the same folder, then rename)."""
        atomic_write(path, json.dumps(self.results()))

    def evaluate(self, image_ids: Iterable[int] | None = None) -> dict:
        """Metrics (see `evaluate_results`) over `image_ids`; by default the images seen by
        `update`/`extend`, or every GT image when none was seen."""
        if image_ids is None:
            image_ids = self.image_ids or None
        if self._coco_gt is None:
            self._coco_gt = _load_gt(self._gt_dict, self.backend)
        return evaluate_results(self._coco_gt, self.results(), image_ids, backend=self.backend, verbose=self.verbose)

    def _check_image_id(self, image_id: int) -> None:
        if image_id not in self._gt_image_ids:
            raise KeyError(f"image id {image_id} is not in the ground truth's images")


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def format_ap_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """The paper's layout (Table 1e / 2): a Markdown row of AP, AP50, AP75, AP_S, AP_M, AP_L,
    one decimal, under an optional bold title line."""
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(h for _, h in AP_TABLE_COLUMNS) + " |")
    lines.append("|" + "---|" * len(AP_TABLE_COLUMNS))
    lines.append("| " + " | ".join(_fmt(metrics.get(k, float("nan"))) for k, _ in AP_TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def format_per_class_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """Per-class AP as a Markdown table `| class | AP |`, in category order; n/a where the class
    has no GT box."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| class | AP |", "|---|---|"]
    lines += [f"| {name} | {_fmt(ap)} |" for name, ap in metrics.get("per_class", {}).items()]
    return "\n".join(lines)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "CocoEvaluator",
    "detections_to_results",
    "evaluate_results",
    "format_ap_table",
    "format_per_class_table",
    "prepare_ground_truth",
]

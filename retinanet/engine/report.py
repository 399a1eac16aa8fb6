"""The numbers of the evaluation report (`retinanet eval --report DIR`), all from pycocotools.

One pycocotools COCOeval run (the reference implementation, whatever `eval.backend` says) over
the project's ground truth and the model's COCO results gives every number here:

- AP, AP50, AP75 and AP by object size (small / medium / large) per class: means of
  `eval["precision"]` (T IoUs x R=101 recall points x K classes x A areas x M maxDets) at area
  "all" or the size's area range, maxDets 100, -1 entries (no ground truth) left out, as COCO.
- Precision-recall curves per class: `eval["precision"]` at IoU 0.5 and its mean over the ten
  IoUs 0.5:0.95 on COCO's 101-point recall grid, with the score at each recall point at IoU 0.5
  (`eval["scores"]`). The mean of a curve's 101 values is the class's AP50 / AP.
- TP / FP / FN, precision, recall and F1 at a score threshold, per class and overall (micro:
  counts summed over classes), from `evalImgs` at IoU 0.5, area "all", maxDets 100: a detection
  with score >= the threshold is a TP when COCO matched it (`dtMatches` > 0), an FP when COCO
  left it unmatched, and neither when COCO ignored it (`dtIgnore`: matched to a crowd box); FN
  is the number of non-crowd ground-truth boxes (`gtIgnore` == 0) minus TP. COCO matches
  greedily in descending score order, so the matching of the detections above a threshold does
  not depend on those below it: counting after matching equals matching the thresholded set.
- The F1-optimal score threshold per class and overall: the detection score s maximising
  F1(s) = 2 TP / (2 TP + FP + FN) over the counts of the detections with score >= s (every
  distinct detection score is a candidate; among equal F1 the highest threshold wins, the one
  that keeps fewer detections). None where no threshold gives a TP (F1 is 0 everywhere).
- The confusion matrix at a score threshold, which COCO's per-class matching does not give; see
  `confusion_matrix` for its rule.

Units: AP in percent (as the project's AP tables); precision, recall, F1 and curves in [0, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import SUMMARY_KEYS, _category_names, _load_gt, _load_results, _run_cocoeval, prepare_ground_truth

REPORT_VERSION = 1
REPORT_FILE = "report.json"
# The default threshold of the thresholded numbers: `retinanet predict`'s (and `demo`'s) default
# --score-thresh, so that the report describes what `predict` keeps unless told otherwise.
DEFAULT_SCORE_THRESH = 0.3
MATCH_IOU = 0.5
SIZES = ("small", "medium", "large")
# The thresholds of the F1 / precision / recall curves drawn against the score threshold (the
# optimum itself is searched over every detection score, not only these).
SCORE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


class ReportError(ValueError):
    """A report folder or file that cannot be used (missing, unreadable, without the number)."""


# ---------------------------------------------------------------------------------------------
# pycocotools' matching, flattened
# ---------------------------------------------------------------------------------------------


def run_pycocotools(coco_gt: Mapping[str, Any], results: Sequence[Mapping], image_ids: Iterable[int] | None = None):
    """(COCOeval after evaluate / accumulate / summarize, its ground-truth COCO, its results COCO)
    of pycocotools on `results` against the ground-truth dict, over `image_ids` (None: all)."""
    gt = _load_gt(prepare_ground_truth(coco_gt), "pycocotools")
    dt = _load_results(gt, [dict(r) for r in results], verbose=False)
    ev = _run_cocoeval(gt, dt, "pycocotools", None if image_ids is None else list(image_ids), verbose=False)
    return ev, gt, dt


def _iou_index(ev, iou: float) -> int:
    thrs = np.asarray(ev.params.iouThrs)
    hit = np.flatnonzero(np.isclose(thrs, iou))
    if not hit.size:
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {thrs.tolist()}")
    return int(hit[0])


def match_table(ev, coco_gt, coco_dt, iou: float = MATCH_IOU) -> tuple[dict, dict]:
    """pycocotools' matching at `iou`, area "all", maxDets 100, as flat arrays.

    Returns (detections, ground truth): detections {"image", "label" (class index in
    ev.params.catIds order), "id", "score", "match" (the matched GT annotation id, 0 = none),
    "ignored" (COCO's dtIgnore), "box" (n, 4) xywh}; ground truth {"image", "label", "id",
    "crowd" (COCO's gtIgnore at area "all": iscrowd), "box"}. Only what COCO evaluated is in it:
    the evaluated images, each image's 100 best detections per class.
    """
    p = ev.params
    t = _iou_index(ev, iou)
    num_images, num_areas, num_t = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
    det: dict[str, list] = {k: [] for k in ("image", "label", "id", "score", "match", "ignored")}
    gt: dict[str, list] = {k: [] for k in ("image", "label", "id", "crowd")}
    for k in range(len(p.catIds)):
        # evalImgs is ordered category, area, image; area 0 is "all".
        for e in ev.evalImgs[k * num_areas * num_images : k * num_areas * num_images + num_images]:
            if e is None:
                continue
            n_dt, n_gt = len(e["dtIds"]), len(e["gtIds"])
            det["image"].append(np.full(n_dt, e["image_id"]))
            det["label"].append(np.full(n_dt, k))
            det["id"].append(np.asarray(e["dtIds"], dtype=np.int64))
            det["score"].append(np.asarray(e["dtScores"], dtype=np.float64))
            det["match"].append(np.asarray(e["dtMatches"], dtype=np.int64).reshape(num_t, n_dt)[t])
            det["ignored"].append(np.asarray(e["dtIgnore"], dtype=bool).reshape(num_t, n_dt)[t])
            gt["image"].append(np.full(n_gt, e["image_id"]))
            gt["label"].append(np.full(n_gt, k))
            gt["id"].append(np.asarray(e["gtIds"], dtype=np.int64))
            gt["crowd"].append(np.asarray(e["gtIgnore"], dtype=bool).reshape(n_gt))
    dtypes = {"score": np.float64, "ignored": bool, "crowd": bool}
    det_arr = {k: np.concatenate(v) if v else np.zeros(0, dtypes.get(k, np.int64)) for k, v in det.items()}
    gt_arr = {k: np.concatenate(v) if v else np.zeros(0, dtypes.get(k, np.int64)) for k, v in gt.items()}
    det_arr["box"] = np.asarray([coco_dt.anns[i]["bbox"] for i in det_arr["id"].tolist()], np.float64).reshape(-1, 4)
    gt_arr["box"] = np.asarray([coco_gt.anns[i]["bbox"] for i in gt_arr["id"].tolist()], np.float64).reshape(-1, 4)
    return det_arr, gt_arr


# ---------------------------------------------------------------------------------------------
# Counts at a threshold, and the F1-optimal threshold
# ---------------------------------------------------------------------------------------------


def prf(tp: int, fp: int, fn: int) -> dict:
    """{"tp", "fp", "fn", "precision", "recall", "f1"}; precision None without detections,
    recall None without ground truth, F1 = 2TP / (2TP + FP + FN) (None when all three are 0)."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def counts_at(det: Mapping, gt: Mapping, num_classes: int, score_thresh: float) -> tuple[list[dict], dict]:
    """(per class, overall) `prf` of the detections with score >= score_thresh, from COCO's matching."""
    live = (det["score"] >= score_thresh) & ~det["ignored"]
    tp = np.bincount(det["label"][live & (det["match"] > 0)], minlength=num_classes)
    fp = np.bincount(det["label"][live & (det["match"] == 0)], minlength=num_classes)
    npos = np.bincount(gt["label"][~gt["crowd"]], minlength=num_classes)
    per_class = [prf(tp[k], fp[k], npos[k] - tp[k]) for k in range(num_classes)]
    return per_class, prf(tp.sum(), fp.sum(), npos.sum() - tp.sum())


def _cumulative(scores: np.ndarray, is_tp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct scores descending, TP and FP counts of the detections with score >= each)."""
    order = np.argsort(-scores, kind="mergesort")
    s, hit = scores[order], is_tp[order]
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)  # the last of each tie group
    return s[last], tp[last], fp[last]


def f1_optimal(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> dict:
    """The F1-optimal threshold of detections (scores, whether each is a TP) against `num_gt`
    ground-truth boxes: {"score_thresh", **prf} at it; score_thresh None (and the counts with no
    detection kept) when no threshold gives a TP."""
    s, tp, fp = _cumulative(np.asarray(scores, np.float64), np.asarray(is_tp, bool))
    f1 = 2 * tp / np.maximum(2 * tp + fp + num_gt - tp, 1)
    if not s.size or tp.max() == 0:
        return {"score_thresh": None, **prf(0, 0, num_gt)}
    best = int(np.argmax(f1))  # the first maximum: the highest threshold among equal F1
    return {"score_thresh": float(s[best]), **prf(tp[best], fp[best], num_gt - tp[best])}


def best_thresholds(det: Mapping, gt: Mapping, num_classes: int) -> tuple[list[dict], dict]:
    """(per class, overall) `f1_optimal` over COCO's non-ignored detections; overall pools the
    detections of every class (micro F1)."""
    keep = ~det["ignored"]
    scores, hit, labels = det["score"][keep], (det["match"] > 0)[keep], det["label"][keep]
    npos = np.bincount(gt["label"][~gt["crowd"]], minlength=num_classes)
    per_class = [f1_optimal(scores[labels == k], hit[labels == k], int(npos[k])) for k in range(num_classes)]
    return per_class, f1_optimal(scores, hit, int(npos.sum()))


def threshold_curves(det: Mapping, gt: Mapping, num_classes: int, grid: np.ndarray = SCORE_GRID) -> dict:
    """Precision, recall and F1 against the score threshold on `grid`, per class and overall:
    {"score_thresh": grid, "per_class": [{"precision", "recall", "f1"}], "overall": {...}}."""
    keep = ~det["ignored"]
    scores, hit, labels = det["score"][keep], (det["match"] > 0)[keep], det["label"][keep]
    npos = np.bincount(gt["label"][~gt["crowd"]], minlength=num_classes)

    def curves(sc: np.ndarray, tp_flags: np.ndarray, n_gt: int) -> dict:
        order = np.argsort(-sc, kind="mergesort")
        tp_cum = np.r_[0, np.cumsum(tp_flags[order])]
        # detections with score >= g: those before the first one below g in descending order
        n = np.searchsorted(-sc[order], -grid, side="right")
        tp, fp = tp_cum[n], n - tp_cum[n]
        return {
            "precision": [t / (t + f) if t + f else None for t, f in zip(tp.tolist(), fp.tolist())],
            "recall": [t / n_gt if n_gt else None for t in tp.tolist()],
            "f1": [2 * t / (t + f + n_gt) if t + f + n_gt else None for t, f in zip(tp.tolist(), fp.tolist())],
        }

    return {
        "score_thresh": grid.tolist(),
        "per_class": [curves(scores[labels == k], hit[labels == k], int(npos[k])) for k in range(num_classes)],
        "overall": curves(scores, hit, int(npos.sum())),
    }


# ---------------------------------------------------------------------------------------------
# The confusion matrix
# ---------------------------------------------------------------------------------------------


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of xywh boxes, as pycocotools computes it for non-crowd boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0], b[:, 0])
    h = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1], b[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def confusion_matrix(
    det: Mapping, gt: Mapping, num_classes: int, score_thresh: float, iou: float = MATCH_IOU
) -> np.ndarray:
    """(K + 1, K + 1) counts: row = ground-truth class, column = predicted class, index K =
    background (a column-K entry is a missed box, a row-K entry a detection of nothing).

    The rule, for the detections with score >= score_thresh, image by image:
    1. Same class: COCO's own matching at IoU `iou` (from `match_table`; greedy by score, each
       detection takes the free box of its class with the highest IoU >= `iou`): a matched
       detection is a TP, on the diagonal. Detections COCO ignores (matched to a crowd box of
       their class) are left out: crowd boxes make neither false positives nor misses.
    2. Class swaps: the detections COCO left unmatched, in descending score order, each take the
       free non-crowd box of another class with the highest IoU >= `iou` (one box per detection,
       one detection per box): gt class i predicted as j counts at [i, j].
    3. What is left: unmatched detections at [K, j], unmatched non-crowd boxes at [i, K].
    So the diagonal holds COCO's TP, column j sums to COCO's TP + FP of class j and row i to its
    non-crowd box count (`counts_at`, same threshold): swaps are COCO false positives (of the
    predicted class) and misses (of the true one) that the matrix tells apart from the others.
    A detection of one class on a crowd box of another is a false positive, as in COCO.
    """
    k_bg = num_classes
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    live = (det["score"] >= score_thresh) & ~det["ignored"]
    tp = live & (det["match"] > 0)
    np.add.at(cm, (det["label"][tp], det["label"][tp]), 1)
    free_gt = ~gt["crowd"] & ~np.isin(gt["id"], det["match"][tp])
    fp = np.flatnonzero(live & (det["match"] == 0))
    # Group the candidates by image: the unmatched detections and the free boxes of each.
    fp_by_image = _group(det["image"][fp], fp)
    gt_idx = np.flatnonzero(free_gt)
    gt_by_image = _group(gt["image"][gt_idx], gt_idx)
    for image, d in fp_by_image.items():
        g = gt_by_image.get(image)
        d = d[np.argsort(-det["score"][d], kind="mergesort")]
        if g is None:
            np.add.at(cm, (k_bg, det["label"][d]), 1)
            continue
        ious = box_iou_xywh(det["box"][d], gt["box"][g])
        ious[det["label"][d][:, None] == gt["label"][g][None, :]] = -1.0  # swaps only: step 1 did same-class
        taken = np.zeros(len(g), dtype=bool)
        for row, di in enumerate(d.tolist()):
            cand = np.where(taken, -1.0, ious[row])
            j = int(np.argmax(cand))
            if cand[j] >= iou:
                taken[j] = True
                free_gt[g[j]] = False
                cm[gt["label"][g[j]], det["label"][di]] += 1
            else:
                cm[k_bg, det["label"][di]] += 1
    np.add.at(cm, (gt["label"][free_gt], k_bg), 1)
    return cm


def _group(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """{key: the values with that key, in their order}, without a Python loop over the values."""
    if not keys.size:
        return {}
    order = np.argsort(keys, kind="mergesort")
    uniq, starts = np.unique(keys[order], return_index=True)
    return {int(k): v for k, v in zip(uniq.tolist(), np.split(values[order], starts[1:]))}


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _ap(p: np.ndarray) -> float | None:
    """COCO's AP of a slice of eval["precision"] in percent: the mean of its entries > -1."""
    valid = p > -1
    return 100.0 * float(p[valid].mean()) if valid.any() else None


def _curve(p: np.ndarray) -> list[float | None]:
    """A 101-point curve with COCO's -1 (no ground truth) as None."""
    return [None if v <= -1 else float(v) for v in p.tolist()]


def build_report(
    coco_gt: Mapping[str, Any],
    results: Sequence[Mapping],
    image_ids: Iterable[int] | None = None,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    info: Mapping[str, Any] | None = None,
) -> dict:
    """Every number of the evaluation report, JSON-ready (see the module docstring).

    coco_gt: COCO ground-truth dict; results: COCO results (`CocoEvaluator.results()` or a
    results JSON's content); image_ids: the evaluated images (None: all GT images; an image in
    it without detections counts its boxes as misses); score_thresh: the threshold of the
    counts and the confusion matrix; info: what was evaluated (weights, dataset, ...), copied.
    """
    ev, gt_coco, dt_coco = run_pycocotools(coco_gt, results, image_ids)
    p = ev.params
    cat_ids = [int(c) for c in p.catIds]
    names = [str(n) for n in _category_names(gt_coco, cat_ids).values()]
    num_classes = len(cat_ids)
    precision, scores = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["scores"])
    t50, t75 = _iou_index(ev, 0.5), _iou_index(ev, 0.75)
    areas = list(p.areaRngLbl)
    det, gt = match_table(ev, gt_coco, dt_coco, MATCH_IOU)
    num_gt_by_area = _num_gt_by_area(ev)

    per_class_ap = []
    for k in range(num_classes):
        row = {
            "AP": _ap(precision[:, :, k, 0, -1]),
            "AP50": _ap(precision[t50, :, k, 0, -1]),
            "AP75": _ap(precision[t75, :, k, 0, -1]),
        }
        for size in SIZES:
            row[f"AP_{size}"] = _ap(precision[:, :, k, areas.index(size), -1])
        row["num_gt"] = {area: int(num_gt_by_area[area][k]) for area in areas}
        per_class_ap.append(row)

    recall_grid = np.asarray(p.recThrs)
    max_recall = np.asarray(ev.eval["recall"])[t50, :, 0, -1]
    curves50, curves_mean, scores50 = {}, {}, {}
    for k, name in enumerate(names):
        curves50[name] = _curve(precision[t50, :, k, 0, -1])
        pk = precision[:, :, k, 0, -1]
        curves_mean[name] = _curve(pk.mean(0) if (pk > -1).all() else np.full(pk.shape[1], -1.0))
        # the score of the detection at which each recall point is first reached; None past the
        # class's highest recall (COCO writes 0 there)
        reached = (recall_grid <= max_recall[k] + 1e-12) & bool((det["label"] == k).any())
        scores50[name] = [float(s) if ok and s > -1 else None for s, ok in zip(scores[t50, :, k, 0, -1], reached)]

    at_class, at_all = counts_at(det, gt, num_classes, score_thresh)
    best_class, best_all = best_thresholds(det, gt, num_classes)
    cm = confusion_matrix(det, gt, num_classes, score_thresh, MATCH_IOU)
    curves_thr = threshold_curves(det, gt, num_classes)
    return _jsonable(
        {
            "version": REPORT_VERSION,
            "info": dict(info or {}),
            "num_images": len(p.imgIds),
            "classes": names,
            "category_ids": cat_ids,
            "score_thresh": float(score_thresh),
            "iou_thresh": MATCH_IOU,
            "max_dets": int(p.maxDets[-1]),
            "coco": {key: _percent_or_none(v) for key, v in zip(SUMMARY_KEYS, ev.stats)},
            "per_class": {
                name: {**per_class_ap[k], "at_thresh": at_class[k], "best": best_class[k]}
                for k, name in enumerate(names)
            },
            "overall": {"at_thresh": at_all, "best": best_all},
            "pr_curves": {
                "recall": recall_grid.tolist(),
                "iou_0.5": {"precision": curves50, "score": scores50},
                "iou_0.5:0.95": {"precision": curves_mean},
            },
            "threshold_curves": {
                "score_thresh": curves_thr["score_thresh"],
                "per_class": dict(zip(names, curves_thr["per_class"])),
                "overall": curves_thr["overall"],
            },
            "confusion_matrix": {
                "rows": "ground truth: " + ", ".join(names) + ", background",
                "columns": "predicted: " + ", ".join(names) + ", background",
                "labels": [*names, "background"],
                "score_thresh": float(score_thresh),
                "iou_thresh": MATCH_IOU,
                "matrix": cm.tolist(),
            },
        }
    )


def _num_gt_by_area(ev) -> dict[str, np.ndarray]:
    """{area label: (K,) non-ignored GT boxes of each class in that area range}, from evalImgs."""
    p = ev.params
    num_images, num_areas = len(p.imgIds), len(p.areaRng)
    out = {}
    for a, label in enumerate(p.areaRngLbl):
        counts = np.zeros(len(p.catIds), dtype=np.int64)
        for k in range(len(p.catIds)):
            start = (k * num_areas + a) * num_images
            counts[k] = sum(
                int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in ev.evalImgs[start : start + num_images] if e
            )
        out[label] = counts
    return out


def _percent_or_none(x: float) -> float | None:
    return None if x < 0 else 100.0 * float(x)


def _jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars as Python ones, NaN as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---------------------------------------------------------------------------------------------
# Reading a report back (predict --score-thresh best:DIR)
# ---------------------------------------------------------------------------------------------


def read_report(path: str | Path) -> tuple[dict, Path]:
    """(the report, its file) of a report folder or its report.json; ReportError naming the file
    and the problem otherwise."""
    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    if not path.exists():
        raise ReportError(f"{path}: no such report folder (write one with `retinanet eval ... --report {path}`)")
    if not file.is_file():
        raise ReportError(f"{path} has no {REPORT_FILE}: write it with `retinanet eval ... --report {path}`")
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{file} is not a readable JSON report: {e}") from None
    if not isinstance(report, dict) or "overall" not in report or "classes" not in report:
        raise ReportError(f"{file} is not a report of `retinanet eval --report` (no 'overall' / 'classes')")
    return report, file


def best_threshold(path: str | Path) -> tuple[float, dict, Path]:
    """(the overall F1-optimal score threshold, its {precision, recall, f1, ...}, the file) of a
    report folder or report.json; ReportError when it has none."""
    report, file = read_report(path)
    best = report["overall"].get("best") if isinstance(report["overall"], dict) else None
    thresh = best.get("score_thresh") if isinstance(best, dict) else None
    if not isinstance(thresh, (int, float)) or isinstance(thresh, bool):
        raise ReportError(
            f"{file} has no F1-optimal score threshold: the evaluated model found no object at IoU "
            f"{report.get('iou_thresh', MATCH_IOU)} (give --score-thresh a number)"
        )
    return float(thresh), best, file


__all__ = [
    "DEFAULT_SCORE_THRESH",
    "MATCH_IOU",
    "REPORT_FILE",
    "ReportError",
    "best_threshold",
    "best_thresholds",
    "box_iou_xywh",
    "build_report",
    "confusion_matrix",
    "counts_at",
    "f1_optimal",
    "match_table",
    "prf",
    "read_report",
    "run_pycocotools",
    "threshold_curves",
]

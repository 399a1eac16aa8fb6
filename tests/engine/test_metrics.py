"""COCO evaluation: backend parity, hand-checkable cases, edge cases, tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from retinanet.engine.metrics import (
    BACKENDS,
    SUMMARY_KEYS,
    CocoEvaluator,
    detections_to_results,
    evaluate_results,
    format_ap_table,
    format_per_class_table,
)

CAT_IDS = [1, 3, 7]  # non-contiguous on purpose: model labels 0, 1, 2
CAT_NAMES = ["circle", "square", "triangle"]
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def make_gt(num_images: int = 50, seed: int = 0) -> dict:
    """Synthetic COCO ground truth: boxes of every COCO size range, a few crowd regions, and a
    few images without any box."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id in range(1, num_images + 1):
        w, h = 640, 480
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        n = 0 if image_id % 10 == 0 else int(rng.integers(1, 8))
        for _ in range(n):
            side = float(np.exp(rng.uniform(np.log(8), np.log(300))))  # small, medium and large
            ratio = float(np.exp(rng.uniform(-0.7, 0.7)))
            bw, bh = min(side * ratio, w - 1), min(side / ratio, h - 1)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(CAT_IDS)),
                    "bbox": [float(x), float(y), float(bw), float(bh)],
                    "area": float(bw * bh),
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
    cats = [{"id": c, "name": n} for c, n in zip(CAT_IDS, CAT_NAMES)]
    return {"images": images, "annotations": anns, "categories": cats}


def make_detections(gt: dict, seed: int = 1) -> dict[int, dict]:
    """Per image {"boxes" xyxy, "scores", "labels"} tensors: jittered GT boxes (some with the
    wrong class), misses, and false positives, with random scores."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if rng.random() < 0.15:  # miss
            continue
        x, y, w, h = a["bbox"]
        x, y = x + rng.normal(0, 0.08) * w, y + rng.normal(0, 0.08) * h
        w, h = w * np.exp(rng.normal(0, 0.1)), h * np.exp(rng.normal(0, 0.1))
        label = CAT_IDS.index(a["category_id"])
        if rng.random() < 0.05:
            label = int(rng.integers(0, len(CAT_IDS)))
        by_image[a["image_id"]].append(([x, y, x + w, y + h], float(rng.random()), label))
    for image_id in by_image:
        for _ in range(int(rng.integers(0, 4))):  # false positives
            x, y = rng.uniform(0, 600), rng.uniform(0, 440)
            w, h = rng.uniform(4, 200), rng.uniform(4, 200)
            by_image[image_id].append(([x, y, x + w, y + h], float(rng.random()) * 0.7, int(rng.integers(0, 3))))
    return {i: _as_tensors(dets) for i, dets in by_image.items()}


def _as_tensors(dets: list) -> dict:
    if not dets:
        return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    boxes, scores, labels = zip(*dets)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def perfect_detections(gt: dict) -> dict[int, dict]:
    by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        by_image[a["image_id"]].append(([x, y, x + w, y + h], 1.0, CAT_IDS.index(a["category_id"])))
    return {i: _as_tensors(d) for i, d in by_image.items()}


def run(gt: dict, dets: dict[int, dict], backend: str = "faster_coco_eval") -> dict:
    ev = CocoEvaluator(gt, CAT_IDS, backend=backend)
    ids = sorted(dets)
    ev.update(ids, [dets[i] for i in ids])
    return ev.evaluate()


def one_box_gt(crowd_box: list[float] | None = None) -> dict:
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 100.0, 100.0], "area": 1e4, "iscrowd": 0}]
    if crowd_box is not None:
        anns.append(
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "bbox": crowd_box,
                "area": crowd_box[2] * crowd_box[3],
                "iscrowd": 1,
            }
        )
    cats = [{"id": c, "name": n} for c, n in zip(CAT_IDS, CAT_NAMES)]
    return {"images": [{"id": 1, "width": 400, "height": 400}], "annotations": anns, "categories": cats}


# --- (a) the two backends agree ----------------------------------------------------------------


def test_backends_agree_on_a_generated_results_file(tmp_path):
    gt = make_gt()
    dets = make_detections(gt)
    ev = CocoEvaluator(gt, CAT_IDS)
    ids = sorted(dets)
    ev.update(ids, [dets[i] for i in ids])
    path = tmp_path / "results.json"
    ev.write_results(path)
    results = json.loads(path.read_text())
    assert results == ev.results()
    assert len(results) > 100

    fast = evaluate_results(gt, results, backend="faster_coco_eval")
    ref = evaluate_results(gt, results, backend="pycocotools")
    assert ev.evaluate() == fast
    for key in SUMMARY_KEYS:
        assert not math.isnan(ref[key]), key  # the data covers every area range
        assert fast[key] == pytest.approx(ref[key], abs=0.1), key
    # A realistic, imperfect score: neither trivial nor broken.
    assert 20.0 < ref["AP"] < 90.0 and ref["AP50"] > ref["AP75"]
    assert fast["per_class"].keys() == ref["per_class"].keys() == set(CAT_NAMES)
    for name in CAT_NAMES:
        assert fast["per_class"][name] == pytest.approx(ref["per_class"][name], abs=0.1)
    # Mean AP is the mean of the per-class APs.
    assert ref["AP"] == pytest.approx(np.mean(list(ref["per_class"].values())), abs=1e-6)


# --- (b) perfect, (c) none ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections_give_ap_100(backend):
    gt = make_gt(num_images=20)
    m = run(gt, perfect_detections(gt), backend)
    for key in AP_KEYS + ("AR100",):
        assert m[key] == pytest.approx(100.0), key
    assert all(v == pytest.approx(100.0) for v in m["per_class"].values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_give_ap_0(backend, capsys):
    gt = make_gt(num_images=10)
    empty = _as_tensors([])
    m = run(gt, {im["id"]: empty for im in gt["images"]}, backend)
    for key in AP_KEYS + ("AR1", "AR100"):
        assert m[key] == 0.0, key
    # An evaluator that saw nothing scores every GT image: also 0, no crash.
    m = CocoEvaluator(gt, CAT_IDS, backend=backend).evaluate()
    assert m["AP"] == 0.0
    assert capsys.readouterr().out == ""  # backend spam suppressed


# --- (d) category mapping -----------------------------------------------------------------------


def test_labels_map_to_category_ids():
    det = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([1]),
    }
    (r,) = detections_to_results(5, det, CAT_IDS)
    assert r["category_id"] == 3 and r["image_id"] == 5
    assert r["bbox"] == pytest.approx([10.0, 20.0, 40.0, 60.0])  # xyxy -> xywh
    assert r["score"] == pytest.approx(0.9)

    ev = CocoEvaluator(one_box_gt(), CAT_IDS)
    ev.update(
        [1],
        [
            {
                "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]),
                "scores": torch.tensor([0.9]),
                "labels": torch.tensor([1]),
            }
        ],
    )
    assert [r["category_id"] for r in ev.results()] == [3]
    m = ev.evaluate()
    assert m["AP"] == pytest.approx(100.0)
    assert m["per_class"]["square"] == pytest.approx(100.0)
    # Categories without GT are NaN and left out of the mean.
    assert math.isnan(m["per_class"]["circle"]) and math.isnan(m["per_class"]["triangle"])

    with pytest.raises(ValueError, match="labels"):
        detections_to_results(1, {**det, "labels": torch.tensor([3])}, CAT_IDS)
    with pytest.raises(KeyError, match="99"):
        ev.update([99], [det])


# --- (e) a hand-checkable case ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_box_at_iou_062(backend):
    # GT 100x100 at the origin; detection 100x62 at the origin: IoU = 6200 / 10000 = 0.62, kept
    # off the 0.60 threshold so float rounding cannot decide the case. It matches at IoU
    # thresholds .50, .55, .60 and misses at the 7 higher ones: AP50 100, AP75 0, AP 30.
    ev = CocoEvaluator(one_box_gt(), CAT_IDS, backend=backend)
    ev.update(
        [1],
        [
            {
                "boxes": torch.tensor([[0.0, 0.0, 100.0, 62.0]]),
                "scores": torch.tensor([0.8]),
                "labels": torch.tensor([1]),
            }
        ],
    )
    m = ev.evaluate()
    assert m["AP50"] == pytest.approx(100.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert m["AP"] == pytest.approx(30.0)
    assert math.isnan(m["APm"])  # the GT box is large (1e4 px² > 96²): no medium GT, undefined
    assert math.isnan(m["APs"])  # no small GT box: undefined, not 0
    assert m["APl"] == pytest.approx(30.0)


# --- crowd, empty images, GT ids ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_on_crowd_region_is_ignored(backend):
    gt_box = {"boxes": [[0.0, 0.0, 100.0, 100.0]], "scores": [0.5]}
    # Inside the crowd region: its intersection over the detection's own area is 1 (crowd rule).
    in_crowd = {"boxes": [[210.0, 210.0, 290.0, 290.0]], "scores": [0.9]}  # ranked first

    def ap(crowd: bool) -> float:
        gt = one_box_gt(crowd_box=[150.0, 150.0, 250.0, 250.0])
        gt["annotations"][1]["iscrowd"] = int(crowd)
        det = {
            "boxes": torch.tensor(in_crowd["boxes"] + gt_box["boxes"]),
            "scores": torch.tensor(in_crowd["scores"] + gt_box["scores"]),
            "labels": torch.tensor([1, 1]),
        }
        ev = CocoEvaluator(gt, CAT_IDS, backend=backend)
        ev.update([1], [det])
        return ev.evaluate()["AP50"]

    assert ap(crowd=True) == pytest.approx(100.0)  # the crowd region swallows the detection
    assert ap(crowd=False) < 100.0  # as a normal box: IoU 6400 / 62500 < .5, a false positive


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_without_gt_and_incomplete_gt(backend):
    gt = one_box_gt()
    gt["images"].append({"id": 2, "width": 400, "height": 400})
    for a in gt["annotations"]:  # what a converted VOC/CSV set may look like
        del a["area"], a["iscrowd"]
        a["id"] = 0  # 0 would read as "unmatched" inside COCOeval: must be renumbered
    hit = {
        "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([1]),
    }
    fp = {"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    ev = CocoEvaluator(gt, CAT_IDS, backend=backend)
    ev.update([1, 2], [hit, fp])
    m = ev.evaluate()
    assert m["AP50"] == pytest.approx(50.0, abs=1.0)  # FP first, then the hit: precision 1/2 at recall 1
    assert gt["annotations"][0]["id"] == 0  # the caller's dict is untouched

    gt_empty = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
    m = evaluate_results(gt_empty, [], backend=backend)  # no GT at all: undefined, no crash
    assert math.isnan(m["AP"])


# --- distributed gathering ----------------------------------------------------------------------


def test_extend_and_merge_equal_a_single_evaluator():
    gt = make_gt(num_images=20)
    dets = make_detections(gt)
    ids = sorted(dets)
    whole = CocoEvaluator(gt, CAT_IDS)
    whole.update(ids, [dets[i] for i in ids])

    ranks = [CocoEvaluator(gt, CAT_IDS) for _ in range(2)]
    for r, ev in enumerate(ranks):
        mine = ids[r::2] + [ids[0]]  # DistributedSampler pads with repeats
        ev.update(mine, [dets[i] for i in mine])
    gathered = [(ev.image_ids, ev.results()) for ev in ranks]  # what all_gather_object returns

    main = CocoEvaluator(gt, CAT_IDS)
    for image_ids, results in gathered:
        main.extend(results, image_ids)
    assert main.image_ids == ids
    assert main.results() == whole.results()
    assert main.evaluate() == whole.evaluate()

    merged = CocoEvaluator(gt, CAT_IDS)
    merged.merge(ranks[0])
    merged.merge(ranks[1])
    assert merged.results() == whole.results()


# --- tables --------------------------------------------------------------------------------------


def test_tables():
    m = {
        "AP": 34.04,
        "AP50": 52.5,
        "AP75": 36.46,
        "APs": float("nan"),
        "APm": 38.0,
        "APl": 46.3,
        "per_class": {"circle": 12.34, "square": float("nan")},
    }
    table = format_ap_table(m, title="R50 600")
    assert table.splitlines() == [
        "**R50 600**",
        "",
        "| AP | AP50 | AP75 | AP_S | AP_M | AP_L |",
        "|---|---|---|---|---|---|",
        "| 34.0 | 52.5 | 36.5 | n/a | 38.0 | 46.3 |",
    ]
    assert format_per_class_table(m).splitlines() == [
        "| class | AP |",
        "|---|---|",
        "| circle | 12.3 |",
        "| square | n/a |",
    ]

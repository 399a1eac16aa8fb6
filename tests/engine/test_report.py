"""The evaluation report's numbers: a hand-built case whose counts are worked out by hand, and
agreement with a separate pycocotools run on random data."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from retinanet.engine.report import (
    ReportError,
    best_threshold,
    box_iou_xywh,
    build_report,
    f1_optimal,
    read_report,
)

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "bird"}]
CAT, DOG, BIRD = 1, 2, 5


def _gt(gid, image, cat, box, crowd=0):
    return {"id": gid, "image_id": image, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": crowd}


def _dt(image, cat, box, score):
    return {"image_id": image, "category_id": cat, "bbox": box, "score": score}


# The hand-built case. G: ground truth, D: detections; what COCO makes of each (IoU 0.5):
HAND_GT = {
    "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (1, 2, 3, 4)],
    "categories": CATS,
    "annotations": [
        _gt(1, 1, CAT, [10, 10, 100, 100]),  # G1: found by D1
        _gt(2, 1, DOG, [200, 200, 100, 100]),  # G2: found by D2
        _gt(3, 1, BIRD, [400, 50, 20, 20]),  # G3 (small): seen as a dog by D4 (a class swap)
        _gt(4, 2, DOG, [50, 50, 80, 80]),  # G4: found by D6, D7 a duplicate
        _gt(5, 2, DOG, [300, 300, 60, 60]),  # G5: found only by D10 below 0.3
        _gt(6, 2, CAT, [100, 200, 300, 200], crowd=1),  # G6: a crowd of cats
        _gt(7, 4, BIRD, [100, 100, 40, 40]),  # G7 (medium): missed
        _gt(8, 4, CAT, [300, 100, 120, 120]),  # G8: seen as a bird by D12; D13 a poor cat box
    ],
}
HAND_DT = [
    _dt(1, CAT, [10, 10, 100, 100], 0.9),  # D1 TP cat (G1)
    _dt(1, DOG, [205, 205, 100, 100], 0.8),  # D2 TP dog (G2, IoU 0.82)
    _dt(1, CAT, [200, 200, 100, 100], 0.6),  # D3 FP cat: on G2, a dog that D2 found -> background
    _dt(1, DOG, [400, 50, 20, 20], 0.75),  # D4 FP dog: on bird G3 -> swap bird->dog
    _dt(1, BIRD, [500, 300, 50, 50], 0.4),  # D5 FP bird on nothing
    _dt(2, DOG, [50, 50, 80, 80], 0.95),  # D6 TP dog (G4)
    _dt(2, DOG, [52, 52, 80, 80], 0.5),  # D7 FP dog: a duplicate on G4
    _dt(2, CAT, [150, 250, 50, 50], 0.85),  # D8 ignored: a cat inside the cat crowd G6
    _dt(2, BIRD, [200, 250, 50, 50], 0.65),  # D9 FP bird: inside the crowd of cats (not its class)
    _dt(2, DOG, [300, 300, 60, 60], 0.2),  # D10 TP dog (G5) below the 0.3 threshold
    _dt(3, CAT, [10, 10, 50, 50], 0.55),  # D11 FP cat in an image without objects
    _dt(4, BIRD, [300, 100, 120, 120], 0.45),  # D12 FP bird: on cat G8 -> swap cat->bird
    _dt(4, CAT, [360, 100, 120, 120], 0.35),  # D13 FP cat: IoU 1/3 with G8
]


@pytest.fixture(scope="module")
def hand_report():
    return build_report(HAND_GT, HAND_DT, score_thresh=0.3)


def _counts(c):
    return c["tp"], c["fp"], c["fn"]


def test_counts_at_the_threshold_are_the_hand_computed_ones(hand_report):
    r = hand_report
    assert r["classes"] == ["cat", "dog", "bird"] and r["category_ids"] == [1, 2, 5]
    # cat: D1 TP; D3, D11, D13 FP; D8 ignored (crowd); G8 missed. dog: D2, D6 TP; D4, D7 FP;
    # D10 below the threshold, so G5 missed. bird: D5, D9, D12 FP; G3, G7 missed.
    assert _counts(r["per_class"]["cat"]["at_thresh"]) == (1, 3, 1)
    assert _counts(r["per_class"]["dog"]["at_thresh"]) == (2, 2, 1)
    assert _counts(r["per_class"]["bird"]["at_thresh"]) == (0, 3, 2)
    overall = r["overall"]["at_thresh"]
    assert _counts(overall) == (3, 8, 4)
    assert overall["precision"] == pytest.approx(3 / 11)
    assert overall["recall"] == pytest.approx(3 / 7)
    assert overall["f1"] == pytest.approx(1 / 3)
    cat = r["per_class"]["cat"]["at_thresh"]
    assert (cat["precision"], cat["recall"], cat["f1"]) == pytest.approx((1 / 4, 1 / 2, 1 / 3))
    bird = r["per_class"]["bird"]["at_thresh"]
    assert (bird["precision"], bird["recall"], bird["f1"]) == (0.0, 0.0, 0.0)


def test_confusion_matrix_is_the_hand_computed_one(hand_report):
    cm = hand_report["confusion_matrix"]
    assert cm["labels"] == ["cat", "dog", "bird", "background"]
    assert cm["matrix"] == [
        # predicted: cat dog bird background
        [1, 0, 1, 0],  # gt cat: G1 found; G8 taken for a bird (D12)
        [0, 2, 0, 1],  # gt dog: G2, G4 found; G5 missed (its detection D10 is below 0.3)
        [0, 1, 0, 1],  # gt bird: G3 taken for a dog (D4); G7 missed
        [3, 1, 2, 0],  # background: D3, D11, D13 (cat); D7 (dog); D5, D9 (bird); D8 is left out
    ]


def test_confusion_matrix_agrees_with_cocos_counts_on_the_hand_case(hand_report):
    m = np.asarray(hand_report["confusion_matrix"]["matrix"])
    for k, name in enumerate(hand_report["classes"]):
        c = hand_report["per_class"][name]["at_thresh"]
        assert m[k, k] == c["tp"]
        assert m[:, k].sum() == c["tp"] + c["fp"]
        assert m[k, :].sum() == c["tp"] + c["fn"]


def test_lower_threshold_counts_the_low_detection(hand_report):
    r = build_report(HAND_GT, HAND_DT, score_thresh=0.1)
    assert _counts(r["per_class"]["dog"]["at_thresh"]) == (3, 2, 0)
    assert r["confusion_matrix"]["matrix"][1] == [0, 3, 0, 0]


def test_f1_optimal_thresholds_are_the_hand_computed_ones(hand_report):
    per = hand_report["per_class"]
    # cat, non-ignored: 0.9 T, 0.6 F, 0.55 F, 0.35 F; 2 boxes: F1 = 2TP / (TP + FP + 2) is best at 0.9
    assert per["cat"]["best"]["score_thresh"] == 0.9
    assert per["cat"]["best"]["f1"] == pytest.approx(2 / 3)
    assert _counts(per["cat"]["best"]) == (1, 0, 1)
    # dog: 0.95 T, 0.8 T, 0.75 F, 0.5 F, 0.2 T; 3 boxes: F1 0.5, 0.8, 0.667, 0.571, 0.75
    assert per["dog"]["best"]["score_thresh"] == 0.8
    assert per["dog"]["best"]["f1"] == pytest.approx(0.8)
    assert (per["dog"]["best"]["precision"], per["dog"]["best"]["recall"]) == pytest.approx((1.0, 2 / 3))
    # bird: no true positive at any threshold
    assert per["bird"]["best"]["score_thresh"] is None and per["bird"]["best"]["f1"] == 0.0
    # overall, pooled: 0.95 T, 0.9 T, 0.8 T, then eight FPs, 0.2 T; 7 boxes: best 6 / 10 at 0.8
    best = hand_report["overall"]["best"]
    assert best["score_thresh"] == 0.8
    assert best["f1"] == pytest.approx(0.6)
    assert _counts(best) == (3, 0, 4)


def test_f1_optimal_counts_tied_scores_together_and_prefers_the_higher_threshold():
    # 0.9 T | 0.7 T, 0.7 F | 0.5 F with 3 boxes: F1 0.5, then 4/6 for both 0.7s together, then 4/7
    best = f1_optimal(np.array([0.9, 0.7, 0.7, 0.5]), np.array([True, True, False, False]), 3)
    assert best["score_thresh"] == 0.7 and _counts(best) == (2, 1, 1)
    # the same F1 2/3 at 0.9 (1 TP) and at 0.6 (2 TP, 2 FP): the higher threshold
    best = f1_optimal(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, False, True]), 2)
    assert best["score_thresh"] == 0.9 and best["f1"] == pytest.approx(2 / 3)
    assert f1_optimal(np.zeros(0), np.zeros(0, bool), 4)["score_thresh"] is None


def test_ap_by_size_and_counts_by_size(hand_report):
    bird = hand_report["per_class"]["bird"]
    assert bird["num_gt"] == {"all": 2, "small": 1, "medium": 1, "large": 0}
    assert bird["AP_large"] is None  # no large bird: COCO's -1
    assert bird["AP_small"] == 0.0 and bird["AP_medium"] == 0.0
    cat = hand_report["per_class"]["cat"]
    assert cat["num_gt"]["large"] == 2 and cat["AP_small"] is None


def test_iou_matches_pycocotools():
    from pycocotools import mask

    rng = np.random.default_rng(0)
    a = np.c_[rng.uniform(0, 100, (20, 2)), rng.uniform(1, 60, (20, 2))]
    b = np.c_[rng.uniform(0, 100, (15, 2)), rng.uniform(1, 60, (15, 2))]
    np.testing.assert_allclose(box_iou_xywh(a, b), mask.iou(a.tolist(), b.tolist(), [0] * len(b)), atol=1e-12)


# ---------------------------------------------------------------- against pycocotools, random data
def _random_case(seed=0, num_images=40):
    """Random ground truth of four classes at every size with a few crowd boxes, and detections:
    jittered boxes (some of another class), duplicates and boxes on nothing."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": n} for c, n in zip((1, 3, 4, 9), ("a", "b", "c", "d"))]
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(0, 7))):
            side = float(np.exp(rng.uniform(np.log(10), np.log(250))))
            w, h = side * float(np.exp(rng.uniform(-0.5, 0.5))), side
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - min(h, 479)))
            cat = int(rng.choice([1, 3, 4, 9]))
            anns.append(_gt(len(anns) + 1, image_id, cat, [x, y, w, h], crowd=int(rng.random() < 0.05)))
            for _ in range(int(rng.integers(0, 3))):
                jit = np.array([x, y, w, h]) + rng.normal(0, 0.15 * side, 4) * [1, 1, 0.5, 0.5]
                jit[2:] = np.maximum(jit[2:], 2)
                c = cat if rng.random() < 0.8 else int(rng.choice([1, 3, 4, 9]))
                dets.append(_dt(image_id, c, jit.tolist(), float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):
            box = [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), float(rng.uniform(5, 120)), 40.0]
            dets.append(_dt(image_id, int(rng.choice([1, 3, 4, 9])), box, float(rng.random() * 0.6)))
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _reference(gt, dets):
    """A separate pycocotools run: per class AP50 and AP, and the per-size AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"]

    def ap(x):
        return float(x[x > -1].mean()) if (x > -1).any() else None

    return {
        "AP50": [ap(p[0, :, k, 0, -1]) for k in range(p.shape[2])],
        "AP": [ap(p[:, :, k, 0, -1]) for k in range(p.shape[2])],
        "sizes": [[ap(p[:, :, k, a, -1]) for a in (1, 2, 3)] for k in range(p.shape[2])],
    }


def _curve_ap(curve):
    values = [v for v in curve if v is not None]  # None: COCO's -1, no ground truth
    return float(np.mean(values)) if values else None


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_from_the_written_curves_equals_pycocotools(seed, tmp_path):
    from retinanet.diagnostics.eval_report import write_report

    gt, dets = _random_case(seed)
    ref = _reference(gt, dets)
    written = write_report(build_report(gt, dets), tmp_path)
    pr = json.loads(written["pr_curves"].read_text())
    assert len(pr["recall"]) == 101 and pr["recall"][0] == 0.0 and pr["recall"][-1] == 1.0
    for k, name in enumerate(pr["classes"]):
        got50 = _curve_ap(pr["iou_0.5"]["precision"][name])
        got = _curve_ap(pr["iou_0.5:0.95"]["precision"][name])
        assert ref["AP50"][k] is not None and got50 == pytest.approx(ref["AP50"][k], abs=1e-6)
        assert got == pytest.approx(ref["AP"][k], abs=1e-6)
        assert pr["AP50"][name] == pytest.approx(100 * ref["AP50"][k], abs=1e-4)
    report = json.loads(written["report"].read_text())
    for k, name in enumerate(report["classes"]):
        sizes = [report["per_class"][name][f"AP_{z}"] for z in ("small", "medium", "large")]
        assert sizes == [None if v is None else pytest.approx(100 * v, abs=1e-4) for v in ref["sizes"][k]]


@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7])
def test_confusion_matrix_rows_and_columns_are_cocos_counts(thresh):
    gt, dets = _random_case(2)
    r = build_report(gt, dets, score_thresh=thresh)
    m = np.asarray(r["confusion_matrix"]["matrix"])
    swaps = m[:-1, :-1].sum() - np.trace(m[:-1, :-1])
    assert swaps > 0  # the random case has class swaps to tell apart
    for k, name in enumerate(r["classes"]):
        c = r["per_class"][name]["at_thresh"]
        assert (m[k, k], m[:, k].sum(), m[k, :].sum()) == (c["tp"], c["tp"] + c["fp"], c["tp"] + c["fn"])
    assert m[-1, -1] == 0


@pytest.mark.parametrize("thresh", [0.25, 0.5])
def test_counting_after_matching_equals_matching_the_thresholded_detections(thresh):
    # COCO matches in descending score order: the detections below a threshold cannot change
    # what those above it matched, so the report may threshold after one matching.
    gt, dets = _random_case(4)
    whole = build_report(gt, dets, score_thresh=thresh)
    cut = build_report(gt, [d for d in dets if d["score"] >= thresh], score_thresh=0.0)
    for name in whole["classes"]:
        assert whole["per_class"][name]["at_thresh"] == cut["per_class"][name]["at_thresh"]
    assert whole["confusion_matrix"]["matrix"] == cut["confusion_matrix"]["matrix"]


def test_counts_at_the_optimum_are_the_counts_at_that_threshold():
    gt, dets = _random_case(3)
    r = build_report(gt, dets)
    best = r["overall"]["best"]
    again = build_report(gt, dets, score_thresh=best["score_thresh"])
    assert _counts(again["overall"]["at_thresh"]) == _counts(best)
    # and no grid threshold does better
    assert max(f for f in r["threshold_curves"]["overall"]["f1"] if f is not None) <= best["f1"] + 1e-12


def test_image_ids_limit_the_images_and_count_their_misses():
    r = build_report(HAND_GT, HAND_DT, image_ids=[3, 4], score_thresh=0.3)
    assert r["num_images"] == 2
    # image 3: D11 FP cat; image 4: G7 missed, G8 swapped by D12, D13 FP cat
    assert _counts(r["overall"]["at_thresh"]) == (0, 3, 2)


def test_no_detections_gives_a_report_without_an_optimum(tmp_path):
    from retinanet.diagnostics.eval_report import write_report

    r = build_report(HAND_GT, [], score_thresh=0.3)
    assert _counts(r["overall"]["at_thresh"]) == (0, 0, 7) and r["overall"]["best"]["score_thresh"] is None
    assert r["confusion_matrix"]["matrix"][0] == [0, 0, 0, 2]
    write_report(r, tmp_path)
    assert (tmp_path / "index.md").is_file()
    with pytest.raises(ReportError, match="no F1-optimal score threshold"):
        best_threshold(tmp_path)


# ---------------------------------------------------------------- the folder
def test_write_report_writes_every_file_and_reads_back(hand_report, tmp_path):
    from PIL import Image

    from retinanet.diagnostics.eval_report import write_report

    out = tmp_path / "rep"
    written = write_report(hand_report, out)
    names = {p.name for p in out.iterdir()}
    assert names == {
        "report.json",
        "pr_curves.json",
        "confusion_matrix.json",
        "pr_curve_iou50.png",
        "pr_curve_iou50_95.png",
        "confusion_matrix.png",
        "f1_curve.png",
        "ap_by_size.png",
        "index.md",
        "index.html",
    }
    for path in written.values():
        if path.suffix == ".png":
            assert Image.open(path).size[0] > 300 and path.stat().st_size < 200_000
    index = (out / "index.md").read_text()
    for name in ("pr_curve_iou50.png", "confusion_matrix.png", "f1_curve.png", "ap_by_size.png", "| overall |"):
        assert name in index
    assert '<img src="confusion_matrix.png"' in (out / "index.html").read_text()
    assert (
        json.loads((out / "confusion_matrix.json").read_text())["matrix"] == hand_report["confusion_matrix"]["matrix"]
    )
    assert read_report(out)[0] == json.loads(json.dumps(hand_report))
    thresh, best, file = best_threshold(out / "report.json")
    assert (thresh, file) == (0.8, out / "report.json") and best["f1"] == pytest.approx(0.6)


def test_bad_report_paths_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no such report folder"):
        read_report(tmp_path / "nope")
    with pytest.raises(ReportError, match=r"has no report\.json"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ReportError, match="not a readable JSON report"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text('{"a": 1}')
    with pytest.raises(ReportError, match="not a report"):
        best_threshold(tmp_path)

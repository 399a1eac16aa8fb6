"""`retinanet eval --report DIR` and `retinanet predict --score-thresh best:DIR`, in-process.

The ground truth is made from a tiny model's own detections (some as their class, one as
another class, plus a box nothing finds), so that the report has true positives, a class swap
and a miss whatever the random weights predict.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from retinanet.cli import main
from retinanet.config import Config, config_to_dict
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig

NAMES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_cli")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", num_classes=3, min_size=128, max_size=128, score_thresh=0.0)
    ckpt = root / "tiny.pth"
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": config_to_dict(Config(model=cfg)), "class_names": NAMES},
        ckpt,
    )
    images = root / "images"
    images.mkdir()
    for i in range(3):
        Image.effect_noise((96, 80), 40 + 20 * i).convert("RGB").save(images / f"im{i}.png")
    coco = root / "dets.json"
    argv = ["predict", "--weights", str(ckpt), str(images), "--out", str(root / "p0"), "--no-pictures"]
    assert main([*argv, "--score-thresh", "0", "--coco", str(coco)]) == 0
    dets = json.loads(coco.read_text())
    annotations = []
    for im in dets["images"]:
        mine = sorted((a for a in dets["annotations"] if a["image_id"] == im["id"]), key=lambda a: -a["score"])
        for k, a in enumerate(mine[:4]):
            # the 1st and 4th best as their class, the 3rd as the next class (a swap); the 2nd, a
            # false positive; and a box in the corner that nothing finds (a miss)
            if k == 1:
                continue
            cat = a["category_id"] if k != 2 else a["category_id"] % 3 + 1
            annotations.append({"image_id": im["id"], "category_id": cat, "bbox": a["bbox"], "iscrowd": 0})
        annotations.append({"image_id": im["id"], "category_id": 1, "bbox": [0.0, 0.0, 3.0, 3.0], "iscrowd": 0})
    for i, a in enumerate(annotations, 1):
        a.update(id=i, area=a["bbox"][2] * a["bbox"][3])
    gt = {
        "images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in dets["images"]],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
        "annotations": annotations,
    }
    for im in gt["images"]:
        im["file_name"] = Path(im["file_name"]).name
    (root / "gt.json").write_text(json.dumps(gt))
    data = ["data.kind=coco", f"data.val_path={root / 'gt.json'}", f"data.val_images_dir={images}"]
    return {"root": root, "ckpt": ckpt, "images": images, "data": [*data, "data.num_workers=0"]}


@pytest.fixture(scope="module")
def report(case):
    out = case["root"] / "report"
    argv = ["eval", "--weights", str(case["ckpt"]), *case["data"], "--report", str(out), "--score-thresh", "0"]
    assert main(argv) == 0
    return out


def test_eval_report_writes_the_files(report, capsys):
    names = {p.name for p in report.iterdir()}
    assert {"index.md", "index.html", "report.json", "pr_curves.json", "confusion_matrix.json"} <= names
    assert {"pr_curve_iou50.png", "pr_curve_iou50_95.png", "confusion_matrix.png", "f1_curve.png"} <= names
    assert "detections.json" in names  # the results the report was made from (no --results given)
    r = json.loads((report / "report.json").read_text())
    assert r["classes"] == NAMES and r["num_images"] == 3 and r["score_thresh"] == 0.0
    at = r["overall"]["at_thresh"]
    cm = r["confusion_matrix"]["matrix"]
    swaps = sum(cm[i][j] for i in range(3) for j in range(3) if i != j)
    # Every GT box but the corner ones is a detection's box: the 6 of their detection's class are
    # TPs; the 3 of another class are swaps, or TPs where a detection of that class lies there too.
    assert at["tp"] >= 6 and at["tp"] + swaps == 9 and at["fn"] == 12 - at["tp"]
    assert [row[3] for row in cm[:3]] == [3, 0, 0]  # the corner boxes (cat) are the misses
    assert r["overall"]["best"]["score_thresh"] is not None
    assert "![confusion matrix](confusion_matrix.png)" in (report / "index.md").read_text()


def test_eval_report_prints_where_and_the_threshold(case, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["eval", "--weights", str(case["ckpt"]), *case["data"], "--report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"evaluation report: {out / 'index.md'}" in printed
    assert "at score >= 0.3" in printed and "F1-optimal score threshold" in printed
    assert json.loads((out / "report.json").read_text())["score_thresh"] == 0.3


def _detections(folder: Path) -> dict:
    return {p.stem: json.loads(p.read_text())["detections"] for p in sorted(folder.glob("*.json"))}


def test_predict_applies_the_reports_threshold(case, report, capsys):
    thresh = json.loads((report / "report.json").read_text())["overall"]["best"]["score_thresh"]
    argv = ["predict", "--weights", str(case["ckpt"]), str(case["images"]), "--no-pictures"]
    assert main([*argv, "--out", str(case["root"] / "best"), "--score-thresh", f"best:{report}"]) == 0
    assert f"score threshold {thresh:.4f}: the F1-optimal one of {report / 'report.json'}" in capsys.readouterr().out
    best = _detections(case["root"] / "best")
    every = _detections(case["root"] / "p0")  # the same images at --score-thresh 0
    assert 0 < sum(map(len, best.values())) < sum(map(len, every.values()))
    assert all(d["score"] >= thresh - 5e-5 for dets in best.values() for d in dets)  # written to 4 decimals
    # the detections of the threshold given as a number
    assert main([*argv, "--out", str(case["root"] / "num"), "--score-thresh", repr(thresh)]) == 0
    assert best == _detections(case["root"] / "num")


def test_predict_best_with_a_folder_without_report_is_one_line(case, tmp_path, capsys):
    argv = ["predict", "--weights", str(case["ckpt"]), str(case["images"]), "--out", str(tmp_path / "o")]
    assert main([*argv, "--score-thresh", f"best:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} has no report.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--score-thresh", "best"]) == 2
    assert "best:DIR" in capsys.readouterr().err
    assert main([*argv, "--score-thresh", "high"]) == 2
    assert "expected a number or best:DIR" in capsys.readouterr().err


def test_eval_report_option_errors(case, tmp_path, capsys):
    base = ["eval", "--weights", str(case["ckpt"]), *case["data"]]
    assert main([*base, "--score-thresh", "0.5"]) == 2
    assert "--report DIR" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--report", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main([*base, "--report", str(tmp_path / "r"), "--score-thresh", "2"]) == 2
    assert "[0, 1]" in capsys.readouterr().err

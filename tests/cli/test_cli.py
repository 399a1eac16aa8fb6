"""The `retinanet` command, run in-process through `main(argv)` on tiny inputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.cli import common, main
from retinanet.config import Config, config_to_dict, load_config
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig
from retinanet.utils.visualize import draw_detections, save_grid

REPO = Path(__file__).resolve().parents[2]


def _tiny_model_cfg(num_classes: int) -> ModelConfig:
    return ModelConfig(backbone="resnet18", num_classes=num_classes, min_size=128, max_size=128, score_thresh=0.0)


def _save_checkpoint(path: Path, num_classes: int, class_names=None) -> Path:
    torch.manual_seed(0)
    model_cfg = _tiny_model_cfg(num_classes)
    ckpt = {"model": build_model(model_cfg).state_dict(), "config": config_to_dict(Config(model=model_cfg))}
    if class_names is not None:
        ckpt["class_names"] = list(class_names)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic dataset written by `retinanet data synth` (8 train + 4 val images)."""
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "synth", "--out", str(out), "--train", "8", "--val", "4"]) == 0
    return out


# ------------------------------------------------------------------ help and usage
@pytest.mark.parametrize(
    "command, expected",
    [
        ([], ["train", "eval", "predict", "data", "demo", "examples:"]),
        (["train"], ["CONFIG", "KEY=VALUE", "--resume", "--config", "examples:"]),
        (["eval"], ["CONFIG", "KEY=VALUE", "--weights", "--results", "--per-class", "examples:"]),
        (["predict"], ["INPUT", "--weights", "--out", "--score-thresh", "--config", "--model", "torchvision-coco"]),
        (["data"], ["synth", "check", "examples:"]),
        (["data", "synth"], ["--out", "--seed", "--train", "--val", "examples:"]),
        (["data", "check"], ["PATH", "--images-dir", "--class-map", "--on-bad", "examples:"]),
        (["demo"], ["KEY=VALUE", "--score-thresh", "detections.png", "examples:"]),
    ],
)
def test_help_of_every_command(command, expected, capsys):
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    for word in expected:
        assert word in text, f"`retinanet {' '.join(command)} --help` does not mention {word}"


def test_python_m_retinanet_help():
    proc = subprocess.run([sys.executable, "-m", "retinanet", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: retinanet" in proc.stdout and "demo" in proc.stdout


def test_missing_command_and_bad_arguments_are_usage_errors(capsys):
    assert main([]) == 2
    assert main(["predict", "--out", "x"]) == 2  # --weights and INPUT missing
    assert "--weights" in capsys.readouterr().err
    assert main(["data", "check", "p", "model.x=1"]) == 2  # data check takes no overrides
    assert "unrecognized arguments: model.x=1" in capsys.readouterr().err


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("argv", [["train", "model.focal_gama=1"], ["train", "--resume", "model.focal_gama=1"]])
def test_unknown_config_key_exits_2_naming_it(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model.focal_gama" in err and "model.focal_gamma" in err  # the key and the close match
    assert "Traceback" not in err


def test_two_config_files_are_an_error(capsys):
    assert main(["train", "a.yaml", "b.yaml"]) == 2
    assert "a.yaml" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_synth_config_is_the_yaml_and_missing_configs_are_a_clear_error(monkeypatch):
    from_yaml, source = common.synth_config(["train.max_iter=700"])
    assert source.endswith("retinanet_r18_synth.yaml")
    assert from_yaml == load_config(REPO / "configs/synth/retinanet_r18_synth.yaml", ["train.max_iter=700"])
    monkeypatch.setattr(common, "SYNTH_CONFIG", REPO / "no-such-dir" / "x.yaml")  # as installed without configs/
    with pytest.raises(common.CliError, match="x.yaml not found"):
        common.synth_config([])


# ------------------------------------------------------------------ data
def test_data_synth_then_check(synth, capsys):
    assert (synth / "annotations" / "instances_train.json").is_file()
    assert len(list((synth / "val").glob("*.jpg"))) == 4
    assert main(["data", "check", str(synth / "annotations" / "instances_val.json")]) == 0
    out = capsys.readouterr().out
    assert "images: 4" in out and "circle" in out
    assert main(["data", "check", str(synth), "--split", "train", "--on-bad", "error"]) == 0
    assert "images: 8" in capsys.readouterr().out


def test_data_check_missing_path_exits_2(tmp_path, capsys):
    missing = tmp_path / "no" / "instances_val.json"
    assert main(["data", "check", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


# ------------------------------------------------------------------ predict
def test_predict_writes_pictures_and_json(tmp_path, capsys):
    ckpt = _save_checkpoint(tmp_path / "tiny.pth", 3, ["cat", "dog", "owl"])
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (100, 80), (200, 30, 30)).save(folder / "a.png")
    Image.effect_noise((64, 96), 60).convert("RGB").save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(ckpt), str(folder), "--out", str(out), "--score-thresh", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "b.json", "b.png"]
    for stem, (w, h) in {"a": (100, 80), "b": (64, 96)}.items():
        result = json.loads((out / f"{stem}.json").read_text())
        assert (result["width"], result["height"]) == (w, h)
        assert Path(result["image"]).name == {"a": "a.png", "b": "b.jpg"}[stem]
        assert Image.open(out / f"{stem}.png").size == (w, h)
        dets = result["detections"]
        assert dets, "score_thresh 0 keeps detections even from an untrained model"
        for d in dets:
            x1, y1, x2, y2 = d["box"]
            assert -1e-3 <= x1 <= x2 <= w + 1e-2 and -1e-3 <= y1 <= y2 <= h + 1e-2
            assert d["class_name"] == ["cat", "dog", "owl"][d["label"]]
            assert 0.0 <= d["score"] <= 1.0
    assert "2 images" in capsys.readouterr().out


def test_predict_coco_uses_the_datasets_category_ids(tmp_path):
    # A model trained on category ids {7, 1000, 3}: its results carry those ids, not label + 1.
    ckpt = _save_checkpoint(tmp_path / "tiny.pth", 3, ["cat", "dog", "owl"])
    saved = torch.load(ckpt, weights_only=True)
    torch.save({**saved, "label_to_category_id": [7, 1000, 3]}, ckpt)
    Image.new("RGB", (60, 50), (200, 30, 30)).save(tmp_path / "a.png")
    coco = tmp_path / "dets.json"
    argv = [
        "predict",
        "--weights",
        str(ckpt),
        str(tmp_path / "a.png"),
        "--out",
        str(tmp_path / "p"),
        "--coco",
        str(coco),
    ]
    assert main(argv + ["--score-thresh", "0"]) == 0
    data = json.loads(coco.read_text())
    assert data["categories"] == [{"id": 7, "name": "cat"}, {"id": 1000, "name": "dog"}, {"id": 3, "name": "owl"}]
    assert data["annotations"] and {a["category_id"] for a in data["annotations"]} <= {7, 1000, 3}


def test_predict_skips_an_unreadable_image_and_finishes(tmp_path, capsys):
    ckpt = _save_checkpoint(tmp_path / "tiny.pth", 3, ["cat", "dog", "owl"])
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (60, 50), (200, 30, 30)).save(folder / "a.png")
    Image.new("RGB", (60, 50), (30, 30, 200)).save(folder / "b.png")
    (folder / "b.png").write_bytes((folder / "b.png").read_bytes()[:30])  # truncated
    Image.new("RGB", (40, 40), (30, 200, 30)).save(folder / "c.png")
    out, coco = tmp_path / "pred", tmp_path / "dets.json"
    argv = ["predict", "--weights", str(ckpt), str(folder), "--out", str(out), "--coco", str(coco)]
    assert main(argv + ["--batch-size", "2"]) == 1  # some inputs failed
    err = capsys.readouterr().err
    assert "1 of 3 images could not be read" in err and "b.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "c.json"]
    assert [Path(im["file_name"]).name for im in json.loads(coco.read_text())["images"]] == ["a.png", "c.png"]


def test_predict_turns_photos_as_their_exif_orientation_says(tmp_path):
    # Stored 60x40 with orientation 6 (rotate 90° clockwise to view): viewers show it 40x60, and
    # that is the frame the boxes must be in.
    ckpt = _save_checkpoint(tmp_path / "tiny.pth", 3, ["cat", "dog", "owl"])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40), (200, 30, 30)).save(tmp_path / "photo.jpg", exif=exif)
    out = tmp_path / "pred"
    assert (
        main(["predict", "--weights", str(ckpt), str(tmp_path / "photo.jpg"), "--out", str(out), "--score-thresh", "0"])
        == 0
    )
    result = json.loads((out / "photo.json").read_text())
    assert (result["width"], result["height"], result["exif_orientation"]) == (40, 60, 6)
    assert Image.open(out / "photo.png").size == (40, 60)
    assert result["detections"] and all(
        d["box"][2] <= 40 + 1e-2 and d["box"][3] <= 60 + 1e-2 for d in result["detections"]
    )


def test_predict_and_export_a_bare_state_dict_with_model_name(tmp_path):
    # `predict --help`'s example `--weights state_dict.pth --model NAME`: a bare state dict (no
    # saved config) gets its architecture from the variant, its class count from the weights.
    torch.manual_seed(0)
    from retinanet import get_model

    state = get_model("retinanet_r18_fpn", num_classes=3, min_size=96, max_size=128).state_dict()
    torch.save(state, tmp_path / "state_dict.pth")
    Image.new("RGB", (60, 40), (20, 120, 200)).save(tmp_path / "a.jpg")
    weights = ["--weights", str(tmp_path / "state_dict.pth"), "--model", "retinanet_r18_fpn"]
    assert (
        main(["predict", *weights, str(tmp_path / "a.jpg"), "--out", str(tmp_path / "p"), "--score-thresh", "0"]) == 0
    )
    dets = json.loads((tmp_path / "p" / "a.json").read_text())["detections"]
    assert dets and {d["label"] for d in dets} <= {0, 1, 2}
    out = tmp_path / "model.pt"
    assert main(["export", *weights, "--format", "torchscript", "--out", str(out), "--no-verify"]) == 0
    assert out.stat().st_size > 1_000_000


def test_predict_torchvision_coco_names_classes_by_coco_category(tmp_path, monkeypatch):
    # No download: torchvision's COCO model with random weights stands in for the published
    # file (91 outputs; the labels are COCO category ids).
    import torchvision

    import retinanet.weights.loader
    from retinanet.weights.zoo import TORCHVISION_COCO_URL, coco_category_names

    calls = []
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)

    def fake_load_url_state_dict(url):
        calls.append(url)
        return tv.state_dict()

    monkeypatch.setattr(retinanet.weights.loader, "load_url_state_dict", fake_load_url_state_dict)
    Image.new("RGB", (90, 70), (20, 120, 200)).save(tmp_path / "street.jpg")
    out = tmp_path / "pred"
    argv = [
        "predict",
        "--weights",
        "torchvision-coco",
        str(tmp_path / "street.jpg"),
        "--out",
        str(out),
        "--score-thresh",
        "0",
    ]
    assert main(argv) == 0
    assert calls == [TORCHVISION_COCO_URL]
    coco = coco_category_names()
    assert coco[1] == "person"
    dets = json.loads((out / "street.json").read_text())["detections"]
    assert dets and all(d["class_name"] == coco[d["label"]] for d in dets)


def test_predict_errors_are_one_line(tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert (
        main(
            ["predict", "--weights", str(tmp_path / "none.pth"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "none.pth" in capsys.readouterr().err
    ckpt = _save_checkpoint(tmp_path / "tiny.pth", 3)
    assert main(["predict", "--weights", str(ckpt), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    # writing x.png over the input x.png
    assert main(["predict", "--weights", str(ckpt), str(tmp_path / "x.png"), "--out", str(tmp_path)]) == 2
    assert "overwrite" in capsys.readouterr().err


# ------------------------------------------------------------------ eval
def test_eval_prints_ap_table_and_writes_results(synth, tmp_path, capsys):
    ckpt = _save_checkpoint(tmp_path / "tiny6.pth", 6)  # the synthetic dataset's 6 classes
    results = tmp_path / "results.json"
    argv = [
        "eval",
        str(REPO / "configs/synth/retinanet_r18_synth.yaml"),
        "--weights",
        str(ckpt),
        f"data.train_path={synth}",
        "data.num_workers=0",
        "--results",
        str(results),
        "--per-class",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| AP | AP50 | AP75 | AP_S | AP_M | AP_L |" in out
    assert "| circle |" in out  # the per-class table
    dets = json.loads(results.read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    assert {d["image_id"] for d in dets} <= {1, 2, 3, 4}


def test_eval_rejects_a_checkpoint_for_other_classes(synth, tmp_path, capsys):
    ckpt = _save_checkpoint(tmp_path / "tiny3.pth", 3)
    # no CONFIG: the checkpoint's saved config, with the data overridden
    assert main(["eval", "--weights", str(ckpt), f"data.train_path={synth}", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "6" in err


def test_eval_rejects_a_checkpoint_whose_class_names_differ(synth, tmp_path, capsys):
    # The same number of classes in another order: every AP would be reported under a wrong name.
    names = ["square", "circle", "triangle", "ring", "cross", "star"]
    ckpt = _save_checkpoint(tmp_path / "tiny6.pth", 6, names)
    assert main(["eval", "--weights", str(ckpt), f"data.train_path={synth}", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert "instances_val.json has the classes [circle, square, triangle, ring, cross, star]" in err
    assert "but the model has [square, circle, triangle, ring, cross, star]" in err and "Traceback" not in err


def test_train_and_resume_through_the_cli(synth, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["model.backbone=resnet18", "model.min_size=64", "model.max_size=64", "train.batch_size=2"]
    tiny += ["train.lr_steps=[]", "train.warmup_iters=0", "data.num_workers=0", f"data.train_path={synth}"]
    argv = ["train", str(REPO / "configs/synth/retinanet_r18_synth.yaml"), *tiny, f"output_dir={out}"]
    assert main(argv + ["train.max_iter=1"]) == 0
    assert "trained to iteration 1" in capsys.readouterr().out
    assert main(argv + ["train.max_iter=2", "--resume"]) == 0  # a longer schedule, continued
    assert "trained to iteration 2" in capsys.readouterr().out
    assert torch.load(out / "last_checkpoint.pth", weights_only=True)["iteration"] == 2
    assert (out / "model_final.pth").is_file()


# ------------------------------------------------------------------ demo
def test_demo_end_to_end_tiny(synth, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RETINANET_NO_COMPILE", "1")  # the eager focal loss: no compile time in a 1-step run
    out = tmp_path / "demo"
    argv = [
        "demo",
        f"data.train_path={synth}",
        f"output_dir={out}",
        "data.num_workers=0",
        "model.min_size=64",
        "model.max_size=64",
        "train.batch_size=2",
        "train.max_iter=1",
        "train.lr_steps=[]",
        "--score-thresh",
        "0.0",
    ]
    # One iteration learns nothing (every AP 0.0): the evaluation's numbers are made distinct, so
    # that the printed table shows which number went where.
    import retinanet.engine.trainer as trainer

    evaluate = trainer.evaluate

    def distinct(*args, **kwargs):
        m = evaluate(*args, **kwargs)
        return {**m, "AP": 12.34, "AP50": 23.45, "AP75": 34.56, "APs": 45.67, "APm": 56.78, "APl": 67.89}

    monkeypatch.setattr(trainer, "evaluate", distinct)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("| AP | AP50 | AP75 | AP_S | AP_M | AP_L |") == 1  # once, not also from the engine
    assert "| 12.3 | 23.4 | 34.6 | 45.7 | 56.8 | 67.9 |" in printed
    # the printed table is the final evaluation of the run (metrics.jsonl), rounded to 0.1
    lines = printed.splitlines()
    row = lines[lines.index("| AP | AP50 | AP75 | AP_S | AP_M | AP_L |") + 2]
    final = [json.loads(x)["eval"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]
    assert final["iter"] == 1
    want = ["n/a" if k not in final else f"{final[k]:.1f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert row == "| " + " | ".join(want) + " |", (row, final)
    assert str(out / "detections.png") in printed
    grid = Image.open(out / "detections.png")
    assert grid.width > 2 * 320 and grid.height > 2 * 320  # 2 x 2 validation images
    assert (out / "model_final.pth").is_file()


# ------------------------------------------------------------------ visualize
def test_draw_detections_and_grid(tmp_path):
    image = torch.zeros(3, 60, 80)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 55.0], [0.0, 0.0, 5.0, 5.0]])
    drawn = draw_detections(image, boxes, torch.tensor([0, 1]), torch.tensor([0.9, 0.1]), ["a", "b"], score_thresh=0.5)
    assert drawn.size == (80, 60)
    pixels = np.asarray(drawn)  # (H, W, 3)
    assert pixels[40, 10].sum() > 0  # the left edge of the kept box
    assert pixels[40, 30].sum() == 0  # its inside is untouched
    assert pixels[2, 0].sum() == 0  # the low-score box in the corner is not drawn
    path = save_grid([drawn, drawn, drawn], tmp_path / "g" / "grid.png", titles=["1", "2", "3"])
    assert Image.open(path).width > 2 * 80  # 2 columns


def test_predict_and_eval_are_fast_by_default_with_the_plain_models_results(synth, tmp_path, capsys):
    from helpers import assert_same_detections

    # Trainable BatchNorm with non-trivial statistics: folding them changes every convolution.
    torch.manual_seed(0)
    cfg = _tiny_model_cfg(6).replace(norm="bn", freeze_at=0)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    ckpt = tmp_path / "bn.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(Config(model=cfg))}, ckpt)
    Image.effect_noise((96, 80), 60).convert("RGB").save(tmp_path / "a.png")

    def detections(*flags):
        out = tmp_path / ("plain" if flags else "fast")
        argv = ["predict", "--weights", str(ckpt), str(tmp_path / "a.png"), "--out", str(out), "--score-thresh", "0"]
        assert main([*argv, "--no-pictures", *flags]) == 0
        dets = json.loads((out / "a.json").read_text())["detections"]
        return {
            "boxes": torch.tensor([d["box"] for d in dets]),
            "scores": torch.tensor([d["score"] for d in dets]),
            "labels": torch.tensor([d["label"] for d in dets]),
        }

    assert_same_detections(detections(), detections("--no-fast"), box_tol=0.02, score_tol=1e-3)

    def ap_table(*flags):
        argv = ["eval", "--weights", str(ckpt), f"data.train_path={synth}", "data.kind=synth", "data.num_workers=0"]
        argv += [str(REPO / "configs/synth/retinanet_r18_synth.yaml"), *flags]
        assert main(argv) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "AP" not in line]

    assert ap_table() == ap_table("--no-fast")
    assert main(["predict", "--help"]) == 0 and "--no-fast" in capsys.readouterr().out

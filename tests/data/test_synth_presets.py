"""Named presets of the synthetic dataset (retinanet/data/synth_presets.py): the default
dataset untouched, the "focal" preset's classes, objects and class imbalance, determinism,
the config key and the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from retinanet.config import ConfigError, load_config
from retinanet.data import build_dataset, default_synth_dir, ensure_synthetic, generate_synthetic
from retinanet.data.build import build_datasets
from retinanet.data.synth import CLASSES, MARKER, SYNTH_VERSION, make_image, synth_params
from retinanet.data.synth_presets import FOCAL_HUES, PRESETS, class_names, preset_scene

FOCAL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synth" / "retinanet_r18_focal.yaml"
# The annotations of a tiny default dataset (seed 0, 3 + 1 images at 96 px), as the default
# dataset has always drawn them: a change means the default dataset is no longer the same.
DEFAULT_TINY_TRAIN_SHA256 = "27c19c4459872630655110d1878a215a865690a0df00b451880a40806581154e"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_default_dataset_and_its_records_are_unchanged(tmp_path, monkeypatch):
    assert synth_params(0) == {"version": SYNTH_VERSION, "seed": 0, "num_train": 600, "num_val": 100, "image_size": 320}
    assert synth_params(0, preset=None) == synth_params(0)
    assert synth_params(0, preset="focal") == {
        "version": SYNTH_VERSION,
        "seed": 0,
        **PRESETS["focal"]["defaults"],
        "preset": "focal",
    }
    monkeypatch.setenv("RETINANET_DATA", str(tmp_path))
    assert default_synth_dir() == tmp_path / f"synth-v{SYNTH_VERSION}-seed0"
    assert default_synth_dir(3, "focal") == tmp_path / f"synth-v{SYNTH_VERSION}-focal-seed3"
    out = ensure_synthetic(tmp_path / "default", num_train=3, num_val=1, image_size=96, workers=1)
    record = json.loads((out / MARKER).read_text())
    record.pop("seconds")
    assert record == {"version": SYNTH_VERSION, "seed": 0, "num_train": 3, "num_val": 1, "image_size": 96}
    train = (out / "annotations" / "instances_train.json").read_bytes()
    assert hashlib.sha256(train).hexdigest() == DEFAULT_TINY_TRAIN_SHA256
    # A preset's record names it, and a default dataset's folder is not taken for a preset's.
    ensure_synthetic(tmp_path / "focal", num_train=2, num_val=1, image_size=96, preset="focal", workers=1)
    assert json.loads((tmp_path / "focal" / MARKER).read_text())["preset"] == "focal"
    with pytest.raises(ValueError, match="made with"):
        ensure_synthetic(out, num_train=3, num_val=1, image_size=96, preset="focal")
    with pytest.raises(ValueError, match="preset 'nope'"):
        synth_params(0, preset="nope")


def test_focal_preset_classes_and_objects():
    names = class_names("focal")
    assert len(names) == len(set(names)) == len(CLASSES) * len(FOCAL_HUES) == 48
    assert 20 <= len(names) <= 80
    scene = preset_scene("focal")
    assert {shape for shapes, _, _ in scene["styles"].values() for shape in shapes} == set(CLASSES)
    assert class_names(None) == CLASSES and preset_scene(None) is None
    size = PRESETS["focal"]["defaults"]["image_size"]
    counts, sides, labels = [], [], []
    for i in range(40):
        pixels, objects = make_image(np.random.default_rng([0, 1, i]), size, size, names, scene)
        assert pixels.shape == (size, size, 3)
        counts.append(len(objects))
        for box, label in objects:
            assert 0 <= box[0] < box[2] <= size and 0 <= box[1] < box[3] <= size
            sides.append(float(np.sqrt((box[2] - box[0]) * (box[3] - box[1]))))
            labels.append(label)
    sides = np.array(sides)
    assert max(counts) <= 4 and 1.8 <= np.mean(counts) <= 3.0  # few objects
    assert sides.min() >= 23.0  # none too small for the 32 px anchors at IoU 0.5
    assert np.mean(sides < 32) >= 0.5 and sides.max() <= 96  # mostly small, the rest medium
    assert len(set(labels)) >= 30 and all(0 <= k < 48 for k in labels)


def test_focal_preset_is_deterministic_and_differs_from_the_default(tmp_path):
    kw = dict(num_train=4, num_val=2, image_size=128, preset="focal")
    a = tree_bytes(generate_synthetic(tmp_path / "a", seed=1, workers=1, **kw))
    b = tree_bytes(generate_synthetic(tmp_path / "b", seed=1, workers=2, **kw))
    assert len(a) == 4 + 2 + 2 and a == b
    c = tree_bytes(generate_synthetic(tmp_path / "c", seed=2, workers=1, **kw))
    assert all(c[k] != a[k] for k in a if k.endswith(".jpg"))
    default = tree_bytes(generate_synthetic(tmp_path / "d", seed=1, workers=1, num_train=4, num_val=2, image_size=128))
    assert all(default[k] != a[k] for k in a if k.endswith(".jpg"))
    coco = json.loads(a["annotations/instances_train.json"])
    assert [c["name"] for c in coco["categories"]] == list(class_names("focal"))
    # A subset of the preset's classes.
    sub = generate_synthetic(tmp_path / "s", seed=1, workers=1, classes=["red_star", "azure_ring"], **kw)
    coco = json.loads((sub / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["azure_ring", "red_star"]


def test_config_key_builds_the_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINANET_DATA", str(tmp_path))
    monkeypatch.setitem(PRESETS["focal"], "defaults", {"num_train": 3, "num_val": 2, "image_size": 96})
    cfg = load_config(None, ["data.kind=synth", "data.synth_preset=focal"])
    train_ds, val_ds = build_datasets(cfg)
    root = tmp_path / f"synth-v{SYNTH_VERSION}-focal-seed0"
    assert json.loads((root / MARKER).read_text())["preset"] == "focal"
    assert len(train_ds) == 3 and len(val_ds) == 2
    assert train_ds.class_names == val_ds.class_names == list(class_names("focal"))
    assert not (tmp_path / f"synth-v{SYNTH_VERSION}-seed0").exists()  # the default dataset is not made
    assert load_config(str(FOCAL_CONFIG)).data.synth_preset == "focal"
    with pytest.raises(ConfigError, match="data.synth_preset='nope'"):
        build_datasets(load_config(None, ["data.kind=synth", "data.synth_preset=nope"]))


def test_focal_preset_imbalance_at_the_configs_model(tmp_path):
    """The point of the preset: >= 10,000 negative (anchor, class) pairs per positive pair at the
    model settings of configs/synth/retinanet_r18_focal.yaml (the default dataset: ~1,200)."""
    from retinanet.diagnostics.anchors import class_imbalance, network_boxes

    model = load_config(str(FOCAL_CONFIG)).model
    root = generate_synthetic(tmp_path / "f", num_train=40, num_val=1, preset="focal", workers=1)
    ds = build_dataset("coco", root, split="train")
    assert (ds.records[0].width, ds.records[0].height) == (model.min_size, model.min_size)
    boxes = network_boxes(ds, model)
    report = class_imbalance(boxes, model, len(ds.class_names))
    assert report["num_classes"] == 48 and report["images"] >= 35
    assert report["negative_pairs_per_positive_pair"] > 10_000
    assert class_imbalance(boxes, model, len(ds.class_names), max_images=20)["images"] == 20  # a sample of them


def test_cli_data_synth_preset(tmp_path, capsys):
    from retinanet.cli import main

    out = tmp_path / "f"
    assert main(["data", "synth", "--out", str(out), "--preset", "focal", "--train", "2", "--val", "1"]) == 0
    assert "2 train + 1 val images, seed 0, preset focal" in capsys.readouterr().out
    record = json.loads((out / MARKER).read_text())
    assert record["preset"] == "focal" and record["image_size"] == PRESETS["focal"]["defaults"]["image_size"]
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--preset", "nope"]) == 2

"""The built-in synthetic dataset: determinism, content, the cache helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retinanet.data import build_dataset, check_dataset, default_synth_dir, ensure_synthetic, generate_synthetic
from retinanet.data.synth import CLASSES, MARKER, SYNTH_VERSION, render_mask


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_any_workers(tmp_path):
    kw = dict(num_train=5, num_val=2, image_size=96)
    a = tree_bytes(generate_synthetic(tmp_path / "a", seed=3, workers=1, **kw))
    b = tree_bytes(generate_synthetic(tmp_path / "b", seed=3, workers=2, **kw))
    assert len(a) == 5 + 2 + 2 and a == b
    c = tree_bytes(generate_synthetic(tmp_path / "c", seed=4, workers=1, **kw))
    assert c.keys() == a.keys()
    assert all(c[k] != a[k] for k in a if k.endswith(".jpg"))


@pytest.fixture(scope="module")
def synth_40(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=0, num_train=40, num_val=4)


def test_content(synth_40):
    summary = check_dataset(synth_40, split="train", on_bad="error")
    assert summary["num_images"] == 40 and summary["class_names"] == list(CLASSES)
    assert summary["image_size"] == {"min_width": 320, "max_width": 320, "min_height": 320, "max_height": 320}
    assert summary["num_images_without_boxes"] >= 1  # negatives
    assert all(n > 0 for n in summary["box_sizes"].values())  # small, medium and large
    assert all(n > 0 for n in summary["boxes_per_class"].values())
    assert summary["skipped"] == {} and summary["clipped"] == 0
    # Boxes lie inside the image and are mostly separate (placement allows IoU <= 0.1).
    ds = build_dataset("coco", synth_40, split="train")
    image, target = ds[0]
    assert image.shape == (3, 320, 320)
    for rec in ds.records:
        b = rec.boxes
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 320).all()
    gt = json.loads((synth_40 / "annotations" / "instances_val.json").read_text())
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", CLASSES)
def test_boxes_fit_the_drawn_shapes(kind):
    """The box is the drawn shape's extent: the anti-aliased ink touches every side of it and
    does not leave it (to within the one edge pixel of anti-aliasing)."""
    rng = np.random.default_rng(0)
    for radius in (9.0, 40.0):
        alpha, box = render_mask(kind, radius, rng)
        ys, xs = np.nonzero(alpha > 0)
        ink = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
        assert np.abs(ink - box).max() <= 1.0
        assert 0.6 * 2 * radius <= min(box[2] - box[0], box[3] - box[1])


def test_ensure_synthetic_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINANET_DATA", str(tmp_path / "root"))
    assert default_synth_dir() == tmp_path / "root" / f"synth-v{SYNTH_VERSION}-seed0"
    out = ensure_synthetic(seed=0, num_train=3, num_val=1, image_size=64)
    assert out == default_synth_dir() and (out / MARKER).is_file()
    stamp = (out / "train" / "000001.jpg").stat().st_mtime_ns
    assert ensure_synthetic(seed=0, num_train=3, num_val=1, image_size=64) == out  # reused
    assert (out / "train" / "000001.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made with"):
        ensure_synthetic(seed=0, num_train=4, num_val=1, image_size=64)
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]  # no leftovers
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ensure_synthetic(junk, num_train=1, num_val=1, image_size=64)
    with pytest.raises(TypeError, match="unknown"):
        ensure_synthetic(tmp_path / "x", num_images=3)


def test_image_statistics_are_not_trivial(synth_40):
    """Objects are not separable from the background by brightness alone: the background spans
    a wide range of values."""
    ds = build_dataset("coco", synth_40, split="train")
    image, _ = ds[0]
    grey = image.float().div(255).mean(0).numpy()
    assert np.percentile(grey, 95) - np.percentile(grey, 5) > 0.2


def _ensure_tiny(out: str) -> str:
    return str(ensure_synthetic(out, num_train=4, num_val=1, image_size=64, workers=1))


def test_ensure_synthetic_concurrent(tmp_path):
    """Two generators racing for one folder (e.g. two ranks): both succeed, one copy survives."""
    import multiprocessing as mp

    out = tmp_path / "synth"
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_ensure_tiny, [str(out)] * 2)
    assert results == [str(out)] * 2 and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
    assert len(list((out / "train").iterdir())) == 4


def test_a_class_subset_draws_only_those_shapes_and_keeps_full_datasets_as_they_were(tmp_path):
    kw = dict(num_train=6, num_val=2, image_size=96, workers=1)
    full = tree_bytes(generate_synthetic(tmp_path / "full", seed=3, **kw))
    assert tree_bytes(generate_synthetic(tmp_path / "all", seed=3, classes=list(CLASSES), **kw)) == full
    sub = generate_synthetic(tmp_path / "sub", seed=3, classes=["star", "ring"], **kw)
    coco = json.loads((sub / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["ring", "star"]  # in CLASSES' order
    assert coco["annotations"] and {a["category_id"] for a in coco["annotations"]} <= {1, 2}
    with pytest.raises(ValueError, match=r"synthetic classes \['hexagon'\]"):
        generate_synthetic(tmp_path / "bad", classes=["hexagon"], **kw)
    # The cache record names the subset; a full dataset's record is unchanged (no "classes").
    ensure_synthetic(tmp_path / "cached", seed=3, num_train=6, num_val=2, image_size=96, classes=["star", "ring"])
    assert json.loads((tmp_path / "cached" / MARKER).read_text())["classes"] == ["ring", "star"]
    with pytest.raises(ValueError, match="holds a synthetic dataset made with"):
        ensure_synthetic(tmp_path / "cached", seed=3, num_train=6, num_val=2, image_size=96)
    ensure_synthetic(tmp_path / "cached_full", seed=3, num_train=6, num_val=2, image_size=96)
    assert "classes" not in json.loads((tmp_path / "cached_full" / MARKER).read_text())

"""One class list per run: every split takes the training set's, or must have it (data.build)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datahelpers import coco_dict, voc_xml, write_image, write_json

from retinanet.config import load_config
from retinanet.data import DatasetError
from retinanet.data.build import build_datasets


def _voc_folder(folder: Path, objects: dict[str, list[str]]) -> Path:
    """A plain VOC folder: one 40x30 image per entry, one box per class name listed."""
    for stem, names in objects.items():
        write_image(folder / f"{stem}.png", 40, 30)
        boxes = [(name, (2 + 3 * k, 2, 12 + 3 * k, 12), 0) for k, name in enumerate(names)]
        (folder / f"{stem}.xml").write_text(voc_xml(f"{stem}.png", 40, 30, boxes))
    return folder


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    for image, _ in rows:
        write_image(path.parent / image, 40, 30)
    path.write_text("".join(f"{image},2,2,12,12,{name}\n" for image, name in rows))
    return path


def _cfg(kind: str, train: Path, val: Path, *extra: str):
    return load_config(None, [f"data.kind={kind}", f"data.train_path={train}", f"data.val_path={val}", *extra])


def test_voc_val_with_a_class_train_lacks_is_an_error_naming_file_and_class(tmp_path):
    train = _voc_folder(tmp_path / "train", {"t1": ["a", "b"], "t2": ["b"]})
    val = _voc_folder(tmp_path / "val", {"v1": ["c", "b"]})
    # Before: val built its own list [b, c], so label 0 (a) was reported under the name b.
    with pytest.raises(DatasetError, match=r"v1.xml object 0: unknown class name 'c'"):
        build_datasets(_cfg("voc", train, val))
    train_ds, val_ds = build_datasets(_cfg("voc", train, val, "data.on_bad=skip"))
    assert train_ds.class_names == val_ds.class_names == ["a", "b"]
    assert val_ds.skipped == {"unknown_class": 1} and val_ds.records[0].labels.tolist() == [1]


def test_val_lacking_a_class_keeps_the_training_list(tmp_path):
    train = _voc_folder(tmp_path / "train", {"t1": ["a", "b", "c"]})
    val = _voc_folder(tmp_path / "val", {"v1": ["c"]})
    _, val_ds = build_datasets(_cfg("voc", train, val))
    assert val_ds.class_names == ["a", "b", "c"] and val_ds.records[0].labels.tolist() == [2]


def test_csv_splits_share_the_training_list(tmp_path):
    train = _csv(tmp_path / "train.csv", [("t1.png", "cat"), ("t2.png", "owl")])
    val = _csv(tmp_path / "val.csv", [("v1.png", "owl"), ("v2.png", "emu")])
    with pytest.raises(DatasetError, match=r"val.csv line 2: unknown class name 'emu'"):
        build_datasets(_cfg("csv", train, val))
    _, val_ds = build_datasets(_cfg("csv", train, val, "data.on_bad=skip"))
    assert val_ds.class_names == ["cat", "owl"] and val_ds.records[0].labels.tolist() == [1]


def test_coco_splits_with_other_categories_are_an_error_naming_both_lists(tmp_path):
    images = tmp_path / "images"
    write_image(images / "a.png", 40, 30)
    train = write_json(tmp_path / "train.json", coco_dict([(1, "a.png", 40, 30)], [(1, 3, [2, 2, 10, 10], 0)]))
    other = coco_dict([(1, "a.png", 40, 30)], [(1, 3, [2, 2, 10, 10], 0)], categories=((3, "cat"), (9, "emu")))
    val = write_json(tmp_path / "val.json", other)
    cfg = _cfg("coco", train, val, f"data.train_images_dir={images}", f"data.val_images_dir={images}")
    with pytest.raises(
        DatasetError, match=r"val.json has the classes \[cat, emu\] but the training set has \[cat, dog\]"
    ):
        build_datasets(cfg)

"""The YOLO (ultralytics) reader on hand-built datasets: exact boxes, negatives, class lists,
every kind of bad input (an error naming file and line, or a counted skip), kind detection."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from datahelpers import write_image
from PIL import Image

from retinanet.config import load_config
from retinanet.data import DatasetError, MissingFileError, build_dataset, build_datasets, detect_kind
from retinanet.data.yolo import EDGE_TOLERANCE, YoloDetection, label_path, yolo_splits


def make_yolo(root: Path, labels: dict[str, str], data: dict | None = None, split: str = "train", size=(40, 30)):
    """root/data.yaml, root/images/<split>/<name> (size), root/labels/<split>/<stem>.txt for each
    name with a label text (None: no label file)."""
    for name, text in labels.items():
        write_image(root / "images" / split / name, *size)
        if text is not None:
            lab = root / "labels" / split / Path(name).with_suffix(".txt")
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(text)
    data = data if data is not None else {"train": "images/train", "val": "images/val", "names": ["cat", "dog"]}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root


def test_boxes_are_the_hand_computed_pixel_edges(tmp_path):
    # a.png is 40 x 30. "0 0.5 0.5 0.5 0.4": centre (20, 15), size 20 x 12 -> [10, 9, 30, 21].
    # "1 0.125 0.2 0.25 0.4": centre (5, 6), size 10 x 12 -> [0, 0, 10, 12].
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n\n1 0.125 0.2 0.25 0.4\n", "b.png": "1 0.75 0.5 0.1 0.2\n"})
    ds = YoloDetection(tmp_path, "train")
    assert ds.class_names == ["cat", "dog"] and ds.label_to_cat_id == [0, 1]
    assert [r.file_name for r in ds.records] == ["a.png", "b.png"] and ds.image_ids == [1, 2]
    image, target = ds[0]
    assert tuple(image.shape) == (3, 30, 40)
    assert target["boxes"].tolist() == [[10.0, 9.0, 30.0, 21.0], [0.0, 0.0, 10.0, 12.0]]
    assert target["labels"].tolist() == [0, 1]
    # b: centre (30, 15), size 4 x 6 -> [28, 12, 32, 18]
    assert ds[1][1]["boxes"].tolist() == [[28.0, 12.0, 32.0, 18.0]]
    assert ds.skipped == {}
    assert ds.coco_gt()["annotations"][0]["bbox"] == [10.0, 9.0, 20.0, 12.0]


def test_images_without_label_file_or_with_an_empty_one_are_negatives(tmp_path):
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n", "b.png": None, "c.png": "", "d.png": "\n  \n"})
    ds = YoloDetection(tmp_path, "train")
    assert [len(r.boxes) for r in ds.records] == [1, 0, 0, 0] and ds.skipped == {}
    assert tuple(ds[1][1]["boxes"].shape) == (0, 4)
    assert [r.file_name for r in YoloDetection(tmp_path, "train", keep_empty=False).records] == ["a.png"]


@pytest.mark.parametrize(
    "names, expected",
    [
        (["cat", "dog"], ["cat", "dog"]),
        ({0: "cat", 1: "dog", 2: "bird"}, ["cat", "dog", "bird"]),
        ({1: "dog", 0: "cat"}, ["cat", "dog"]),  # the index, not the order written, decides
        ({"0": "cat", "1": "dog"}, ["cat", "dog"]),  # quoted indices
    ],
)
def test_names_as_list_or_mapping(tmp_path, names, expected):
    make_yolo(tmp_path, {"a.png": "1 0.5 0.5 0.5 0.4\n"}, {"train": "images/train", "names": names})
    ds = YoloDetection(tmp_path)  # the only split
    assert ds.class_names == expected and ds.label_to_cat_id == list(range(len(expected)))
    assert ds[0][1]["labels"].tolist() == [1]


def test_nc_alone_names_the_classes_and_must_agree_with_names(tmp_path):
    make_yolo(tmp_path, {"a.png": ""}, {"train": "images/train", "nc": 3})
    assert YoloDetection(tmp_path).class_names == ["class_0", "class_1", "class_2"]
    make_yolo(tmp_path, {"a.png": ""}, {"train": "images/train", "nc": 3, "names": ["a", "b"]})
    with pytest.raises(DatasetError, match=r"data.yaml: nc is 3 but names has 2 entries"):
        YoloDetection(tmp_path)


@pytest.mark.parametrize(
    "content, words",
    [
        ("train: [images/train\nnames: [a]\n", r"data.yaml: malformed YAML at line 2"),
        ("- just\n- a list\n", r"data.yaml: expected a mapping"),
        ("train: images/train\n", r"data.yaml: no 'names'"),
        ("train: images/train\nnames: {0: a, 2: b}\n", r"indices 0..1, got \[0, 2\]"),
        ("train: images/train\nnames: [a, a]\n", r"duplicate class names \['a'\]"),
        ("train: images/train\nnames: [a, b]\ncategory_ids: [3]\n", r"category_ids must be 2 distinct integers"),
        ("train: images/nope\nnames: [a]\n", r"train: images/nope not found"),
        ("path: /no/such/root\ntrain: images/train\nnames: [a]\n", r"dataset root \(path: /no/such/root\) not found"),
    ],
)
def test_unreadable_data_yaml_is_an_error_naming_it(tmp_path, content, words):
    make_yolo(tmp_path, {"a.png": ""})
    (tmp_path / "data.yaml").write_text(content)
    for on_bad in ("error", "skip"):  # the class list and the layout cannot be skipped around
        with pytest.raises(DatasetError, match=words):
            YoloDetection(tmp_path, "train", on_bad=on_bad)


@pytest.mark.parametrize(
    "line, kind, words",
    [
        ("0 0.5 0.5 0.5", "malformed_entry", "expected 5 fields 'class cx cy w h'.*got 4: '0 0.5 0.5 0.5'"),
        ("0 0.5 0.5 0.5 0.4 0.1", "malformed_entry", "expected 5 fields.*got 6"),
        ("0 0.5 abc 0.5 0.4", "malformed_entry", "cy 'abc' is not a number"),
        ("1.5 0.5 0.5 0.5 0.4", "malformed_entry", "class '1.5' is not an integer index"),
        ("cat 0.5 0.5 0.5 0.4", "malformed_entry", "class 'cat' is not an integer index"),
        ("2 0.5 0.5 0.5 0.4", "unknown_class", r"class 2 is not an index of names \(0..1\)"),
        ("-1 0.5 0.5 0.5 0.4", "unknown_class", r"class -1 is not an index of names"),
        ("0 0.5 0.5 0 0.4", "degenerate_box", "box \\[0.5 0.5 0 0.4\\] has zero or negative width or height"),
        ("0 0.5 0.5 0.2 -0.1", "degenerate_box", "box \\[0.5 0.5 0.2 -0.1\\] has zero or negative width"),
        ("0 nan 0.5 0.2 0.1", "degenerate_box", "non-finite box values"),
        ("0 0.5 0.5 inf 0.1", "degenerate_box", "non-finite box values"),
        # centre (60, 15), size 8 x 6 on 40 x 30: [56, 12, 64, 18]
        ("0 1.5 0.5 0.2 0.2", "degenerate_box", r"box \[56.0, 12.0, 64.0, 18.0\] lies entirely outside the 40x30"),
    ],
)
def test_each_bad_line_raises_naming_file_and_line_or_is_counted(tmp_path, line, kind, words):
    make_yolo(tmp_path, {"a.png": f"0 0.5 0.5 0.5 0.4\n{line}\n", "b.png": "1 0.5 0.5 0.5 0.4\n"})
    with pytest.raises(DatasetError, match=f"labels/train/a.txt line 2: {words}.* for image 'a.png'"):
        YoloDetection(tmp_path, "train")
    ds = YoloDetection(tmp_path, "train", on_bad="skip")
    assert ds.skipped == {kind: 1}
    assert [len(r.boxes) for r in ds.records] == [1, 1]  # the good line of a.png is kept
    assert ds[0][1]["boxes"].tolist() == [[10.0, 9.0, 30.0, 21.0]]


def test_partly_outside_box_is_clipped_and_counted_under_either_policy(tmp_path):
    # centre (38, 15), size 8 x 6 on 40 x 30 -> [34, 12, 42, 18], clipped to x2 = 40.
    make_yolo(tmp_path, {"a.png": "0 0.95 0.5 0.2 0.2\n0 0.5 0.5 0.5 0.4\n"})
    for on_bad in ("error", "skip"):
        ds = YoloDetection(tmp_path, "train", on_bad=on_bad)
        assert ds[0][1]["boxes"].tolist() == [[34.0, 12.0, 40.0, 18.0], [10.0, 9.0, 30.0, 21.0]]
        assert ds.skipped == {"clipped_box": 1}
        assert ds.skip_examples["clipped_box"].startswith("labels/train/a.txt line 1: box clipped")


def test_rounding_of_normalised_labels_at_the_border_is_not_counted_as_clipping(tmp_path):
    # x1 = 0.1 - 0.2000004 / 2 = -2e-7 (a 6-digit label of a box at the border): snapped to 0.
    assert 2e-7 < EDGE_TOLERANCE
    make_yolo(tmp_path, {"a.png": "0 0.1 0.5 0.2000004 0.2\n"})
    ds = YoloDetection(tmp_path, "train")
    assert ds.skipped == {} and ds[0][1]["boxes"][0, 0].item() == 0.0


def test_polygon_lines_give_their_bounding_box(tmp_path):
    # (0.25, 0.2), (0.75, 0.3), (0.5, 0.9) on 40 x 30 -> [10, 6, 30, 27]
    make_yolo(tmp_path, {"a.png": "1 0.25 0.2 0.75 0.3 0.5 0.9\n"})
    box = YoloDetection(tmp_path, "train")[0][1]["boxes"]
    assert np.allclose(box.numpy(), [[10.0, 6.0, 30.0, 27.0]], atol=1e-5)


def test_missing_and_corrupt_images_of_a_list_file(tmp_path):
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n", "b.png": ""})
    (tmp_path / "images" / "train" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "train.txt").write_text("./images/train/a.png\nimages/train/gone.png\n./images/train/bad.png\n")
    make_yolo(tmp_path, {}, {"train": "train.txt", "names": ["cat", "dog"]})
    with pytest.raises(MissingFileError, match=r"train.txt line 2: image file not found: .*gone.png"):
        YoloDetection(tmp_path)
    ds = YoloDetection(tmp_path, on_bad="skip")
    assert ds.skipped == {"missing_image": 1, "corrupt_image": 1}
    assert [r.file_name for r in ds.records] == ["images/train/a.png"] and ds.image_ids == [1]
    assert ds[0][1]["boxes"].tolist() == [[10.0, 9.0, 30.0, 21.0]]
    (tmp_path / "train.txt").write_text("./images/train/a.png\n./images/train/bad.png\n")
    with pytest.raises(DatasetError, match=r"cannot read image file .*bad.png"):
        YoloDetection(tmp_path)


def test_an_unreadable_label_file_skips_its_image(tmp_path):
    make_yolo(tmp_path, {"a.png": "", "b.png": "0 0.5 0.5 0.5 0.4\n"})
    (tmp_path / "labels" / "train" / "a.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DatasetError, match=r"labels/train/a.txt: unreadable label file"):
        YoloDetection(tmp_path, "train")
    ds = YoloDetection(tmp_path, "train", on_bad="skip")
    assert ds.skipped == {"malformed_entry": 1} and [r.file_name for r in ds.records] == ["b.png"]
    assert ds.image_ids == [2]  # ids from the position in the list, before skipping


def test_label_path_follows_the_ultralytics_rule(tmp_path):
    assert label_path(Path("/d/images/train/sub/x.jpg")) == Path("/d/labels/train/sub/x.txt")
    # the last /images/ component only
    assert label_path(Path("/images/set/images/val/x.png")) == Path("/images/set/labels/val/x.txt")
    assert label_path(Path("/d/pics/x.jpeg")) == Path("/d/pics/x.txt")  # no images/: beside it
    make_yolo(tmp_path, {"sub/x.png": "1 0.5 0.5 0.5 0.4\n"})  # images found recursively
    ds = YoloDetection(tmp_path, "train")
    assert [r.file_name for r in ds.records] == ["sub/x.png"] and ds[0][1]["labels"].tolist() == [1]


def test_path_key_list_files_and_roboflow_parent_paths(tmp_path):
    root = tmp_path / "ds"
    make_yolo(root, {"a.png": "1 0.5 0.5 0.5 0.4\n"}, split="valid")
    # Roboflow: data.yaml in the root, `val: ../valid/images` -> root/valid/images
    (root / "valid").mkdir()
    (root / "images" / "valid").rename(root / "valid" / "images")
    (root / "labels" / "valid").rename(root / "valid" / "labels")
    (root / "data.yaml").write_text(yaml.safe_dump({"val": "../valid/images", "names": ["cat", "dog"]}))
    ds = YoloDetection(root / "data.yaml", "val")
    assert ds[0][1]["labels"].tolist() == [1] and ds.records[0].file_name == "a.png"
    # `path:` relative to data.yaml's folder, data.yaml elsewhere (any .yaml name)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"path": "ds", "val": "valid/images", "names": ["cat", "dog"]}))
    assert detect_kind(tmp_path / "mine.yaml") == "yolo"
    assert build_dataset(None, tmp_path / "mine.yaml", split="val")[0][1]["labels"].tolist() == [1]


def test_splits_and_detect_kind(tmp_path):
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n"})
    make_yolo(tmp_path, {"b.png": "", "c.png": ""}, split="val")
    assert yolo_splits(tmp_path) == ["train", "val"] and yolo_splits(tmp_path / "images") == []
    assert detect_kind(tmp_path) == "yolo" and detect_kind(tmp_path / "data.yaml") == "yolo"
    with pytest.raises(DatasetError, match=r"has the splits \['train', 'val'\]: pass split="):
        build_dataset("yolo", tmp_path)
    with pytest.raises(MissingFileError, match=r"no split 'test' \(splits: \['train', 'val'\]\)"):
        build_dataset("yolo", tmp_path, split="test")
    with pytest.raises(TypeError, match="takes no class_map"):
        build_dataset("yolo", tmp_path, split="val", class_map="x.csv")
    assert len(build_dataset("auto", tmp_path, split="val")) == 2


def test_build_datasets_takes_the_train_and_val_splits_by_default(tmp_path):
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n"})
    make_yolo(tmp_path, {"b.png": "", "c.png": "1 0.5 0.5 0.5 0.4\n"}, split="val")
    cfg = load_config(None, ["data.kind=yolo", f"data.train_path={tmp_path}", f"data.val_path={tmp_path}"])
    assert cfg.data.train_split is None and cfg.data.val_split is None
    train_ds, val_ds = build_datasets(cfg)
    assert (train_ds.split, len(train_ds), val_ds.split, len(val_ds)) == ("train", 1, "val", 2)
    # a split given by name; a val set with another class list is an error naming both
    cfg = load_config(None, [*[f"data.{k}" for k in ("kind=yolo", f"train_path={tmp_path}")], "data.train_split=val"])
    assert len(build_datasets(cfg)[0]) == 2
    other = make_yolo(tmp_path / "other", {"d.png": ""}, {"val": "images/val", "names": ["dog", "cat"]})
    (other / "images" / "val").mkdir(parents=True, exist_ok=True)
    write_image(other / "images" / "val" / "d.png")
    cfg = load_config(None, ["data.kind=yolo", f"data.train_path={tmp_path}", f"data.val_path={other}"])
    with pytest.raises(DatasetError, match=r"has the classes \[dog, cat\] but the training set has \[cat, dog\]"):
        build_datasets(cfg)


def test_category_ids_and_extra_file_of_the_converter(tmp_path):
    make_yolo(tmp_path, {"a.png": "1 0.5 0.5 0.5 0.4\n", "b.png": ""})
    (tmp_path / "extra.json").write_text(
        '{"splits": {"train": {"image_ids": {"a.png": 42, "b.png": 7}, "ignore_boxes": {"b.png": [[0, 1, 2, 5, 6]]}}}}'
    )
    data = {"train": "images/train", "names": ["cat", "dog"], "category_ids": [3, 9], "retinanet_extra": "extra.json"}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    ds = YoloDetection(tmp_path)
    assert ds.label_to_cat_id == [3, 9] and ds.image_ids == [42, 7]
    assert ds.records[1].ignore_boxes.tolist() == [[1.0, 2.0, 5.0, 6.0]] and len(ds.records[1].boxes) == 0
    gt = ds.coco_gt()
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in gt["annotations"]] == [(42, 9, 0), (7, 3, 1)]


def test_exif_orientation_is_counted_and_sizes_stay_the_stored_ones(tmp_path, caplog):
    make_yolo(tmp_path, {"a.png": "0 0.5 0.5 0.5 0.4\n"})
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees for display
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "train" / "b.jpg", exif=exif)
    with caplog.at_level(logging.WARNING, logger="retinanet.data"):
        ds = YoloDetection(tmp_path, "train")
    assert ds.exif_oriented == 1 and (ds.records[1].width, ds.records[1].height) == (40, 30)
    assert "1 images carry an EXIF orientation (e.g. b.jpg)" in caplog.text

"""`retinanet data convert`: round trips between COCO, VOC, CSV and YOLO keep boxes (to the
pixel), names, and the ids each format can hold; what a format cannot hold is counted; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datahelpers import coco_dict, write_image, write_json

from retinanet.cli import main
from retinanet.data import CocoDetection, DatasetError, build_dataset
from retinanet.data.convert import FORMATS, convert_dataset, integer_edges

REPO = Path(__file__).resolve().parents[2]
CROWD_NOTE = "crowd / difficult boxes dropped (CSV has no flag for them)"

# (id, file, w, h): ids that are not 1..N, a negative, a 10,000 px wide image (YOLO precision).
IMAGES = [(11, "a.png", 40, 30), (5, "b.png", 20, 20), (900, "c.png", 24, 32), (3, "wide.png", 10000, 8)]
ANNOTATIONS = [
    (11, 7, [2.25, 3.5, 10.5, 5.25], 0),
    (11, 3, [20.0, 10.0, 15.0, 12.0], 0),
    (11, 3, [0.0, 0.0, 30.0, 20.0], 1),  # crowd
    (900, 7, [1.5, 2.5, 4.0, 6.0], 0),
    (3, 3, [1234.5678, 1.25, 6419.7531, 5.5], 0),  # 6 decimals of 10,000 px: not exact
]


def coco_source(root: Path, images=IMAGES, annotations=ANNOTATIONS, split: str = "train") -> Path:
    """root/annotations/instances_<split>.json and root/<split>/ images (category ids 3 and 7)."""
    for _, name, w, h in images:
        write_image(root / split / name, w, h)
    write_json(root / "annotations" / f"instances_{split}.json", coco_dict(images, annotations))
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def by_image(gt: dict) -> dict:
    """file_name -> sorted [(category name, iscrowd, bbox)] of a COCO dict."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    out: dict[str, list] = {f: [] for f in files.values()}
    for a in gt["annotations"]:
        out[files[a["image_id"]]].append((names[a["category_id"]], a["iscrowd"], a["bbox"]))
    return {k: sorted(v, key=lambda t: (t[0], t[1], t[2])) for k, v in out.items()}


def max_box_error(a: dict, b: dict, crowd: bool = True) -> float:
    """The largest difference of a bbox value between two by_image() dicts of the same boxes."""
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        left = [t for t in a[name] if crowd or not t[1]]
        right = [t for t in b[name] if crowd or not t[1]]
        assert [t[:2] for t in left] == [t[:2] for t in right], name
        for (_, _, p), (_, _, q) in zip(left, right):
            # xywh -> xyxy: errors of the edges, which is what a format rounds
            pe = np.array([p[0], p[1], p[0] + p[2], p[1] + p[3]])
            qe = np.array([q[0], q[1], q[0] + q[2], q[1] + q[3]])
            worst = max(worst, float(np.abs(pe - qe).max()))
    return worst


def test_coco_to_yolo_to_coco_gives_back_the_same_dataset(tmp_path):
    src = coco_source(tmp_path / "src")
    yolo = tmp_path / "yolo"
    report = convert_dataset(src, "yolo", yolo)
    assert report["splits"]["train"] == {
        "from": "train",
        "images": 4,
        "boxes": 4,
        "crowd_or_difficult": 1,
        "skipped_at_reading": {},
        "clipped_at_reading": 0,
    }
    assert report["images"] == {"copied": 4} and report["dropped"] == {}
    # the label line of the first box of a.png: centre (7.5, 6.125), size 10.5 x 5.25 on 40 x 30
    assert (yolo / "labels/train/a.txt").read_text().splitlines()[0] == "1 0.187500 0.204167 0.262500 0.175000"
    assert (yolo / "labels/train/b.txt").read_text() == ""  # a negative

    back = tmp_path / "back"
    convert_dataset(yolo, "coco", back)
    original, again = (
        read_json(src / "annotations/instances_train.json"),
        read_json(back / "annotations/instances_train.json"),
    )
    assert [(c["id"], c["name"]) for c in again["categories"]] == [(3, "cat"), (7, "dog")]
    key = lambda im: (im["id"], im["file_name"], im["width"], im["height"])  # noqa: E731
    assert sorted(map(key, again["images"])) == sorted(map(key, original["images"]))
    # 6 decimals of the 10,000 px image: within 0.01 px, and not exact (the rounding is exercised)
    assert 0.001 < max_box_error(by_image(original), by_image(again)) < 0.011
    # the reader sees the same dataset: labels, ids, crowd boxes as ignore boxes
    a, b = CocoDetection(src / "train", src / "annotations/instances_train.json"), build_dataset(None, back)
    assert (b.class_names, b.label_to_cat_id, sorted(b.image_ids)) == (
        a.class_names,
        a.label_to_cat_id,
        sorted(a.image_ids),
    )
    assert b.records[[r.file_name for r in b.records].index("a.png")].ignore_boxes.tolist() == [[0, 0, 30, 20]]
    for im in ("a.png", "wide.png"):
        assert (back / "train" / im).read_bytes() == (src / "train" / im).read_bytes()  # not re-encoded


def test_coco_to_voc_to_coco_keeps_names_boxes_to_half_a_pixel_and_crowd_as_difficult(tmp_path):
    src = coco_source(tmp_path / "src")
    report = convert_dataset(src, "voc", tmp_path / "voc")
    assert any("category ids [3, 7] not kept" in n for n in report["notes"])
    assert any("image ids of ['train'] not kept" in n for n in report["notes"])
    xml = (tmp_path / "voc/Annotations/a.xml").read_text()
    # [2.25, 3.5, w 10.5, h 5.25]: edges 2.25 -> 2, 3.5 -> 4 (ties up), 12.75 -> 13, 8.75 -> 9; 1-based min
    assert "<xmin>3</xmin>" in xml and "<ymin>5</ymin>" in xml and "<xmax>13</xmax>" in xml and "<ymax>9</ymax>" in xml
    assert xml.count("<difficult>1</difficult>") == 1
    assert (tmp_path / "voc/ImageSets/Main/train.txt").read_text().split() == ["a", "b", "c", "wide"]
    voc = build_dataset(None, tmp_path / "voc", split="train")
    assert voc.kind == "voc" and voc.class_names == ["cat", "dog"]  # from labelmap.txt, in order
    convert_dataset(tmp_path / "voc", "coco", tmp_path / "back")
    original = read_json(src / "annotations/instances_train.json")
    again = read_json(tmp_path / "back/annotations/instances_train.json")
    assert [c["name"] for c in again["categories"]] == ["cat", "dog"]
    assert [im["file_name"] for im in again["images"]] == ["a.png", "b.png", "c.png", "wide.png"]
    assert 0.25 <= max_box_error(by_image(original), by_image(again)) <= 0.5


def test_coco_to_csv_to_coco_keeps_category_ids_and_counts_the_dropped_crowd_box(tmp_path):
    src = coco_source(tmp_path / "src")
    report = convert_dataset(src, "csv", tmp_path / "csv")
    assert report["dropped"] == {CROWD_NOTE: 1}
    rows = (tmp_path / "csv/train/train.csv").read_text().splitlines()
    assert rows[:3] == ["a.png,2,4,13,9,dog", "a.png,20,10,35,22,cat", "b.png,,,,,"]
    assert (tmp_path / "csv/classes.csv").read_text().splitlines() == ["cat,3", "dog,7"]
    convert_dataset(tmp_path / "csv/train/train.csv", "coco", tmp_path / "back", class_map=tmp_path / "csv/classes.csv")
    again = read_json(tmp_path / "back/annotations/instances_train.json")  # split named after train.csv
    assert [(c["id"], c["name"]) for c in again["categories"]] == [(3, "cat"), (7, "dog")]
    original = by_image(read_json(src / "annotations/instances_train.json"))
    assert max_box_error(original, by_image(again), crowd=False) <= 0.5
    assert sum(len(v) for v in by_image(again).values()) == 4  # the crowd box is gone


def test_every_format_is_reachable_from_every_other(tmp_path):
    src = coco_source(tmp_path / "src")
    original = by_image(read_json(src / "annotations/instances_train.json"))

    def read_back(fmt: str, folder: Path):
        if fmt == "csv":
            return build_dataset("csv", folder / "train/train.csv", class_map=folder / "classes.csv")
        return build_dataset(fmt, folder, split="train")

    def from_format(fmt: str, folder: Path, to: str, out: Path):
        if fmt == "csv":
            return convert_dataset(folder / "train/train.csv", to, out, class_map=folder / "classes.csv")
        return convert_dataset(folder, to, out)

    for first in FORMATS:
        convert_dataset(src, first, tmp_path / first)
        for second in FORMATS:
            out = tmp_path / f"{first}_{second}"
            from_format(first, tmp_path / first, second, out)
            ds = read_back(second, out)
            assert ds.kind == second and ds.class_names == ["cat", "dog"], (first, second)
            gt = ds.coco_gt() if second != "coco" else read_json(out / "annotations/instances_train.json")
            again = by_image(gt)
            keeps_crowd = "csv" not in (first, second)
            assert max_box_error(original, again, crowd=keeps_crowd) <= 1.0, (first, second)
            ids_kept = first in ("coco", "yolo") and second in ("coco", "yolo")
            assert sorted(ds.image_ids) == ([3, 5, 11, 900] if ids_kept else [1, 2, 3, 4]), (first, second)


def test_coco_masks_and_keypoints_are_counted_as_not_converted(tmp_path):
    src = coco_source(tmp_path / "src")
    data = read_json(src / "annotations/instances_train.json")
    data["annotations"][0]["segmentation"] = [[2, 3, 12, 3, 12, 8]]
    data["annotations"][3].update(segmentation=[[1, 2, 5, 2, 5, 8]], keypoints=[2, 3, 2], num_keypoints=1)
    write_json(src / "annotations/instances_train.json", data)
    report = convert_dataset(src, "yolo", tmp_path / "y")
    assert report["dropped"] == {
        "COCO masks not converted (boxes only)": 2,
        "COCO keypoints not converted (boxes only)": 1,
    }


def test_file_names_that_two_splits_share_are_kept_through_voc(tmp_path):
    src = coco_source(tmp_path / "src", images=IMAGES[:2], annotations=ANNOTATIONS[:2])
    coco_source(src, images=[(1, "a.png", 50, 50)], annotations=[(1, 7, [5, 5, 10, 10], 0)], split="val")
    convert_dataset(src, "voc", tmp_path / "voc")
    assert (tmp_path / "voc/ImageSets/Main/val.txt").read_text().split() == ["val/a"]
    assert (tmp_path / "voc/JPEGImages/train/a.png").is_file() and (tmp_path / "voc/JPEGImages/b.png").is_file()
    val = build_dataset("voc", tmp_path / "voc", split="val")
    assert [r.file_name for r in val.records] == ["a.png"] and val[0][1]["boxes"].tolist() == [[5, 5, 15, 15]]


def test_voc_reads_the_class_order_of_a_labelmap(tmp_path):
    src = coco_source(tmp_path / "src")
    convert_dataset(src, "voc", tmp_path / "voc")
    # Datumaro / CVAT write colours and a background entry; the order is the file's, not sorted
    (tmp_path / "voc/labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ndog:1,2,3::\ncat:::\n"
    )
    voc = build_dataset("voc", tmp_path / "voc", split="train")
    assert voc.class_names == ["dog", "cat"] and voc.label_to_cat_id == [1, 2]
    assert voc.records[0].labels.tolist() == [0, 1]  # a.png: the dog box, then the cat box
    (tmp_path / "voc/labelmap.txt").write_text("dog\ndog\n")
    with pytest.raises(DatasetError, match=r"labelmap.txt line 2: duplicate class name 'dog'"):
        build_dataset("voc", tmp_path / "voc", split="train")


def test_nested_file_names_keep_their_folders_and_find_their_labels(tmp_path):
    # CSV paths as written, one holding images/ itself: the label file follows the reader's rule
    for name in ("images/train/a.png", "sub/b.png"):
        write_image(tmp_path / "csv" / name, 40, 30)
    (tmp_path / "csv/ann.csv").write_text("images/train/a.png,10,9,30,21,cat\nsub/b.png,0,0,10,12,dog\n")
    convert_dataset(tmp_path / "csv/ann.csv", "yolo", tmp_path / "y", splits=["train"])
    assert (tmp_path / "y/images/train/labels/train/a.txt").is_file()  # from y/images/train/images/train/a.png
    ds = build_dataset("yolo", tmp_path / "y", split="train")
    assert [r.file_name for r in ds.records] == ["images/train/a.png", "sub/b.png"]
    assert [r.boxes.tolist() for r in ds.records] == [[[10, 9, 30, 21]], [[0, 0, 10, 12]]]
    convert_dataset(tmp_path / "y", "coco", tmp_path / "c")
    gt = read_json(tmp_path / "c/annotations/instances_train.json")
    assert [im["file_name"] for im in gt["images"]] == ["images/train/a.png", "sub/b.png"]
    assert (tmp_path / "c/train/sub/b.png").is_file()


def test_integer_edges_round_to_the_nearest_and_stay_one_pixel_wide():
    assert integer_edges([2.25, 3.5, 12.75, 8.75], 40, 30) == [2, 4, 13, 9]
    assert integer_edges([10.1, 3.0, 10.4, 8.0], 40, 30) == [10, 3, 11, 8]  # would be 0 px wide
    assert integer_edges([39.8, 29.7, 40.0, 30.0], 40, 30) == [39, 29, 40, 30]  # at the far border


def test_splits_can_be_chosen_and_renamed(tmp_path):
    src = coco_source(tmp_path / "src", images=IMAGES[:2], annotations=ANNOTATIONS[:2], split="train2017")
    coco_source(src, images=[(1, "z.png", 50, 50)], annotations=[], split="val2017")
    report = convert_dataset(src, "yolo", tmp_path / "y", splits=["val2017=val"])
    assert list(report["splits"]) == ["val"] and report["splits"]["val"]["from"] == "val2017"
    assert build_dataset("yolo", tmp_path / "y", split="val").records[0].file_name == "z.png"
    with pytest.raises(DatasetError, match=r"has no split 'test' \(splits: \['train2017', 'val2017'\]\)"):
        convert_dataset(src, "yolo", tmp_path / "y2", splits=["test"])
    # a source without splits: --split names the one written
    report = convert_dataset(src / "annotations/instances_train2017.json", "yolo", tmp_path / "y3", splits=["train"])
    assert list(report["splits"]) == ["train"] and report["splits"]["train"]["images"] == 2


def test_the_output_folder_must_be_new_or_a_previous_conversion(tmp_path):
    src = coco_source(tmp_path / "src")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        convert_dataset(src, "yolo", tmp_path / "busy")
    with pytest.raises(FileExistsError, match="holds no previous conversion"):
        convert_dataset(src, "yolo", tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy/keep.txt").read_text() == "mine"
    with pytest.raises(DatasetError, match="holds the source dataset"):
        convert_dataset(src / "annotations/instances_train.json", "yolo", src / "annotations", overwrite=True)
    convert_dataset(src, "yolo", tmp_path / "y")
    convert_dataset(src, "csv", tmp_path / "y", overwrite=True)  # replaced, not mixed
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["CONVERTED.json", "classes.csv", "train"]


def test_a_conversion_that_fails_while_writing_leaves_nothing_behind(tmp_path):
    src = coco_source(tmp_path / "src", images=[(1, "a.png", 40, 30), (2, "a.jpg", 40, 30)], annotations=[])
    with pytest.raises(DatasetError, match=r"'a.png' and 'a.jpg' would share a label file"):
        convert_dataset(src, "yolo", tmp_path / "y")
    assert not (tmp_path / "y").exists()
    with pytest.raises(DatasetError, match=r"'a.png' and 'a.jpg' would have the same VOC id 'a'"):
        convert_dataset(src, "voc", tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_link_images_links_instead_of_copying(tmp_path):
    src = coco_source(tmp_path / "src")
    report = convert_dataset(src, "coco", tmp_path / "c", link_images=True)
    assert report["images"] == {"hard-linked": 4}
    assert (tmp_path / "c/train/a.png").stat().st_ino == (src / "train/a.png").stat().st_ino


def test_bad_source_entries_stop_the_conversion_or_are_skipped_and_reported(tmp_path):
    src = coco_source(tmp_path / "src", annotations=[*ANNOTATIONS, (11, 99, [1, 1, 2, 2], 0)])
    with pytest.raises(DatasetError, match=r"annotations\[5\] \(id=6\): unknown category_id 99"):
        convert_dataset(src, "yolo", tmp_path / "y")
    assert not (tmp_path / "y").exists()
    report = convert_dataset(src, "yolo", tmp_path / "y", on_bad="skip")
    assert report["splits"]["train"]["skipped_at_reading"] == {"unknown_class": 1}


# ------------------------------------------------------------------ the command line
def test_cli_convert_prints_what_it_wrote_and_refuses_a_busy_folder(tmp_path, capsys):
    src = coco_source(tmp_path / "src")
    out = tmp_path / "y"
    assert main(["data", "convert", str(src), "--to", "yolo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"converted {src} (coco) -> {out} (yolo)" in printed
    assert "train: 4 images, 4 boxes + 1 crowd/difficult" in printed
    assert main(["data", "check", str(out), "--split", "train"]) == 0
    assert "boxes: 4" in capsys.readouterr().out
    assert main(["data", "convert", str(out), "--to", "csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds the source dataset" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["data", "convert", str(src), "--to", "yolo", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["data", "convert", str(out), "--to", "csv", "--out", str(tmp_path / "c"), "--link-images"]) == 0
    assert f"dropped: 1 {CROWD_NOTE}" in capsys.readouterr().out
    assert main(["data", "convert", str(src), "--to", "voc", "--out", str(tmp_path / "v"), "--class-map", "x"]) == 2
    assert "takes no class_map" in capsys.readouterr().err


def test_tiny_training_run_on_a_yolo_dataset_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RETINANET_NO_COMPILE", "1")
    synth, yolo = tmp_path / "synth", tmp_path / "yolo"
    assert main(["data", "synth", "--out", str(synth), "--train", "8", "--val", "4"]) == 0
    assert main(["data", "convert", str(synth), "--to", "yolo", "--out", str(yolo)]) == 0
    run = tmp_path / "run"
    argv = ["train", str(REPO / "configs/synth/retinanet_r18_synth.yaml"), "data.kind=yolo"]
    argv += [f"data.train_path={yolo}", f"data.val_path={yolo}", f"output_dir={run}", "train.max_iter=2"]
    argv += ["train.lr_steps=[]", "train.warmup_iters=0", "train.batch_size=2", "data.num_workers=0"]
    argv += ["model.min_size=64", "model.max_size=64", "model.pretrained_backbone=false"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "trained to iteration 2" in capsys.readouterr().out
    ckpt = torch.load(run / "model_final.pth", weights_only=True)
    assert ckpt["class_names"] == ["circle", "square", "triangle", "ring", "cross", "star"]
    last = torch.load(run / "last_checkpoint.pth", weights_only=True)
    assert last["iteration"] == 2 and last["label_to_category_id"] == [1, 2, 3, 4, 5, 6]  # data.yaml category_ids

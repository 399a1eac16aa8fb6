"""Each dataset kind on tiny generated data: targets, class maps, coco_gt, build_dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datahelpers import coco_dict, voc_xml, write_image, write_json
from faster_coco_eval import COCO, COCOeval_faster
from torch.utils.data import DataLoader

from retinanet.data import (
    VOC_CLASSES,
    CocoDetection,
    CsvDetection,
    VocDetection,
    build_dataset,
    collate_fn,
    detect_kind,
)


def perfect_ap(dataset) -> float:
    """AP of detections equal to the training targets, through the dataset's own coco_gt()."""
    results = []
    for i in range(len(dataset)):
        _, target = dataset[i]
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": target["image_id"],
                    "category_id": dataset.label_to_cat_id[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 0.9,
                }
            )
    gt = COCO(dataset.coco_gt())
    ev = COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


# --- COCO ------------------------------------------------------------------------------------


def test_coco_targets(coco_case):
    images_dir, ann, _ = coco_case
    ds = CocoDetection(images_dir, ann)
    assert len(ds) == 3 and ds.image_ids == [1, 2, 5]
    assert ds.class_names == ["cat", "dog"] and ds.label_to_cat_id == [3, 7]  # sorted by category id
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)  # the model converts on its device
    assert int(image[2, 0, 0]) == 90  # RGB order
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    # xywh -> xyxy; the crowd box is not a target.
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [20, 10, 35, 22]]
    assert target["labels"].tolist() == [1, 0]
    assert target["image_id"] == 1
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert ds[2][1]["boxes"].tolist() == [[1.5, 2.5, 5.5, 8.5]]
    assert ds.aspect_ratios() == pytest.approx([40 / 30, 1.0, 24 / 32])
    assert ds.records[0].ignore_boxes.tolist() == [[0, 0, 30, 20]]


def test_coco_gt_is_the_files_own_content(coco_case):
    images_dir, ann, data = coco_case
    ds = CocoDetection(images_dir, ann, keep_empty=False)
    assert ds.image_ids == [1, 5]
    gt = ds.coco_gt()
    assert [img["id"] for img in gt["images"]] == [1, 5]
    assert gt["categories"] == data["categories"]
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(gt["annotations"]) == 4 and len(crowd) == 1 and crowd[0]["bbox"] == [0, 0, 30, 20]
    assert perfect_ap(ds) == pytest.approx(1.0)


def test_dataloader_and_collate(coco_case):
    images_dir, ann, _ = coco_case
    ds = CocoDetection(images_dir, ann)
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_fn)))
    assert [tuple(im.shape) for im in images] == [(3, 30, 40), (3, 20, 20), (3, 32, 24)]
    assert [t["image_id"] for t in targets] == [1, 2, 5]


# --- VOC -------------------------------------------------------------------------------------


def make_devkit(root):
    voc = root / "VOCdevkit" / "VOC2007"
    write_image(voc / "JPEGImages" / "000001.jpg", 50, 40, fmt="JPEG")
    write_image(voc / "JPEGImages" / "000002.jpg", 30, 60, fmt="JPEG")
    objs = [("dog", (1, 1, 10, 20), 0), ("person", (11, 5, 50, 40), 0), ("cat", (5, 5, 8, 8), 1)]
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "000001.xml").write_text(voc_xml("000001.jpg", 50, 40, objs))
    (voc / "Annotations" / "000002.xml").write_text(voc_xml("000002.jpg", 30, 60, []))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n")
    return voc


def test_voc_devkit(tmp_path):
    voc = make_devkit(tmp_path)
    ds = VocDetection(voc, "train")
    assert ds.class_names == list(VOC_CLASSES) and ds.label_to_cat_id == list(range(1, 21))
    _, target = ds[0]
    # 1-based inclusive pixel indices -> pixel edges: (x1 - 1, y1 - 1, x2, y2).
    assert target["boxes"].tolist() == [[0, 0, 10, 20], [10, 4, 50, 40]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert ds[1][1]["boxes"].shape == (0, 4)
    # The difficult cat is no target, but crowd in the ground truth.
    gt = ds.coco_gt()
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(gt["annotations"]) == 3 and crowd[0]["bbox"] == [4.0, 4.0, 4.0, 4.0]
    assert crowd[0]["category_id"] == VOC_CLASSES.index("cat") + 1
    assert perfect_ap(ds) == pytest.approx(1.0)
    # Same dataset from VOCdevkit + year, and from VOCdevkit alone (one year inside).
    for kwargs in ({"year": 2007}, {}):
        again = VocDetection(tmp_path / "VOCdevkit", "train", **kwargs)
        assert again[0][1]["boxes"].tolist() == target["boxes"].tolist()


def test_voc_use_difficult(tmp_path):
    ds = VocDetection(make_devkit(tmp_path), "train", use_difficult=True)
    assert len(ds[0][1]["boxes"]) == 3
    gt = ds.coco_gt()
    assert len(gt["annotations"]) == 3 and sum(a["iscrowd"] for a in gt["annotations"]) == 1


def test_voc_plain_folder(tmp_path):
    folder = tmp_path / "labels"
    write_image(folder / "x.png", 32, 32)
    write_image(folder / "y.png", 20, 10)
    (folder / "x.xml").write_text(voc_xml("x.png", 32, 32, [("zebra", (2, 2, 10, 10), 0), ("ant", (3, 3, 4, 4), 0)]))
    # No <filename> match and no <size>: found by stem, size read from the image header.
    (folder / "y.xml").write_text(voc_xml("elsewhere.png", 0, 0, [("ant", (1, 1, 20, 10), 0)]))
    ds = VocDetection(folder)
    assert ds.class_names == ["ant", "zebra"]
    assert ds[0][1]["labels"].tolist() == [1, 0]
    assert ds.records[1].width == 20 and ds.records[1].height == 10
    assert ds[1][1]["boxes"].tolist() == [[0, 0, 20, 10]]
    explicit = VocDetection(folder, class_names=["zebra", "ant", "bee"])
    assert explicit[0][1]["labels"].tolist() == [0, 1] and explicit.num_classes == 3


# --- CSV -------------------------------------------------------------------------------------


def make_csv(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", 40, 30)
    write_image(tmp_path / "imgs" / "b.png", 20, 20)
    absolute = write_image(tmp_path / "other" / "c.png", 16, 16)
    ann = tmp_path / "annotations.csv"
    ann.write_text(f"imgs/a.png,1,2,11,12,dog\nimgs/a.png,5,5,30,25,cat\n\nimgs/b.png,,,,,\n{absolute},0,0,8,8,dog\n")
    classes = tmp_path / "classes.csv"
    classes.write_text("dog,5\ncat,2\n")
    return ann, classes


def test_csv(tmp_path):
    ann, classes = make_csv(tmp_path)
    ds = CsvDetection(ann, classes)
    assert ds.class_names == ["cat", "dog"] and ds.label_to_cat_id == [2, 5]
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[1, 2, 11, 12], [5, 5, 30, 25]]
    assert target["labels"].tolist() == [1, 0]
    assert ds[1][1]["boxes"].shape == (0, 4)  # `path,,,,,`: a negative
    assert ds[2][1]["boxes"].tolist() == [[0, 0, 8, 8]]
    assert perfect_ap(ds) == pytest.approx(1.0)
    # Without a class map: the names found, sorted, ids 0..K-1.
    inferred = CsvDetection(ann)
    assert inferred.class_names == ["cat", "dog"] and inferred.label_to_cat_id == [0, 1]
    assert perfect_ap(inferred) == pytest.approx(1.0)


# --- build_dataset / detect_kind --------------------------------------------------------------


def test_build_dataset_each_kind(tmp_path, coco_case):
    images_dir, ann, _ = coco_case
    ds = build_dataset("coco", ann)  # images/ beside the JSON's folder, inferred
    assert isinstance(ds, CocoDetection) and ds.images_dir == images_dir
    assert isinstance(build_dataset(None, ann, images_dir=images_dir), CocoDetection)
    csv_ann, classes = make_csv(tmp_path / "csv")
    assert isinstance(build_dataset("auto", csv_ann, class_map=classes), CsvDetection)
    voc = make_devkit(tmp_path / "voc")
    assert isinstance(build_dataset("voc", voc, split="train"), VocDetection)
    with pytest.raises(TypeError, match="class_map"):
        build_dataset("coco", ann, class_map=classes)
    with pytest.raises(ValueError, match="kind"):
        build_dataset("yolo", ann)


def test_build_coco_folder_with_split(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / split / "000001.png", 10, 10)
        write_json(
            tmp_path / "annotations" / f"instances_{split}.json",
            coco_dict([(1, "000001.png", 10, 10)], [(1, 3, [1, 1, 5, 5], 0)]),
        )
    assert detect_kind(tmp_path) == "coco"
    ds = build_dataset(None, tmp_path, split="val")
    assert ds.images_dir == tmp_path / "val" and len(ds) == 1
    with pytest.raises(FileNotFoundError, match="splits found"):
        build_dataset("coco", tmp_path, split="test")


def test_detect_kind(tmp_path, coco_case):
    _, ann, _ = coco_case
    csv_ann, _ = make_csv(tmp_path / "csv")
    voc = make_devkit(tmp_path / "voc")
    assert detect_kind(ann) == "coco"
    assert detect_kind(csv_ann) == "csv"
    assert detect_kind(voc) == "voc" and detect_kind(voc.parent) == "voc"
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.xml").write_text(voc_xml("a.png", 4, 4, []))
    assert detect_kind(tmp_path / "plain") == "voc"
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="notes.txt"):
        detect_kind(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        detect_kind(tmp_path / "nowhere")


def test_targets_are_copies(coco_case):
    """A transform that edits the target in place must not corrupt the dataset's records."""
    images_dir, ann, _ = coco_case

    def clobber(image, target):
        target["boxes"].zero_()
        return image, target

    ds = CocoDetection(images_dir, ann, transforms=clobber)
    ds[0]
    assert np.array_equal(ds.records[0].boxes, np.array([[2, 3, 12, 8], [20, 10, 35, 22]], np.float32))

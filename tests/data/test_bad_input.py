"""Every kind of bad input: an error naming the file and the entry, or a counted skip."""

from __future__ import annotations

import logging

import pytest
import torch
from datahelpers import voc_xml, write_image, write_json
from torch.utils.data import DataLoader

from retinanet.data import CocoDetection, CsvDetection, DatasetError, VocDetection, build_dataset, collate_fn


def csv_dataset(tmp_path, rows: str, classes: str = "dog,0\ncat,1\n", **kw) -> CsvDetection:
    write_image(tmp_path / "a.jpg", 40, 30, fmt="JPEG")
    write_image(tmp_path / "b.jpg", 40, 30, fmt="JPEG")
    (tmp_path / "annotations.csv").write_text(rows)
    (tmp_path / "classes.csv").write_text(classes)
    return CsvDetection(tmp_path / "annotations.csv", tmp_path / "classes.csv", **kw)


# --- degenerate boxes --------------------------------------------------------------------------


def test_csv_degenerate_box_message(tmp_path):
    rows = "a.jpg,1,1,5,5,dog\n" * 16 + "a.jpg,30,2,10,20,dog\n"
    with pytest.raises(DatasetError) as e:
        csv_dataset(tmp_path, rows)
    assert str(e.value) == "annotations.csv line 17: x2 (10.0) <= x1 (30.0) for image 'a.jpg'"


@pytest.mark.parametrize(
    "row, words",
    [
        ("a.jpg,1,9,5,9,dog", "y2 (9.0) <= y1 (9.0)"),
        ("a.jpg,nan,1,5,5,dog", "non-finite"),
        ("a.jpg,1,1,inf,5,dog", "non-finite"),
        ("a.jpg,50,40,60,45,dog", "entirely outside the 40x30 image"),
    ],
)
def test_csv_degenerate_kinds(tmp_path, row, words):
    with pytest.raises(
        DatasetError, match="annotations.csv line 2: .*" + words.replace("(", r"\(").replace(")", r"\)")
    ):
        csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\n" + row + "\n")
    ds = csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\n" + row + "\n", on_bad="skip")
    assert ds.skipped == {"degenerate_box": 1}
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 5, 5]]


def test_coco_degenerate_box(coco_case):
    images_dir, ann, data = coco_case
    data["annotations"][3]["bbox"] = [1, 1, 0, 5]
    write_json(ann, data)
    with pytest.raises(DatasetError) as e:
        CocoDetection(images_dir, ann)
    msg = str(e.value)
    assert "instances.json annotations[3] (id=4)" in msg and "zero or negative width" in msg and "'c.png'" in msg
    ds = CocoDetection(images_dir, ann, on_bad="skip")
    assert ds.skipped == {"degenerate_box": 1} and len(ds[2][1]["boxes"]) == 0


def test_voc_degenerate_box(tmp_path):
    write_image(tmp_path / "x.png", 20, 20)
    (tmp_path / "x.xml").write_text(voc_xml("x.png", 20, 20, [("cat", (1, 1, 5, 5), 0), ("cat", (9, 3, 4, 8), 0)]))
    with pytest.raises(DatasetError, match=r"x.xml object 1 \('cat'\): x2 \(4.0\) <= x1 \(9.0\) for image 'x.png'"):
        VocDetection(tmp_path)
    assert VocDetection(tmp_path, on_bad="skip").skipped == {"degenerate_box": 1}


# --- clipping ----------------------------------------------------------------------------------


def test_partly_outside_box_is_clipped_and_counted(tmp_path):
    for on_bad in ("error", "skip"):
        ds = csv_dataset(tmp_path, "a.jpg,-5,2,10,40,dog\na.jpg,30,20,45,35,cat\n", on_bad=on_bad)
        assert ds[0][1]["boxes"].tolist() == [[0, 2, 10, 30], [30, 20, 40, 30]]
        assert ds.skipped == {"clipped_box": 2}


# --- unknown classes -----------------------------------------------------------------------------


def test_unknown_class(tmp_path, coco_case):
    with pytest.raises(DatasetError, match="annotations.csv line 2: unknown class name 'horse' for image 'b.jpg'"):
        csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\nb.jpg,1,1,5,5,horse\n")
    ds = csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\nb.jpg,1,1,5,5,horse\n", on_bad="skip")
    assert ds.skipped == {"unknown_class": 1} and len(ds) == 2 and len(ds[1][1]["boxes"]) == 0

    images_dir, ann, data = coco_case
    data["annotations"][0]["category_id"] = 99
    write_json(ann, data)
    with pytest.raises(
        DatasetError, match=r"instances.json annotations\[0\] \(id=1\): unknown category_id 99 for image 'a.png'"
    ):
        CocoDetection(images_dir, ann)
    assert CocoDetection(images_dir, ann, on_bad="skip").skipped == {"unknown_class": 1}

    voc = tmp_path / "voc"
    write_image(voc / "x.png", 20, 20)
    (voc / "x.xml").write_text(voc_xml("x.png", 20, 20, [("cat", (1, 1, 5, 5), 0), ("emu", (1, 1, 5, 5), 0)]))
    with pytest.raises(DatasetError, match=r"x.xml object 1: unknown class name 'emu'"):
        VocDetection(voc, class_names=["cat"])
    assert VocDetection(voc, class_names=["cat"], on_bad="skip").skipped == {"unknown_class": 1}


# --- missing and corrupt images ------------------------------------------------------------------


def test_missing_image(tmp_path, coco_case):
    with pytest.raises(
        FileNotFoundError, match=r"annotations.csv \(first row for it: line 2\): image file not found: .*gone.jpg"
    ):
        csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\ngone.jpg,1,1,5,5,dog\n")
    ds = csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\ngone.jpg,1,1,5,5,dog\n", on_bad="skip")
    assert ds.skipped == {"missing_image": 1} and len(ds) == 1

    images_dir, ann, _ = coco_case
    (images_dir / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"instances.json images\[1\] \(id=2\): image file not found: .*b.png"):
        CocoDetection(images_dir, ann)
    ds = CocoDetection(images_dir, ann, on_bad="skip")
    assert ds.skipped == {"missing_image": 1} and ds.image_ids == [1, 5]
    assert [img["id"] for img in ds.coco_gt()["images"]] == [1, 5]

    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "x.xml").write_text(voc_xml("x.png", 20, 20, [("cat", (1, 1, 5, 5), 0)]))
    with pytest.raises(FileNotFoundError, match=r"x.xml: image file not found: .*x.png"):
        VocDetection(voc)


def test_corrupt_image_csv_header(tmp_path):
    rows = "a.jpg,1,1,5,5,dog\nb.jpg,1,1,5,5,dog\n"
    csv_dataset(tmp_path, rows)
    (tmp_path / "b.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"annotations.csv: cannot read image file .*b.jpg"):
        CsvDetection(tmp_path / "annotations.csv", tmp_path / "classes.csv")
    ds = CsvDetection(tmp_path / "annotations.csv", tmp_path / "classes.csv", on_bad="skip")
    assert ds.skipped == {"corrupt_image": 1} and len(ds) == 1


def test_corrupt_image_found_when_decoding(coco_case):
    images_dir, ann, _ = coco_case
    good = (images_dir / "a.png").read_bytes()
    (images_dir / "a.png").write_bytes(good[: len(good) // 2])  # truncated: header fine, pixels not
    ds = CocoDetection(images_dir, ann)  # construction checks existence only
    with pytest.raises(DatasetError, match=r"cannot decode image file .*a.png"):
        ds[0]
    with pytest.raises(DatasetError, match=r"cannot decode image file .*a.png"):
        CocoDetection(images_dir, ann, verify_images=True)
    ds = CocoDetection(images_dir, ann, on_bad="skip", verify_images=True)
    assert ds.skipped == {"corrupt_image": 1} and ds.image_ids == [2, 5]


def test_image_size_differs_from_annotation(coco_case):
    images_dir, ann, _ = coco_case
    write_image(images_dir / "c.png", 10, 10)  # annotated as 24x32
    ds = CocoDetection(images_dir, ann)
    with pytest.raises(DatasetError, match=r"c.png is 10x10 but its annotation says 24x32"):
        ds[2]
    assert CocoDetection(images_dir, ann, on_bad="skip", verify_images=True).skipped == {"corrupt_image": 1}


def test_worker_error_names_the_file(coco_case):
    images_dir, ann, _ = coco_case
    (images_dir / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    loader = DataLoader(CocoDetection(images_dir, ann), batch_size=3, num_workers=1, collate_fn=collate_fn)
    with pytest.raises(Exception, match=r"c.png"):
        next(iter(loader))


# --- malformed annotation files ------------------------------------------------------------------


def test_malformed_json(coco_case):
    images_dir, ann, _ = coco_case
    ann.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"instances.json: malformed JSON at line 1 column 13"):
        CocoDetection(images_dir, ann)
    ann.write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"instances.json: not a COCO instances file"):
        CocoDetection(images_dir, ann)


def test_malformed_coco_records(coco_case):
    images_dir, ann, data = coco_case
    data["annotations"][1]["bbox"] = [1, 2, 3]
    data["annotations"][3]["image_id"] = 42
    data["images"][1]["width"] = "wide"
    write_json(ann, data)
    with pytest.raises(DatasetError, match=r"images\[1\] \(id=2\): 'width'/'height' must be positive integers"):
        CocoDetection(images_dir, ann)
    ds = CocoDetection(images_dir, ann, on_bad="skip")
    assert ds.skipped == {"malformed_entry": 3} and ds.image_ids == [1, 5]
    assert ds.skip_examples["malformed_entry"].startswith(f"{ann} images[1]")
    data["categories"].append({"id": 3, "name": "again"})
    write_json(ann, data)
    with pytest.raises(DatasetError, match=r"categories\[2\]: duplicate category id 3"):
        CocoDetection(images_dir, ann, on_bad="skip")  # a bad class list is never skipped


@pytest.mark.parametrize(
    "row, words",
    [
        ("a.jpg,1,2,3,dog", "expected 6 columns 'path,x1,y1,x2,y2,class_name', got 5"),
        ("a.jpg,1,two,3,4,dog", "y1 'two' is not a number for image 'a.jpg'"),
        ("a.jpg,1,,3,4,dog", "some box fields are empty"),
    ],
)
def test_malformed_csv_rows(tmp_path, row, words):
    with pytest.raises(DatasetError) as e:
        csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\n" + row + "\n")
    assert str(e.value).startswith("annotations.csv line 2: ") and words in str(e.value)
    assert csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\n" + row + "\n", on_bad="skip").skipped == {"malformed_entry": 1}


def test_malformed_class_map(tmp_path):
    with pytest.raises(DatasetError, match=r"classes.csv line 2: class id 'x' is not an integer"):
        csv_dataset(tmp_path, "a.jpg,1,1,5,5,dog\n", classes="dog,0\ncat,x\n", on_bad="skip")


def test_malformed_voc(tmp_path):
    write_image(tmp_path / "x.png", 20, 20)
    write_image(tmp_path / "y.png", 20, 20)
    (tmp_path / "x.xml").write_text(voc_xml("x.png", 20, 20, [("cat", (1, 1, 5, 5), 0)]))
    (tmp_path / "y.xml").write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(DatasetError, match=r"y.xml: malformed XML \(mismatched tag: line 1"):
        VocDetection(tmp_path)
    ds = VocDetection(tmp_path, on_bad="skip")
    assert ds.skipped == {"malformed_entry": 1} and len(ds) == 1
    (tmp_path / "y.xml").write_text(voc_xml("y.png", 20, 20, [("cat", (1, "one", 5, 5), 0)]))
    with pytest.raises(DatasetError, match=r"y.xml object 0: <ymin> is 'one', not a number for image 'y.png'"):
        VocDetection(tmp_path)


def test_voc_xml_with_entities_is_refused(tmp_path):
    # An entity declaration (the seed of "billion laughs" expansion) is refused, not expanded:
    # the standard parser would read the file name as "x.png".
    write_image(tmp_path / "x.png", 20, 20)
    doctype = '<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY n "x">]>\n'
    (tmp_path / "x.xml").write_text(doctype + voc_xml("&n;.png", 20, 20, [("cat", (1, 1, 5, 5), 0)]))
    with pytest.raises(DatasetError, match=r"x.xml: refused, the XML declares entities"):
        VocDetection(tmp_path)
    (tmp_path / "y.xml").write_text(voc_xml("x.png", 20, 20, [("cat", (1, 1, 5, 5), 0)]))
    ds = VocDetection(tmp_path, on_bad="skip")
    assert ds.skipped == {"malformed_entry": 1} and len(ds) == 1


def test_voc_split_lists_missing_annotation(tmp_path):
    voc = tmp_path / "VOC2007"
    write_image(voc / "JPEGImages" / "1.jpg", 10, 10, fmt="JPEG")
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "1.xml").write_text(voc_xml("1.jpg", 10, 10, []))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("1\n2\n")
    with pytest.raises(FileNotFoundError, match=r"2.xml: annotation file not found"):
        VocDetection(voc, "val")
    assert VocDetection(voc, "val", on_bad="skip").skipped == {"missing_annotation": 1}
    with pytest.raises(FileNotFoundError, match=r"VOC split list not found: .*train.txt \(available: \['val'\]\)"):
        VocDetection(voc, "train")


# --- wrong paths -----------------------------------------------------------------------------------


def test_wrong_dataset_paths(tmp_path, coco_case):
    images_dir, ann, _ = coco_case
    with pytest.raises(FileNotFoundError, match=r"COCO annotation file not found: .*nope.json"):
        CocoDetection(images_dir, tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=r"COCO images folder not found: .*pics"):
        CocoDetection(tmp_path / "pics", ann)
    with pytest.raises(FileNotFoundError, match=r"CSV annotation file not found"):
        build_dataset("csv", tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match=r"VOC dataset path not found"):
        build_dataset("voc", tmp_path / "VOCdevkit")
    with pytest.raises(DatasetError, match=r"no VOC dataset at"):
        VocDetection(images_dir)  # a folder, but nothing VOC in it
    with pytest.raises(ValueError, match="on_bad"):
        CocoDetection(images_dir, ann, on_bad="ignore")


# --- logging: one warning per kind, one summary line ----------------------------------------------


def test_one_warning_per_kind_and_summary(tmp_path, caplog):
    rows = "a.jpg,9,1,5,5,dog\na.jpg,9,1,5,5,dog\na.jpg,9,1,5,5,dog\nb.jpg,1,1,5,5,emu\nb.jpg,1,1,5,5,emu\n"
    with caplog.at_level(logging.INFO, logger="retinanet.data"):
        ds = csv_dataset(tmp_path, rows, on_bad="skip")
    assert ds.skipped == {"degenerate_box": 3, "unknown_class": 2}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(r.name == "retinanet.data" for r in warnings)
    assert "line 1" in warnings[0].getMessage() and "line 4" in warnings[1].getMessage()
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(summary) == 1 and "degenerate_box=3, unknown_class=2" in summary[0]
    assert len(ds) == 2 and all(len(ds[i][1]["boxes"]) == 0 for i in range(2))
    assert ds[0][1]["boxes"].dtype == torch.float32

"""check_dataset / format_summary numbers on a hand-built dataset."""

from __future__ import annotations

from datahelpers import coco_dict, write_image, write_json

from retinanet.data import check_dataset, format_summary


def test_check_csv_summary(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_image(tmp_path / name, 200, 120)
    write_image(tmp_path / "tall.png", 50, 120)
    (tmp_path / "ann.csv").write_text(
        "a.png,0,0,10,10,dog\n"  # area 100: small
        "a.png,0,0,31,33,dog\n"  # 1023: small
        "a.png,0,0,32,32,cat\n"  # 1024: medium (COCO: small is < 32²)
        "b.png,10,10,106,106,cat\n"  # 96x90 = 8640: medium
        "b.png,0,0,100,97,cat\n"  # 9700: large
        "c.png,190,90,230,120,dog\n"  # clipped to 10x30: small
        "c.png,5,5,1,9,dog\n"  # degenerate: skipped
        "c.png,1,1,5,5,emu\n"  # unknown class: skipped
        "d.png,,,,,\n"  # a negative
        "tall.png,,,,,\n"
        "missing.png,1,1,5,5,dog\n"
    )
    (tmp_path / "classes.csv").write_text("cat,0\ndog,1\n")
    summary = check_dataset(tmp_path / "ann.csv", class_map=tmp_path / "classes.csv")
    assert summary["kind"] == "csv"
    assert summary["num_images"] == 5 and summary["num_images_without_boxes"] == 2
    assert summary["num_boxes"] == 6
    assert summary["boxes_per_class"] == {"cat": 3, "dog": 3}
    assert summary["images_per_class"] == {"cat": 2, "dog": 2}
    assert summary["box_sizes"] == {"small": 3, "medium": 2, "large": 1}
    assert summary["skipped"] == {"degenerate_box": 1, "unknown_class": 1, "missing_image": 1}
    assert summary["clipped"] == 1
    assert summary["aspect_groups"] == {"w>=h": 4, "w<h": 1}
    assert summary["boxes_per_image_max"] == 3
    assert summary["box_side"]["min"] == 10.0
    text = format_summary(summary)
    assert "images: 5  (without boxes: 2, 40.0%)" in text
    assert "small 3 (50.0%), medium 2 (33.3%), large 1 (16.7%)" in text
    assert "skipped unknown_class: 1  e.g. ann.csv line 8: unknown class name 'emu'" in text
    assert "clipped boxes (kept): 1" in text


def test_check_coco_infers_images_and_reports_crowd(tmp_path):
    write_image(tmp_path / "images" / "a.png", 64, 48)
    write_json(
        tmp_path / "ann.json",
        coco_dict([(1, "a.png", 64, 48)], [(1, 3, [0, 0, 40, 40], 0), (1, 7, [0, 0, 64, 48], 1)]),
    )
    summary = check_dataset(tmp_path / "ann.json")  # images/ beside the JSON
    assert summary["kind"] == "coco" and summary["num_boxes"] == 1 and summary["num_ignored_boxes"] == 1
    assert summary["box_sizes"] == {"small": 0, "medium": 1, "large": 0}
    text = format_summary(summary)
    assert "crowd/difficult not trained on: 1" in text and "no problems found" in text


def test_data_check_command_exit_status(tmp_path, capsys):
    from retinanet.cli import main

    def data_check(argv):
        return main(["data", "check", *argv])

    write_image(tmp_path / "a.png", 20, 20)
    (tmp_path / "ok.csv").write_text("a.png,1,1,5,5,dog\n")
    assert data_check([str(tmp_path / "ok.csv")]) == 0
    assert "1 classes" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("a.png,1,1,5,5,dog\na.png,9,1,5,5,dog\n")
    assert data_check([str(tmp_path / "bad.csv"), "--json"]) == 1
    assert '"degenerate_box": 1' in capsys.readouterr().out
    assert data_check([str(tmp_path / "bad.csv"), "--on-bad", "error"]) == 2
    assert "bad.csv line 2: x2 (5.0) <= x1 (9.0)" in capsys.readouterr().err
    assert data_check([str(tmp_path / "none.csv")]) == 2

"""`retinanet data tile` (retinanet/data/tile.py): the grid, boxes clipped to tiles (exact
coordinates), crowd slivers, negatives drawn at the ratio asked, and an output that `data
check` passes and `retinanet train` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datahelpers import coco_dict, write_json
from PIL import Image

from retinanet.cli import main
from retinanet.data import build_dataset, check_dataset
from retinanet.data.tile import axis_starts, tile_dataset, tile_windows, visible_fraction

TINY_TRAIN = (
    "train.max_iter=1",
    "train.lr_steps=[]",
    "train.warmup_iters=0",
    "train.batch_size=2",
    "data.num_workers=0",
    "model.min_size=64",
    "model.max_size=64",
    "model.pretrained_backbone=false",
)


def test_grid_covers_the_image_last_tile_at_the_border():
    assert axis_starts(200, 100, 0.2) == [0, 80, 100]  # step 80; the last moved back to end at 200
    assert axis_starts(100, 100, 0.2) == [0]
    assert axis_starts(60, 100, 0.2) == [0]  # a side shorter than a tile: one tile of 60
    assert axis_starts(1000, 256, 0.0) == [0, 256, 512, 744]
    w = tile_windows(60, 250, 100, 0.5)
    assert w.tolist() == [[0, 0, 100, 60], [50, 0, 150, 60], [100, 0, 200, 60], [150, 0, 250, 60]]
    with pytest.raises(ValueError, match="tile size 0"):
        tile_windows(10, 10, 0, 0.1)
    with pytest.raises(ValueError, match="tile overlap 1"):
        tile_windows(10, 10, 8, 1)


def test_visible_share_of_a_box_larger_than_the_tile():
    clipped, frac = visible_fraction(
        np.array([[5, 20, 195, 80], [70, 40, 110, 60], [120, 0, 130, 5]]), [0, 0, 100, 100]
    )
    assert clipped.tolist()[:2] == [[5, 20, 100, 80], [70, 40, 100, 60]]
    # 95 of the 100 px a tile can hold of a 190 px box; 30 of 40 px; not in view
    assert frac.tolist() == pytest.approx([0.95, 0.75, 0.0])


@pytest.fixture
def source(tmp_path):
    """A COCO dataset: big.png 200 x 100 with 4 boxes and a crowd box; empty.png 300 x 100."""
    rng = np.random.default_rng(0)
    images = tmp_path / "src" / "images"
    images.mkdir(parents=True)
    pixels = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "big.png")
    Image.fromarray(rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)).save(images / "empty.png")
    data = coco_dict(
        [(1, "big.png", 200, 100), (2, "empty.png", 300, 100)],
        [
            (1, 3, [10, 10, 20, 20], 0),  # A: tile 0 only
            (1, 7, [70, 40, 40, 20], 0),  # B: x 70..110, across the seams
            (1, 7, [150, 5, 49.5, 90.5], 0),  # C: x 150..199.5
            (1, 3, [5, 20, 190, 60], 0),  # D: wider than a tile
            (1, 3, [90, 70, 20, 20], 1),  # a crowd box
        ],
    )
    ann = write_json(tmp_path / "src" / "annotations" / "instances_train.json", data)
    return ann, pixels


def _tiles(out: Path, split="train") -> dict:
    data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
    by_image = {im["id"]: im for im in data["images"]}
    tiles = {}
    for im in data["images"]:
        tiles[tuple(im["window"])] = {"file": im["file_name"], "boxes": [], "crowd": []}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        key = "crowd" if a["iscrowd"] else "boxes"
        tiles[tuple(by_image[a["image_id"]]["window"])][key].append((a["category_id"], [x, y, x + w, y + h]))
    return {"data": data, "tiles": tiles}


def test_boxes_clipped_to_tiles_exactly(source, tmp_path):
    ann, pixels = source
    out = tmp_path / "tiles"
    summary = tile_dataset(build_dataset("coco", ann), out, 100, 0.2, empty_ratio=0)
    got = _tiles(out)
    big = {w: t for w, t in got["tiles"].items() if t["file"].startswith("big")}
    assert sorted(big) == [(0, 0, 100, 100), (80, 0, 180, 100), (100, 0, 200, 100)]

    def approx(items):  # x + w of the COCO file, to the micro-pixel
        return sorted((c, [round(v, 6) for v in b]) for c, b in items)

    assert approx(big[(0, 0, 100, 100)]["boxes"]) == [
        (3, [5, 20, 100, 80]),  # D: 95 of the 100 px a tile holds
        (3, [10, 10, 30, 30]),  # A
        (7, [70, 40, 100, 60]),  # B: 30 of 40 px
    ]
    assert approx(big[(80, 0, 180, 100)]["boxes"]) == [
        (3, [0, 20, 100, 80]),
        (7, [0, 40, 30, 60]),  # B
        (7, [70, 5, 100, 95.5]),  # C: 30 of 49.5 px in view
    ]
    assert approx(big[(100, 0, 200, 100)]["boxes"]) == [(3, [0, 20, 95, 80]), (7, [50, 5, 99.5, 95.5])]
    # Below --min-visible, or a crowd box of the source: crowd regions (not trained on, ignored in eval).
    assert approx(big[(100, 0, 200, 100)]["crowd"]) == [(3, [0, 70, 10, 90]), (7, [0, 40, 10, 60])]
    assert approx(big[(0, 0, 100, 100)]["crowd"]) == [(3, [90, 70, 100, 90])]
    assert approx(big[(80, 0, 180, 100)]["crowd"]) == [(3, [10, 70, 30, 90])]
    # The pixels are the source's, and the file names say where the tile was.
    tile = np.asarray(Image.open(out / "train" / "big_x80_y0.png"))
    assert np.array_equal(tile, pixels[0:100, 80:180])
    assert summary["tiles"] == 3 and summary["negatives"] == 0 and summary["source_boxes_lost"] == 0
    image = next(im for im in got["data"]["images"] if im["file_name"] == "big_x80_y0.png")
    assert image["source_file"] == "big.png" and image["source_image_id"] == 1 and image["width"] == 100
    assert got["data"]["categories"] == [
        {"id": 3, "name": "cat", "supercategory": ""},
        {"id": 7, "name": "dog", "supercategory": ""},
    ]


def test_output_passes_data_check_and_trains(source, tmp_path, capsys):
    ann, _ = source
    out = tmp_path / "tiles"
    argv = ["data", "tile", str(ann), "--size", "100", "--overlap", "0.2", "--out", str(out), "--min-visible", "0.7"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "6 tiles of 100 px from 2 images (3 with boxes, 3 of 4 empty ones as negatives)" in printed
    summary = check_dataset(out, verify_images=True, on_bad="error")
    assert summary["num_images"] == 6 and summary["num_images_without_boxes"] == 3 and not summary["skipped"]
    assert summary["num_boxes"] == 7  # C is 30/49.5 = 0.61 < 0.7 in view in the middle tile: crowd there
    assert main(["data", "check", str(out)]) == 0
    capsys.readouterr()
    json_file = out / "annotations" / "instances_train.json"
    run = ["train", "-", "data.kind=coco", f"data.train_path={json_file}", f"output_dir={tmp_path / 'run'}"]
    assert main([*run, *TINY_TRAIN]) == 0
    assert (tmp_path / "run" / "model_final.pth").is_file()


def test_negatives_at_the_ratio_asked_and_reproducible(tmp_path):
    # 10 empty images of 200 x 100 (3 tiles each) and one with a box in each of its 3 tiles.
    rng = np.random.default_rng(1)
    (tmp_path / "im").mkdir()
    images, anns = [], []
    for i in range(11):
        Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)).save(tmp_path / "im" / f"{i}.png")
        images.append((i + 1, f"{i}.png", 200, 100))
    anns = [(11, 3, [x, 10, 10, 10], 0) for x in (20, 130, 185)]
    ann = write_json(tmp_path / "ann" / "instances_train.json", coco_dict(images, anns))
    dataset = build_dataset("coco", ann, images_dir=tmp_path / "im")
    chosen = {}
    for ratio, seed, name in [
        (0, 0, "r0"),
        (2, 0, "r2"),
        (2, 0, "r2b"),
        (2, 5, "r2s5"),
        (1.5, 0, "r15"),
        (100, 0, "all"),
    ]:
        s = tile_dataset(dataset, tmp_path / name, 100, 0.2, empty_ratio=ratio, seed=seed, progress=False)
        assert s["tiles_with_boxes"] == 3 and s["negatives_available"] == 30
        assert s["negatives"] == {0: 0, 2: 6, 1.5: 4, 100: 30}[ratio]
        chosen[name] = sorted(p.name for p in (tmp_path / name / "train").iterdir())
    assert chosen["r2"] == chosen["r2b"] != chosen["r2s5"]  # seeded: the same tiles again


def test_bad_values_are_one_line_errors(source, tmp_path, capsys):
    ann, _ = source
    base = ["data", "tile", str(ann), "--out", str(tmp_path / "o")]
    for extra, words in [
        (["--size", "0"], "tile size 0"),
        (["--size", "64", "--overlap", "1"], "tile overlap 1.0"),
        (["--size", "64", "--overlap", "-0.5"], "tile overlap -0.5"),
        (["--size", "64", "--min-visible", "0"], "min visible 0"),
        (["--size", "64", "--empty-ratio", "-1"], "empty ratio -1"),
        (["--size", "64", "--class-map", "x.csv"], "class_map"),
    ]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert main(base + ["--size", "64"]) == 0
    capsys.readouterr()
    assert main(base + ["--size", "64"]) == 2  # the folder holds a tiled split already
    assert "already holds files" in capsys.readouterr().err


def test_csv_dataset_tiled(tmp_path, capsys):
    Image.fromarray(np.zeros((50, 120, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "ann.csv").write_text("a.png,10,10,30,40,boat\na.png,55,5,95,25,boat\n")
    out = tmp_path / "tiles"
    assert main(["data", "tile", str(tmp_path / "ann.csv"), "--size", "64", "--overlap", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    got = _tiles(out)["tiles"]
    assert sorted(got) == [(0, 0, 64, 50), (56, 0, 120, 50)]
    assert got[(0, 0, 64, 50)]["boxes"] == [(0, [10.0, 10.0, 30.0, 40.0])]
    assert got[(56, 0, 120, 50)]["boxes"] == [(0, [0.0, 5.0, 39.0, 25.0])]  # 39 of 40 px in view
    assert got[(0, 0, 64, 50)]["crowd"] == [(0, [55.0, 5.0, 64.0, 25.0])]


def test_a_dataset_without_boxes_is_refused(tmp_path, capsys):
    Image.fromarray(np.zeros((50, 120, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "ann.csv").write_text("a.png,,,,,\n")
    (tmp_path / "classes.csv").write_text("boat,0\n")
    argv = ["data", "tile", str(tmp_path / "ann.csv"), "--class-map", str(tmp_path / "classes.csv")]
    assert main(argv + ["--size", "64", "--out", str(tmp_path / "tiles")]) == 2
    err = capsys.readouterr().err
    assert "no tile of 64 px has a box" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tiles" / "annotations").exists()

"""Tiled prediction end to end (retinanet/inference/tiling.py, `predict --tile`, `eval --tile`):
a mosaic of images whose detections are known, found again in image pixels; the CLI's files
and its one-line errors."""

from __future__ import annotations

import json
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from retinanet.cli import main
from retinanet.config import Config, config_to_dict
from retinanet.data.synth import CLASSES, make_image
from retinanet.engine import tiling
from retinanet.engine.tiling import TileSpec, cut_mask, native_scale, predict_tiled
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig

PIECE, GAP, GRID = 128, 64, 4  # 16 pieces of 128 px, 64 px of grey between them: a 704 px mosaic
STEP = PIECE + GAP
SIDE = GRID * STEP - GAP


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, checkpoint path): a small RetinaNet trained for 20 iterations on 128 px synthetic
    images (about 15 s on one core), at scale 1 (min_size = max_size = 128)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18",
        num_classes=len(CLASSES),
        fpn_channels=64,
        head_convs=1,
        norm="bn",
        freeze_at=0,
        head_norm="gn",
        min_size=PIECE,
        max_size=PIECE,
        size_divisor=32,
        anchor_sizes=(16.0, 32.0, 64.0, 128.0, 256.0),
        score_thresh=0.05,
        detections_per_img=50,
    )
    model = build_model(cfg)
    data = [make_image(np.random.default_rng([5, i]), PIECE, PIECE) for i in range(32)]
    images = [torch.from_numpy(a).permute(2, 0, 1) for a, _ in data]
    targets = [
        {
            "boxes": torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([label for _, label in objs], dtype=torch.int64),
        }
        for _, objs in data
    ]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    for it in range(20):
        batch = [(it * 4 + k) % len(data) for k in range(4)]
        losses = model([images[i] for i in batch], [targets[i] for i in batch])
        opt.zero_grad()
        (losses["cls"] + losses["box"]).backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("tiling") / "model.pth"
    torch.save(
        {"model": model.state_dict(), "config": config_to_dict(Config(model=cfg)), "class_names": list(CLASSES)}, path
    )
    return model, path


@pytest.fixture(scope="module")
def mosaic():
    """(uint8 mosaic (SIDE, SIDE, 3), the pieces, their ground truth [(box, label)] in mosaic pixels)."""
    image = np.full((SIDE, SIDE, 3), 128, np.uint8)
    pieces, truth = [], []
    for i in range(GRID * GRID):
        piece, objects = make_image(np.random.default_rng([9, i]), PIECE, PIECE)
        r, c = divmod(i, GRID)
        image[r * STEP : r * STEP + PIECE, c * STEP : c * STEP + PIECE] = piece
        pieces.append((piece, c * STEP, r * STEP))
        truth += [
            ([x1 + c * STEP, y1 + r * STEP, x2 + c * STEP, y2 + r * STEP], label) for (x1, y1, x2, y2), label in objects
        ]
    return image, pieces, truth


def _found(want, got, score_thresh):
    """Share of `want`'s detections (score >= score_thresh) that `got` has: a detection of the
    same label with IoU >= 0.9, among those with score >= score_thresh."""
    w, g = want["scores"] >= score_thresh, got["scores"] >= score_thresh - 1e-6
    iou = box_iou(want["boxes"][w], got["boxes"][g])
    same = want["labels"][w][:, None] == got["labels"][g][None]
    return float(((iou >= 0.9) & same).any(1).float().mean())


def test_mosaic_detections_found_in_image_pixels(trained, mosaic, monkeypatch):
    """Tiles of 128 px overlapping by 32 px start every 96 px: every piece (at multiples of 192)
    is exactly one tile, seen whole. The model runs on each piece alone at scale 1; tiled
    prediction of the mosaic, with the model's own input size set to 320 px, must find those
    detections again in mosaic pixels (IoU >= 0.9, same label). Detections that touch a piece's
    inner border are left out: in the mosaic they are objects cut by a tile border, the rule
    drops them when a neighbour sees them whole. The misses are detections that a neighbouring
    tile, which sees the same object at another offset, beats in the merge's NMS with a box of
    IoU 0.5-0.9: this model is noisy."""
    model, _ = trained
    image, pieces, _ = mosaic
    spec = TileSpec(PIECE, 0.25, batch_size=8)
    parts = []
    with native_scale(model, PIECE, PIECE), torch.no_grad():
        for piece, x, y in pieces:
            (det,) = model([torch.from_numpy(piece).permute(2, 0, 1)])
            det["boxes"] += torch.tensor([x, y, x, y])
            det["window"] = torch.tensor([[x, y, x + PIECE, y + PIECE]]).expand(len(det["boxes"]), 4)
            parts.append(det)
    want = {k: torch.cat([d[k] for d in parts]) for k in parts[0]}
    inner = cut_mask(want["boxes"], want["window"], SIDE, SIDE, spec.border_margin)
    want = {k: v[~inner] for k, v in want.items()}
    model.min_size = model.max_size = 320
    try:
        got = predict_tiled(model, image, spec)
        score_thresh = 0.1
        expected = int((want["scores"] >= score_thresh).sum())
        found = _found(want, got, score_thresh)
        print(f"{expected} detections of the pieces, {found:.1%} found; {len(got['boxes'])} in the mosaic")
        assert expected >= 300 and found >= 0.95
        # The same tiles resized to the model's 320 px: the detections are not the pieces' any more.
        monkeypatch.setattr(tiling, "native_scale", lambda m, h, w: nullcontext())
        assert _found(want, predict_tiled(model, image, spec), score_thresh) < 0.5
    finally:
        model.min_size = model.max_size = PIECE


def test_predict_cli_by_tiles(trained, mosaic, tmp_path, capsys):
    model, checkpoint = trained
    image, _, _ = mosaic
    Image.fromarray(image).save(tmp_path / "mosaic.png")
    out, coco = tmp_path / "preds", tmp_path / "all.json"
    argv = ["predict", "--weights", str(checkpoint), str(tmp_path / "mosaic.png"), "--out", str(out)]
    argv += [
        "--tile",
        "128",
        "--tile-overlap",
        "0.25",
        "--score-thresh",
        "0.2",
        "--batch-size",
        "8",
        "--coco",
        str(coco),
    ]
    assert main(argv + ["--no-fast"]) == 0
    result = json.loads((out / "mosaic.json").read_text())
    assert result["tiling"] == {"size": 128, "overlap": 0.25, "full_image": False}
    assert (result["width"], result["height"]) == (SIDE, SIDE)
    model.score_thresh = 0.2  # as the command sets it: scores below are dropped before the merge
    try:
        want = predict_tiled(model, image, TileSpec(128, 0.25))
    finally:
        model.score_thresh = 0.05
    want_boxes = want["boxes"][want["scores"] >= 0.2]
    got_boxes = torch.tensor([d["box"] for d in result["detections"]])
    assert len(got_boxes) == len(want_boxes) > 100
    assert torch.allclose(got_boxes, want_boxes, atol=0.01)
    assert Image.open(out / "mosaic.png").size == (SIDE, SIDE)
    assert len(json.loads(coco.read_text())["annotations"]) == len(got_boxes)
    assert f"1 images, {len(got_boxes)} detections" in capsys.readouterr().out
    # The fast path (BatchNorm folded, channels_last) finds the same boxes.
    assert main(argv + ["--out", str(tmp_path / "fast")]) == 0
    fast = torch.tensor([d["box"] for d in json.loads((tmp_path / "fast" / "mosaic.json").read_text())["detections"]])
    assert len(fast) == len(got_boxes) and torch.cdist(fast, got_boxes, p=float("inf")).min(1).values.max() < 0.05


@pytest.mark.parametrize(
    "options, words",
    [
        (["--tile", "0"], "tile size 0"),
        (["--tile", "-5"], "tile size -5"),
        (["--tile", "64", "--tile-overlap", "1"], "tile overlap 1.0"),
        (["--tile", "64", "--tile-overlap", "-0.2"], "tile overlap -0.2"),
        (["--tile", "64", "--tile-iou", "0"], "IoU threshold"),
        (["--tile-overlap", "0.5"], "--tile-overlap: only with --tile SIZE"),
        (["--tile-full-image"], "--tile-full-image: only with --tile SIZE"),
        (["--tile", "64", "--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_predict_bad_tile_options_are_one_line_errors(trained, tmp_path, capsys, options, words):
    _, checkpoint = trained
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    argv = ["predict", "--weights", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]
    assert main(argv + options) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_predict_tile_refuses_videos(trained, tmp_path, capsys):
    _, checkpoint = trained
    frames = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    argv = ["predict", "--weights", str(checkpoint), str(tmp_path / "clip.gif"), "--out", str(tmp_path / "o")]
    assert main(argv + ["--tile", "64"]) == 2
    assert "--tile: images only, not videos" in capsys.readouterr().err


def _coco_dataset(root, images, truth_per_image):
    """A COCO dataset of uint8 images [(name, array)] with [(box, label)] each; category id = label + 1."""
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    for k, ((name, array), truth) in enumerate(zip(images, truth_per_image), 1):
        Image.fromarray(array).save(root / "val" / name)
        data["images"].append({"id": k, "file_name": name, "width": array.shape[1], "height": array.shape[0]})
        for (x1, y1, x2, y2), label in truth:
            bbox = [x1, y1, x2 - x1, y2 - y1]
            ann = {"image_id": k, "category_id": label + 1, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
            data["annotations"].append({"id": len(data["annotations"]) + 1, **ann})
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(data))
    return path


def test_eval_by_tiles(trained, mosaic, tmp_path, capsys):
    model, checkpoint = trained
    image, _, truth = mosaic
    ann = _coco_dataset(tmp_path / "ds", [("mosaic.png", image)], [truth])
    base = ["eval", "-", "--weights", str(checkpoint), "data.kind=coco", f"data.val_path={ann}", "data.num_workers=0"]

    def ap(argv):
        assert main(argv) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        row = printed.split("| AP | AP50")[1].splitlines()[2]
        return printed, row  # (this model, trained for 20 iterations, has an AP near 0)

    # One tile as large as the image: the whole image at scale 1, as the model at that size.
    _, whole = ap(base + [f"model.min_size={SIDE}", f"model.max_size={SIDE}"])
    printed, one_tile = ap(base + ["--tile", str(SIDE)])
    assert one_tile == whole and f"tiled: {SIDE} px tiles at native scale, overlap 0.25" in printed
    # By 128 px tiles: the detections evaluated are those of tiled prediction.
    results = tmp_path / "results.json"
    ap(base + ["--tile", "128", "--tile-overlap", "0.25", "--results", str(results)])
    want = predict_tiled(model, image, TileSpec(128, 0.25))
    got = torch.tensor([r["bbox"] for r in json.loads(results.read_text())])
    assert len(got) == len(want["boxes"]) > 1000
    xywh = torch.cat([want["boxes"][:, :2], want["boxes"][:, 2:] - want["boxes"][:, :2]], 1)
    assert torch.cdist(got, xywh, p=float("inf")).min(1).values.max() < 0.01
    printed, _ = ap(base + ["--tile", "128", "--tile-full-image", "--max-images", "1"])
    assert "plus the full image" in printed
    assert main(base + ["--tile", "128", "--tile-overlap", "2"]) == 2
    assert "tile overlap 2.0" in capsys.readouterr().err

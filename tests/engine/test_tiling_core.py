"""Tiled prediction's core (retinanet/engine/tiling.py): native scale, the rule for objects on
tile borders, the full-image pass, tensor and PIL inputs, bounded memory on a 10,000 px image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_detections
from PIL import Image

from retinanet.engine import tiling
from retinanet.engine.tiling import TileSpec, cut_mask, detect_tiles, merge_tile_detections, native_scale, predict_tiled
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig
from retinanet.model.preprocess import resize_geometry


class BrightStub:
    """A stand-in detector with the model's contract and resize: for each colour channel c, one
    detection of label c, the bounding box of the pixels where channel c is bright (> 0.5), as
    far as the input shows it. It resizes its input as the model does (min_size / max_size), so
    that a tile fed at the wrong scale gives boxes rounded to the coarser grid."""

    nms_thresh = 0.5

    def __init__(self, min_size=800, max_size=1333):
        self.min_size, self.max_size = min_size, max_size
        self.input_sizes = []

    def __call__(self, images):
        out = []
        for im in images:
            x = im.float() / 255 if im.dtype == torch.uint8 else im.float()
            h, w = x.shape[-2:]
            scale, size, _ = resize_geometry(h, w, self.min_size, self.max_size, 1)
            if size != (h, w):
                x = F.interpolate(x[None], size=size, mode="nearest")[0]
            self.input_sizes.append(tuple(x.shape[-2:]))
            boxes, labels = [], []
            for c in range(3):
                bright = x[c] > 0.5
                if bright.any():
                    rows, cols = bright.any(1).nonzero().squeeze(1), bright.any(0).nonzero().squeeze(1)
                    box = [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]
                    boxes.append([v / scale for v in box])
                    labels.append(c)
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.full((len(boxes),), 0.9),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                }
            )
        return out


def _image(height, width, objects):
    """uint8 (H, W, 3), black, with filled rectangles {channel: [x1, y1, x2, y2]} (pixel edges)."""
    img = np.zeros((height, width, 3), np.uint8)
    for channel, (x1, y1, x2, y2) in objects:
        img[y1:y2, x1:x2, channel] = 255
    return img


def test_spec_checks_its_values():
    for kwargs, words in [
        (dict(size=0), "tile size 0"),
        (dict(size=-3), "tile size -3"),
        (dict(size=64, overlap=1.0), "tile overlap 1.0"),
        (dict(size=64, overlap=-0.1), "tile overlap -0.1"),
        (dict(size=4, overlap=0.9), "no step between tiles"),
        (dict(size=64, iou_threshold=0.0), "IoU threshold"),
        (dict(size=64, batch_size=0), "tiles per batch"),
    ]:
        with pytest.raises(ValueError, match=words):
            TileSpec(**kwargs)
    spec = TileSpec(512, 0.25)
    assert spec.border_margin == 10 and spec.whole_up_to == 128 - 20


def test_object_across_a_seam_is_reported_once_whole():
    # 300 x 300, tiles of 128 with 64 px overlap (starts 0, 64, 128, 172). The red object (30 x 40)
    # is cut by the inner borders of several tiles and whole in others; the green one (220 x 260)
    # is larger than any tile: cut in every tile that sees it.
    red, green = [110, 90, 140, 130], [40, 20, 260, 280]
    img = _image(300, 300, [(0, red), (1, green)])
    spec = TileSpec(128, 0.5)
    raw = detect_tiles(BrightStub(), img, spec)
    red_raw = raw["boxes"][raw["labels"] == 0]
    assert len(red_raw) == 9 and len({tuple(b) for b in red_raw.tolist()}) > 3  # partial boxes among them
    got = predict_tiled(BrightStub(), img, spec)
    assert got["labels"].tolist() == [0, 1] or got["labels"].tolist() == [1, 0]
    by_label = {int(label): box.tolist() for label, box in zip(got["labels"], got["boxes"])}
    assert by_label == {0: red, 1: green}


def test_merge_on_hand_made_tile_detections():
    # Two tiles side by side, overlapping in x 60..100; an image of 160 x 100.
    windows = torch.tensor([[0, 0, 100, 100], [60, 0, 160, 100]])
    dets = [  # (tile, box, score, label)
        (0, [50, 10, 90, 40], 0.8, 0),  # whole in tile 0 ...
        (1, [60, 10, 90, 40], 0.9, 0),  # ... cut by tile 1's left border: the same object, higher score
        (0, [20, 50, 100, 90], 0.6, 1),  # an object larger than the overlap: cut in both tiles
        (1, [60, 50, 150, 90], 0.7, 1),
        (0, [75, 2, 100, 8], 0.5, 2),  # two objects of one class, cut at the seam but not matching
        (1, [60, 92, 85, 98], 0.5, 2),
        (1, [64, 12, 88, 38], 0.4, 1),  # another class at the first object: kept
    ]
    tile = torch.tensor([d[0] for d in dets])
    boxes = torch.tensor([d[1] for d in dets], dtype=torch.float32)
    scores, labels = torch.tensor([d[2] for d in dets]), torch.tensor([d[3] for d in dets])
    assert cut_mask(boxes, windows[tile], 100, 160, 2).tolist() == [False, True, True, True, True, True, False]
    got = merge_tile_detections(boxes, scores, labels, tile, windows, (100, 160), 0.5, 2)
    found = sorted(
        (int(lab), box, round(float(s), 2)) for lab, box, s in zip(got["labels"], got["boxes"].tolist(), got["scores"])
    )
    assert found == [
        (0, [50.0, 10.0, 90.0, 40.0], 0.8),  # the whole one, not the cut one with the higher score
        (1, [20.0, 50.0, 150.0, 90.0], 0.7),  # the two pieces joined, the better score
        (1, [64.0, 12.0, 88.0, 38.0], 0.4),
        (2, [60.0, 92.0, 85.0, 98.0], 0.5),
        (2, [75.0, 2.0, 100.0, 8.0], 0.5),
    ]
    # Pieces join only across the seam they are cut at: x is cut at the bottom of tile 0, y at
    # the left (and bottom) of tile 1; they match where the tiles overlap but are not one object
    # cut by that seam, so NMS keeps the better one as it is (no union).
    grid = torch.tensor([[0, 0, 100, 100], [60, 0, 160, 100], [0, 60, 100, 160], [60, 60, 160, 160]])
    xy = torch.tensor([[70, 60, 95, 100], [62, 62, 90, 100]], dtype=torch.float32)
    two = merge_tile_detections(
        xy, torch.tensor([0.6, 0.5]), torch.tensor([4, 4]), torch.tensor([0, 1]), grid, (160, 160), 0.5, 2
    )
    assert two["boxes"].tolist() == [[70.0, 60.0, 95.0, 100.0]]
    # An object cut in a tile and missed where it was whole stays, as the tile saw it.
    alone = merge_tile_detections(boxes[1:2], scores[1:2], labels[1:2], tile[1:2], windows, (100, 160), 0.5, 2)
    assert alone["boxes"].tolist() == [[60.0, 10.0, 90.0, 40.0]]
    empty = merge_tile_detections(boxes[:0], scores[:0], labels[:0], tile[:0], windows, (100, 160), 0.5, 2)
    assert empty["boxes"].shape == (0, 4)


def test_pieces_of_a_long_object_over_many_tiles_join_into_one():
    # 1000 px long, tiles of 100 with overlap 0.25: cut into 13 pieces, chained in a row.
    img = _image(100, 1000, [(2, [5, 30, 995, 60])])
    got = predict_tiled(BrightStub(), img, TileSpec(100, 0.25))
    assert got["boxes"].tolist() == [[5.0, 30.0, 995.0, 60.0]] and got["labels"].tolist() == [2]


def test_tiles_run_at_native_scale_whatever_the_model_size():
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18",
        num_classes=3,
        fpn_channels=32,
        head_convs=1,
        min_size=800,
        max_size=1333,
        size_divisor=32,
        score_thresh=0.0,
        detections_per_img=20,
    )
    model = build_model(cfg).eval()
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    img = np.random.default_rng(0).integers(0, 256, (96, 200, 3), dtype=np.uint8)
    got = predict_tiled(model, img, TileSpec(64, 0.25, batch_size=3))
    handle.remove()
    # 2 rows x 4 columns of 64 px tiles, 3 per pass, each at 64 px: not resized to 800
    assert seen == [(3, 3, 64, 64), (3, 3, 64, 64), (2, 3, 64, 64)]
    assert (model.min_size, model.max_size) == (800, 1333)  # restored
    assert len(got["boxes"]) > 0
    # A tile that is the whole image: exactly the model at scale 1.
    with native_scale(model, 64, 64), torch.no_grad():
        (direct,) = model([torch.from_numpy(img[:64, :64]).permute(2, 0, 1)])
    assert_same_detections(predict_tiled(model, img[:64, :64], TileSpec(64, 0.25)), direct, box_tol=0, score_tol=0)


def test_a_tile_fed_at_the_model_scale_would_be_wrong(monkeypatch):
    # The stub resizes its input as the model does (256 px tiles to 100 px, nearest): only at
    # the native scale is the box exact.
    img = _image(512, 512, [(0, [101, 203, 133, 227])])
    stub = BrightStub(min_size=100, max_size=100)
    assert predict_tiled(stub, img, TileSpec(256, 0.25))["boxes"].tolist() == [[101, 203, 133, 227]]
    assert set(stub.input_sizes) == {(256, 256)}
    monkeypatch.setattr(tiling, "native_scale", lambda model, h, w: nullcontext())
    resized = predict_tiled(stub, img, TileSpec(256, 0.25))["boxes"].tolist()
    assert len(resized) == 1 and resized != [[101, 203, 133, 227]] and set(stub.input_sizes) == {(256, 256), (100, 100)}


def test_full_image_pass_reports_an_object_larger_than_the_tiles():
    # The blue rectangle is larger than the tiles, cut in every tile that sees it; the full-image
    # pass (shrunk 5x: 1000 px -> 200, the stub's size) sees it whole, its box rounded to 5 px.
    # The pieces match it and are dropped: its box is the result. Without it, the pieces joined.
    img = _image(1000, 1000, [(2, [152, 253, 848, 747])])
    stub = BrightStub(min_size=200, max_size=200)
    got = predict_tiled(stub, img, TileSpec(300, 0.2, full_image=True))
    assert got["boxes"].tolist() == [[150.0, 255.0, 850.0, 745.0]] and got["labels"].tolist() == [2]
    assert stub.input_sizes[-1] == (200, 200)
    joined = predict_tiled(stub, img, TileSpec(300, 0.2))
    assert joined["boxes"].tolist() == [[152.0, 253.0, 848.0, 747.0]]


def test_pil_and_tensor_inputs_give_the_array_result():
    img = _image(300, 300, [(0, [110, 90, 140, 130]), (1, [40, 20, 260, 280])])
    spec = TileSpec(128, 0.5, full_image=True)
    want = predict_tiled(BrightStub(), img, spec)
    for image in (Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1).float() / 255):
        got = predict_tiled(BrightStub(), image, spec)
        assert torch.equal(got["boxes"], want["boxes"]) and torch.equal(got["labels"], want["labels"])


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    sys.path[:0] = sys.argv[1:]  # this folder and tests/ (helpers)
    from test_tiling_core import BrightStub, _image
    from retinanet.engine.tiling import TileSpec, predict_tiled

    def status_mb(key):  # VmRSS (now) / VmHWM (the peak since the last reset), KiB on Linux
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    objects = [(0, [1000, 990, 1030, 1060]), (1, [4980, 5000, 5040, 5050]), (2, [9900, 9950, 9990, 9999])]
    img = _image(10_000, 10_000, objects)
    img[::7, ::5, 0] = 1  # every page of the image written: resident before the measurement
    predict_tiled(BrightStub(), img[:1200, :1200], TileSpec(1000, 0.1))  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak to the current resident size: building the image is not counted
    before = status_mb("VmRSS")
    start = time.perf_counter()
    got = predict_tiled(BrightStub(), img, TileSpec(1000, 0.1, batch_size=4, full_image=True), progress=False)
    print(json.dumps({"before_mb": before, "after_mb": status_mb("VmHWM"), "seconds": time.perf_counter() - start,
                      "image_mb": img.nbytes / 2**20, "boxes": got["boxes"].tolist()}))
    """
)


def test_memory_stays_bounded_on_a_10000_px_image():
    """The peak resident memory of a process (VmHWM, reset before: numpy, torch and Python
    allocations alike) while it predicts a 10,000 x 10,000 image by 1000 px tiles: far below the 1.2 GB that
    one float copy of the image would take."""
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(Path(__file__).parent), str(Path(__file__).parents[1])],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = result["after_mb"] - result["before_mb"]
    print(f"10k x 10k: {result['image_mb']:.0f} MB uint8 image, extra peak {extra:.0f} MB, {result['seconds']:.1f} s")
    # measured 127 MB (tiles of 4 x 1000 px, float, and the full-image pass's strips); a float copy
    # of the image alone would be 1,144 MB
    assert extra < 400, result
    want = torch.tensor([[1000, 990, 1030, 1060], [4980, 5000, 5040, 5050], [9900, 9950, 9990, 9999]])
    got = torch.tensor(sorted(result["boxes"]))  # the full pass (12 px blocks) keeps none: small objects
    assert torch.equal(got, want.float())


def test_a_uint8_tensor_is_shrunk_to_the_same_picture_as_its_float_image():
    """Datasets yield uint8 tensors: the full-image pass of a tiled prediction shrinks them, and
    must hand the model the same [0, 1] picture as the float image would (not 0..255 floats)."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=g)
    as_float = tiling._Image(u8.float() / 255).reduced(4)
    as_uint8 = tiling._Image(u8).reduced(4)
    assert as_uint8.shape == (3, 16, 24) and as_uint8.dtype == torch.float32
    torch.testing.assert_close(as_uint8, as_float, rtol=0, atol=1e-6)
    assert torch.equal(tiling._Image(u8).reduced(1), u8)  # unshrunk: uint8 as it is (the model divides)

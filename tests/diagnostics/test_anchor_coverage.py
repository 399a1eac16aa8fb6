"""Anchor coverage (retinanet.diagnostics.anchors) on hand-built datasets, and `retinanet analyze anchors`."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.cli import main
from retinanet.data.common import BadInputPolicy, DetectionDataset, ImageRecord
from retinanet.diagnostics.anchors import (
    AnchorSetting,
    best_anchor_iou,
    candidate_settings,
    coverage_report,
    network_boxes,
    search_anchors,
)
from retinanet.model.anchors import STRIDES, AnchorGenerator
from retinanet.model.assignment import pairwise_iou
from retinanet.model.config import ModelConfig

# 256 x 256 images seen at scale 1 (min_size = max_size = 256, padded to 256): P3 anchor
# centres at 4 + 8 i, the 32 px square anchor of a centre spans centre ± 16.
CFG = ModelConfig(min_size=256, max_size=256)


def _dataset(boxes_per_image, size=(256, 256)) -> DetectionDataset:
    w, h = size
    records = [
        ImageRecord(
            i + 1,
            Path(f"{i}.png"),
            f"{i}.png",
            w,
            h,
            np.array(b, np.float32).reshape(-1, 4),
            np.zeros(len(b), np.int64),
        )
        for i, b in enumerate(boxes_per_image)
    ]
    return DetectionDataset(records, ["thing"], [1], BadInputPolicy("error", "hand-built"))


def _square(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


# 10 px boxes centred on anchor centres: the best anchor is a 32 px one containing the box,
# IoU 10² / 32² = 0.098 < 0.5 (every anchor has an area >= 32²): unreachable.
TINY = [_square(4 + 8 * i, 4 + 8 * j, 10) for i in (3, 7, 11) for j in (2, 9)]
# 32 px boxes centred on anchor centres: IoU 1 with the 32 px square anchor there.
EXACT = [_square(4 + 8 * i, 4 + 8 * i, 32) for i in (5, 12, 20)]
# a 32 px box 4 px right of an anchor centre: the best anchors are the 32 px squares 4 px left
# and right of its centre, IoU (28·32) / (2·32² − 28·32) = 896 / 1152 = 7/9.
SHIFTED = [_square(4 + 8 * 5 + 4, 4 + 8 * 5, 32)]


def test_unreachable_tiny_boxes_have_zero_coverage():
    nb = network_boxes(_dataset([TINY]), CFG)
    best = best_anchor_iou(nb, AnchorSetting.of(CFG))
    assert torch.allclose(best, torch.full((6,), 100 / 1024, dtype=torch.float64))
    report = coverage_report(_dataset([TINY]), CFG, search=False)
    all_ = report["configured"]["buckets"]["all"]
    assert (all_["boxes"], all_["covered"], all_["coverage"]) == (6, 0, 0.0)
    assert report["configured"]["buckets"]["small"]["coverage"] == 0.0
    medium = report["configured"]["buckets"]["medium"]
    assert medium["boxes"] == 0 and medium["coverage"] is None


def test_boxes_matching_an_anchor_have_full_coverage_and_a_shift_costs_iou():
    nb = network_boxes(_dataset([EXACT, SHIFTED]), CFG)
    best = best_anchor_iou(nb, AnchorSetting.of(CFG))
    assert best[:3].tolist() == [1.0, 1.0, 1.0]
    assert best[3].item() == pytest.approx(7 / 9, abs=1e-12)
    report = coverage_report(_dataset([EXACT, SHIFTED]), CFG, search=False)
    buckets = report["configured"]["buckets"]
    assert buckets["all"]["coverage"] == 1.0 and buckets["all"]["covered"] == 4
    assert buckets["all"]["mean_best_iou"] == pytest.approx((3 + 7 / 9) / 4)
    # 32² = 1024 is not below COCO's small limit (area < 32²): medium
    assert buckets["medium"]["boxes"] == 4 and buckets["small"]["boxes"] == 0
    assert buckets["2/3-3/2"]["boxes"] == 4 and buckets["h/w>3"]["boxes"] == 0


def test_mixed_dataset_buckets_and_aspect_ratios():
    # a 46 x 23 box (h/w = 0.5, medium) centred on an anchor centre holds the 32·√2 x 32/√2
    # ratio-0.5 anchor there: IoU 32² / (46 · 23) = 1024 / 1058
    wide = [_square(4 + 8 * 12, 4 + 8 * 12, 0)]
    wide[0] = [wide[0][0] - 23, wide[0][1] - 11.5, wide[0][2] + 23, wide[0][3] + 11.5]
    report = coverage_report(_dataset([TINY, EXACT, wide]), CFG, search=False)
    b = report["configured"]["buckets"]
    assert (b["all"]["boxes"], b["all"]["covered"]) == (10, 4)
    assert b["all"]["coverage"] == pytest.approx(0.4)
    assert (b["small"]["boxes"], b["small"]["coverage"]) == (6, 0.0)
    assert (b["medium"]["boxes"], b["medium"]["coverage"]) == (4, 1.0)
    assert (b["1/3-2/3"]["boxes"], b["1/3-2/3"]["coverage"]) == (1, 1.0)
    assert b["1/3-2/3"]["mean_best_iou"] == pytest.approx(1024 / 1058, abs=1e-6)
    assert (b["2/3-3/2"]["boxes"], b["2/3-3/2"]["covered"]) == (9, 3)


def test_scale_to_the_network_input_counts():
    # the same 10 px boxes in a 128 px image seen at 256: 20 px boxes, IoU 20² / 32² = 0.39
    # (still unreachable), centred on anchor centres (2 + 4 i) * 2 = 4 + 8 i
    boxes = [_square(2 + 4 * i, 2 + 4 * i, 10) for i in (5, 9)]
    nb = network_boxes(_dataset([boxes], size=(128, 128)), CFG)
    assert torch.allclose(nb.boxes[0], torch.tensor(_square(4 + 8 * 5, 4 + 8 * 5, 20), dtype=torch.float64))
    assert torch.allclose(best_anchor_iou(nb, AnchorSetting.of(CFG)), torch.full((2,), 400 / 1024, dtype=torch.float64))
    assert nb.orig_area.tolist() == [100.0, 100.0]  # COCO buckets use the original area


@pytest.mark.parametrize("style, offset, divisor", [("exact", 0.5, 128), ("torchvision", 0.0, 32)])
def test_best_iou_equals_brute_force_over_every_anchor(style, offset, divisor):
    # random boxes, including ones at the borders and larger than the image, in a 200 x 150
    # image seen at 160 / 200: the nearest-centre computation must equal the max over all anchors
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * torch.tensor([200.0, 150.0])
    wh = torch.exp(torch.rand(300, 2, generator=g) * 5) + 2
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(min=0)
    boxes = torch.minimum(boxes, torch.tensor([200.0, 150.0, 200.0, 150.0]))
    boxes = boxes[(boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)]
    cfg = ModelConfig(
        min_size=160,
        max_size=200,
        size_divisor=divisor,
        anchor_style=style,
        anchor_offset=offset,
        anchor_sizes=(16, 40, 100, 200, 400),
        aspect_ratios=(0.25, 1.0, 3.0),
        scales_per_octave=2,
    )
    nb = network_boxes(_dataset([boxes.tolist()], size=(200, 150)), cfg)
    fast = best_anchor_iou(nb, AnchorSetting.of(cfg), offset, style)
    hp, wp = (int(v) for v in nb.padded[0])
    gen = AnchorGenerator(cfg.anchor_sizes, cfg.scales_per_octave, cfg.aspect_ratios, offset=offset, style=style)
    anchors, _ = gen([(math.ceil(hp / s), math.ceil(wp / s)) for s in STRIDES], (hp, wp))
    brute = pairwise_iou(nb.boxes, anchors.double()).amax(dim=1)
    assert len(fast) > 200
    assert torch.allclose(fast, brute, atol=1e-6)


def test_search_proposes_anchors_that_reach_the_tiny_boxes():
    report = coverage_report(_dataset([TINY, EXACT]), CFG)
    conf, prop = report["configured"], report["proposed"]
    assert conf["buckets"]["all"]["coverage"] == pytest.approx(3 / 9)
    assert prop["buckets"]["all"]["coverage"] == 1.0  # measured on every box, not the sample
    assert prop["buckets"]["small"]["coverage"] == 1.0
    sizes = prop["setting"]["anchor_sizes"]
    assert sizes[0] < 16  # a P3 anchor near 10 px is needed
    assert prop["anchors_per_location"] == 9  # the configured count is preferred among equals
    assert prop["overrides"][0].startswith("model.anchor_sizes=[") and report["top"][0]["coverage"] == 1.0


def test_search_keeps_the_configured_anchors_when_they_are_as_good():
    report = coverage_report(_dataset([EXACT]), CFG)
    assert report["proposed"]["setting"] == report["configured"]["setting"]


def test_candidates_are_scored_like_single_settings():
    nb = network_boxes(_dataset([TINY, EXACT, SHIFTED]), CFG)
    candidates = candidate_settings(AnchorSetting.of(CFG), nb.aspect)[:40]
    results = search_anchors(nb, candidates, 0.5, CFG.anchor_offset, CFG.anchor_style)
    for r in results[::7]:
        best = best_anchor_iou(nb, r.setting)
        assert r.coverage == pytest.approx(float((best >= 0.5).double().mean()))
        assert r.mean_best_iou == pytest.approx(float(best.mean()))


def test_cli_analyze_anchors_writes_plot_and_json(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (256, 256), (90, 90, 90)).save(images / "a.png")
    Image.new("RGB", (256, 256), (90, 90, 90)).save(images / "b.png")
    anns = [(1, b) for b in TINY] + [(2, b) for b in EXACT]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 256, "height": 256},
            {"id": 2, "file_name": "b.png", "width": 256, "height": 256},
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": i,
                "category_id": 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]),
                "iscrowd": 0,
            }
            for k, (i, b) in enumerate(anns)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    png, js = tmp_path / "out" / "coverage.png", tmp_path / "coverage.json"
    argv = [
        "analyze",
        "anchors",
        str(ann),
        "--images-dir",
        str(images),
        "--out",
        str(png),
        "--json",
        str(js),
        "model.min_size=256",
        "max_size=256",
    ]  # a bare model option is model.<option>
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| small (<32²)   |       6 |       0.0% |" in printed
    assert "model.anchor_sizes=[" in printed
    report = json.loads(js.read_text())
    assert report["num_boxes"] == 9 and report["input"]["min_size"] == 256
    assert report["configured"]["buckets"]["all"]["covered"] == 3
    assert report["proposed"]["buckets"]["all"]["coverage"] == 1.0
    picture = Image.open(png)
    assert picture.format == "PNG" and picture.width > 1000
    assert main(["analyze", "anchors", str(ann), "--images-dir", str(images), "--out", str(png), "nonsense"]) == 2
    assert main(["analyze", "anchors", "--help"]) == 0
    assert "COCO size bucket" in " ".join(capsys.readouterr().out.split())


def test_class_imbalance_counts_anchors_and_pairs():
    from torchvision.ops import box_iou

    from retinanet.diagnostics.anchor_report import format_imbalance
    from retinanet.diagnostics.anchors import class_imbalance
    from retinanet.model.anchors import AnchorGenerator

    ds = _dataset([EXACT, [EXACT[0]]])
    nb = network_boxes(ds, CFG)
    im = class_imbalance(nb, CFG, num_classes=3)
    # 256 px: P3-P7 maps 32², 16², 8², 4², 2², 9 anchors per location
    assert im["images"] == 2 and im["anchors_per_image"] == (32**2 + 16**2 + 8**2 + 4**2 + 2**2) * 9 == 12276
    # Independently: torchvision's IoU against every anchor (IoU >= .5 positive, [.4, .5) ignored)
    generator = AnchorGenerator(CFG.anchor_sizes, CFG.scales_per_octave, CFG.aspect_ratios)
    anchors, _ = generator([(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], (256, 256))
    pos = ign = 0
    for boxes in (EXACT, [EXACT[0]]):
        best = box_iou(anchors, torch.tensor(boxes)).max(1).values
        pos += int((best >= 0.5).sum())
        ign += int(((best >= 0.4) & (best < 0.5)).sum())
    assert im["positive_per_image"] == pos / 2 and im["ignored_per_image"] == ign / 2 and pos > 4
    assert im["objects_per_image"] == 2 and im["positive_per_object"] == pos / 4
    neg = (2 * 12276 - pos - ign) * 3 + pos * 2  # every class of a negative anchor, the other classes of a positive
    assert im["negative_pairs_per_positive_pair"] == pytest.approx(neg / pos)
    assert "3 classes" in format_imbalance(im)
    # more classes, more negative pairs per positive: K = 80 has ~80/3 times as many
    assert class_imbalance(nb, CFG, num_classes=80)["negative_pairs_per_positive_pair"] == pytest.approx(
        ((2 * 12276 - pos - ign) * 80 + pos * 79) / pos
    )

"""Pictures: `retinanet data show` (ground truth with its positive anchors) and the example
predictions that evaluation logs to TensorBoard."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.cli import main
from retinanet.config import Config
from retinanet.data import build_dataset
from retinanet.diagnostics.show import match_anchors
from retinanet.engine import EVAL_EXAMPLES, evaluate
from retinanet.model.build import build_model
from retinanet.model.config import ModelConfig
from retinanet.utils.visualize import UNREACHED_COLOUR

# One 32 px square anchor per P3 location (centres 4 + 8 i), image seen at scale 1: every
# anchor coordinate is an integer, so the IoUs below are exact.
CFG = ModelConfig(min_size=256, max_size=256, aspect_ratios=(1.0,), scales_per_octave=1)
TINY = [23.0, 15.0, 33.0, 25.0]  # 10 px, centred on the anchor centre (28, 20)
EXACT = [84.0, 84.0, 116.0, 116.0]  # 32 px, centred on the anchor centre (100, 100)


def test_match_anchors_hand_built():
    m = match_anchors(torch.tensor([TINY, EXACT]), 256, 256, CFG)
    # TINY: the 32 px anchors centred within ±11 px (centre offsets -8, 0, 8 in x and in y: 9)
    # contain it, IoU 10² / 32²; none reaches 0.5, and all 9 are its low-quality matches.
    assert m["best_iou"][0].item() == pytest.approx(100 / 1024)
    assert not m["reached"][0]
    assert len(m["positives"][0]) == 0 and len(m["low_quality"][0]) == 9
    # EXACT: IoU 1 with the anchor on its centre, (24·32) / (2·32² − 24·32) = 0.6 with the 4
    # anchors 8 px away along one axis, 0.39 diagonally (and 1024 / 4096 with the P4 anchor
    # holding it): 5 positives.
    assert m["best_iou"][1].item() == 1.0 and m["reached"][1]
    assert len(m["positives"][1]) == 5 and len(m["low_quality"][1]) == 0
    centres = sorted(map(tuple, ((m["positives"][1][:, :2] + m["positives"][1][:, 2:]) / 2).tolist()))
    assert centres == [(92.0, 100.0), (100.0, 92.0), (100.0, 100.0), (100.0, 108.0), (108.0, 100.0)]
    low = m["low_quality"][0]
    assert sorted(map(tuple, ((low[:, :2] + low[:, 2:]) / 2).tolist())) == [
        (x, y) for x in (20.0, 28.0, 36.0) for y in (12.0, 20.0, 28.0)
    ]


def test_match_anchors_draws_in_original_pixels():
    # the same boxes in a 128 px image seen at 256: anchors come back at half size
    m = match_anchors(torch.tensor([[42.0, 42.0, 58.0, 58.0]]), 128, 128, CFG)
    assert len(m["positives"][0]) == 5
    assert (m["positives"][0] == torch.tensor([42.0, 42.0, 58.0, 58.0])).all(1).any()  # the anchor on its centre
    assert ((m["positives"][0][:, 2:] - m["positives"][0][:, :2]) == 16).all()  # 32 px anchors, halved


@pytest.fixture
def coco_dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (256, 256), (40, 40, 40)).save(images / "a.png")
    Image.new("RGB", (256, 256), (40, 40, 40)).save(images / "b.png")
    boxes = [(1, TINY, 1), (1, EXACT, 2), (2, EXACT, 1)]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 256, "height": 256},
            {"id": 2, "file_name": "b.png", "width": 256, "height": 256},
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": i,
                "category_id": c,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]),
                "iscrowd": 0,
            }
            for k, (i, b, c) in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "square"}],
    }
    ann = tmp_path / "annotations" / "instances_val.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(data))
    return ann, images


def test_cli_data_show_writes_pictures_marking_unreached_boxes(coco_dataset, tmp_path, capsys):
    ann, images = coco_dataset
    out = tmp_path / "show"
    argv = [
        "data",
        "show",
        str(ann),
        "--images-dir",
        str(images),
        "--out",
        str(out),
        "model.min_size=256",
        "max_size=256",
        "aspect_ratios=[1]",
        "scales_per_octave=1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "a.png: 2 boxes, positive anchors per box [0, 5], 1 without an anchor at IoU >= 0.5" in printed
    assert "b.png: 1 boxes, positive anchors per box [5]" in printed
    assert "3 boxes, 1 without an anchor" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    a = np.asarray(Image.open(out / "a.png").convert("RGB")).astype(int)
    b = np.asarray(Image.open(out / "b.png").convert("RGB")).astype(int)
    assert a.shape == (256, 256, 3)
    red = np.array(UNREACHED_COLOUR)
    # the unreached TINY box is outlined in red (its right edge, below the tag) ...
    assert (np.abs(a[18:24, 33] - red).sum(axis=1) < 30).any()
    # ... and the reached EXACT box is not: no red along its left edge
    assert not (np.abs(a[95:105, 84] - red).sum(axis=1) < 30).any()
    # the positive anchors 8 px away are drawn: pixels on the anchor centred at (108, 100),
    # right edge x = 124, differ from the background away from the box
    assert (b[100, 124] != 40).any() and (b[100, 150] == 40).all()
    assert main(["data", "show", str(ann), "--images-dir", str(images), "--out", str(out), "--index", "5"]) == 2
    assert main(["data", "show", "--help"]) == 0


def test_evaluation_logs_example_predictions_to_tensorboard(coco_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    ann, images = coco_dataset
    dataset = build_dataset("coco", ann, images_dir=images)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            backbone="resnet18", num_classes=2, fpn_channels=64, head_convs=1, min_size=96, max_size=96, size_divisor=32
        )
    )
    cfg = Config(model=model.config)
    cfg.data.num_workers = 0
    cfg.eval.batch_size = 1
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        metrics = evaluate(model, dataset, cfg, torch.device("cpu"), writer=writer, step=7)
    assert "AP" in metrics
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["eval/example_0", "eval/example_1"]  # 2 images < EVAL_EXAMPLES
    assert EVAL_EXAMPLES >= 2
    (image,) = events.Images("eval/example_0")
    assert (image.step, image.width, image.height) == (7, 256, 256)
    # the ground truth is drawn in white on the dark image
    import io

    pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert (pixels[100, 84] == 255).all()

"""The export wrapper, ONNX (onnxruntime) and TorchScript against the eager model."""

import warnings

import onnx
import pytest
import torch
from torch import nn

from retinanet import get_model
from retinanet.cli import main
from retinanet.config import Config, config_to_dict
from retinanet.deploy.export import (
    OUTPUT_NAMES,
    ExportableRetinaNet,
    compare_detections,
    export_onnx,
    export_torchscript,
    onnx_session,
    run_onnx,
    unpad_detections,
)

SIZES = [(120, 150), (200, 170)]  # (H, W): one downscaled, one upscaled by the 160/224 resize
DETECTIONS = 24  # some images have more detections above the threshold, some fewer: both paths


def _random_detector(**overrides) -> nn.Module:
    """A small RetinaNet whose random head gives well-spread scores and moderate boxes, so that
    a few dozen detections per image survive the threshold (the paper's init would give every
    anchor a score near π = 0.01 and near-identical boxes: nothing to compare)."""
    torch.manual_seed(0)
    cfg = dict(
        num_classes=3,
        fpn_channels=64,
        head_convs=2,
        min_size=160,
        max_size=224,
        size_divisor=32,
        score_thresh=0.62,
        detections_per_img=DETECTIONS,
    )
    cfg.update(overrides)
    model = get_model("retinanet_r18_fpn", **cfg).eval()
    with torch.no_grad():
        for subnet in (model.head.cls_subnet, model.head.box_subnet):
            for m in subnet.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.normal_(model.head.box_pred.weight, std=0.002)  # deltas ~0.2: boxes near their anchors
        model.head.cls_score.bias.fill_(-2.0)  # logits spread ~1.2 around -2
    return model


@pytest.fixture(scope="module")
def model():
    return _random_detector()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("export") / "retinanet.onnx")


def _batch(model, batch, size, seed):
    """Pixel noise: the hardest input for the resize (onnxruntime and torch place the bilinear
    samples a last bit apart, which noise turns into the largest pixel differences) and one that
    spreads the random head's scores widely."""
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_wrapper_equals_the_eager_model_exactly(model):
    wrapper = ExportableRetinaNet(model).eval()
    for seed, (batch, size) in enumerate([(1, SIZES[0]), (2, SIZES[1])]):
        images = _batch(model, batch, size, seed)
        with torch.no_grad():
            eager = model(list(images))
            boxes, scores, labels, num = wrapper(images)
        assert boxes.shape == (batch, DETECTIONS, 4) and scores.shape == labels.shape == (batch, DETECTIONS)
        c = compare_detections(eager, unpad_detections(boxes, scores, labels, num))
        assert c["same_counts"] and c["same_labels"] and c["max_box_diff"] == 0.0 and c["max_score_diff"] == 0.0
        # padding rows: label -1, score 0, box 0
        for b in range(batch):
            n = int(num[b])
            assert (labels[b, n:] == -1).all() and (scores[b, n:] == 0).all() and (boxes[b, n:] == 0).all()


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("size", SIZES)
def test_onnx_parity_with_eager(model, onnx_file, batch, size):
    images = _batch(model, batch, size, seed=10 * batch + size[0])
    with torch.no_grad():
        eager = model(list(images))
    got = run_onnx(onnx_session(onnx_file), images)
    counts = [len(d["scores"]) for d in eager]
    assert all(c > 0 for c in counts), "the parity test needs detections"
    assert [len(d["scores"]) for d in got] == counts
    for e, g in zip(eager, got):
        assert torch.equal(e["labels"], g["labels"])
        assert (e["boxes"] - g["boxes"]).abs().max() < 1e-3  # pixels
        assert (e["scores"] - g["scores"]).abs().max() < 1e-4
    print(f"ONNX parity batch {batch} size {size}: {counts} detections, {compare_detections(eager, got)}")


def test_onnx_graph_is_standard_with_dynamic_axes(onnx_file):
    graph = onnx.load(str(onnx_file)).graph
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" in ops and "Resize" in ops and "TopK" in ops
    assert all(n.domain in ("", "ai.onnx") for n in graph.node), "only standard ONNX operators"
    (inp,) = graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and dims == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)


def test_onnx_with_nothing_above_the_threshold(model, onnx_file):
    # a flat grey image gives this random head no score above its threshold (the eager model
    # agrees): an empty NonMaxSuppression, all-padding outputs
    images = torch.full((2, 3, *SIZES[0]), 0.5)
    with torch.no_grad():
        assert [len(d["scores"]) for d in model(list(images))] == [0, 0]
    boxes, scores, labels, num = onnx_session(onnx_file).run(None, {"images": images.numpy()})
    assert boxes.shape == (2, DETECTIONS, 4) and num.tolist() == [0, 0]
    assert (labels == -1).all() and (scores == 0).all() and (boxes == 0).all()


def test_onnx_parity_with_torchvision_style_anchors(tmp_path):
    # the converted torchvision weights' geometry: integer anchor sizes, strides = padded size //
    # feature size (computed in the graph), centres at i · stride, P6 from P5, padding to 32
    model = _random_detector(anchor_style="torchvision", anchor_offset=0.0, p6_from="p5", size_divisor=32)
    path = export_onnx(model, tmp_path / "tv.onnx")
    images = _batch(model, 2, (150, 190), seed=4)  # 160 x 202 at the input: not a multiple of 32
    with torch.no_grad():
        eager = model(list(images))
    c = compare_detections(eager, run_onnx(onnx_session(path), images))
    assert c["detections"] > 0 and c["same_counts"] and c["same_labels"]
    assert c["max_box_diff"] < 1e-3 and c["max_score_diff"] < 1e-4


def test_torchscript_parity_at_another_size_and_batch(model, tmp_path):
    path = export_torchscript(model, tmp_path / "retinanet.pt", example=_batch(model, 1, SIZES[0], seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        traced = torch.jit.load(str(path))
    images = _batch(model, 2, SIZES[1], seed=5)  # traced at batch 1, 120x150: sizes stay dynamic
    with torch.no_grad():
        eager = model(list(images))
        got = unpad_detections(*traced(images))
    c = compare_detections(eager, got)
    assert c["detections"] > 0 and c["same_counts"] and c["same_labels"]
    assert c["max_box_diff"] < 1e-4 and c["max_score_diff"] < 1e-6


# Sizes where the max_size cap binds and Python's min_size / side (the eager model) and torch's
# number / tensor (reciprocal · number) differ by an ulp that the floor turns into a pixel:
# 40x58 -> 154x224 (not 154x223), 70x40 -> 224x128 (not 223x127) at 160 / 224.
CAPPED_SIZES = [(40, 58), (70, 40)]


def test_export_resizes_as_the_model_where_the_cap_binds(model, onnx_file, tmp_path):
    wrapper = ExportableRetinaNet(model).eval()
    path = export_torchscript(model, tmp_path / "retinanet.pt", example=_batch(model, 1, SIZES[0], seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        traced = torch.jit.load(str(path))
    for size in CAPPED_SIZES:
        images = _batch(model, 1, size, seed=3)
        with torch.no_grad():
            assert wrapper.preprocess(images)[1].tolist() == model.preprocess(list(images))[1][0].tolist()
            eager = model(list(images))
            for got in (unpad_detections(*traced(images)), run_onnx(onnx_session(onnx_file), images)):
                c = compare_detections(eager, got)
                assert c["detections"] > 0 and c["same_counts"] and c["same_labels"]
                assert c["max_box_diff"] < 1e-3 and c["max_score_diff"] < 1e-4


def test_cli_export_onnx_checks_against_eager(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = cfg.model.replace(
        backbone="resnet18",
        num_classes=3,
        fpn_channels=64,
        head_convs=1,
        min_size=96,
        max_size=128,
        size_divisor=32,
        score_thresh=0.0,
    )
    from retinanet.model.build import build_model

    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": build_model(cfg.model).state_dict(), "config": config_to_dict(cfg)}, ckpt)
    out = tmp_path / "m.onnx"
    argv = ["export", "--weights", str(ckpt), "--format", "onnx", "--out", str(out), "--detections-per-img", "10"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "outputs boxes (B, 10, 4)" in printed
    assert "check (onnxruntime vs eager, 2 random 72x96 images): 20 detections" in printed and "MISMATCH" not in printed
    assert main(["export", "--weights", str(ckpt), "--format", "onnx", "--out", str(tmp_path)]) == 2  # a folder
    assert main(["export", "--help"]) == 0
    assert "NonMaxSuppression" in capsys.readouterr().out

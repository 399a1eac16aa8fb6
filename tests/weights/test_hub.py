"""torch.hub entry points (hubconf.py at the repository root), loaded from the local checkout."""

import os
from pathlib import Path

import torch
import torchvision
from helpers import assert_same_detections

from retinanet import VARIANTS, get_model
from retinanet.utils.download import cached_path
from retinanet.weights.torchvision import convert_torchvision_state_dict
from retinanet.weights.zoo import TORCHVISION_COCO_URL

REPO = Path(__file__).resolve().parents[2]


def test_hub_load_from_local_repo_builds_the_named_variant():
    kw = dict(num_classes=3, fpn_channels=64, head_convs=1)
    torch.manual_seed(0)
    plain = torch.hub.load(str(REPO), "retinanet_r18_fpn", source="local", fast=False, **kw)
    torch.manual_seed(0)
    reference = get_model("retinanet_r18_fpn", **kw)
    assert not plain.training  # ready to predict
    assert plain.config == reference.config
    assert plain.head.cls_score.out_channels == 9 * 3
    state, ref = plain.state_dict(), reference.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in state)


def test_hub_models_are_fast_by_default_with_the_plain_models_detections():
    """The default entry is optimize_for_inference's model (BatchNorm folded, channels_last):
    other weights layout, the same detections as the plain model of the same seed."""
    kw = dict(num_classes=3, fpn_channels=64, head_convs=1, score_thresh=0.0147)  # fewer than the 100 kept
    torch.manual_seed(0)
    fast = torch.hub.load(str(REPO), "retinanet_r18_fpn", source="local", **kw)
    torch.manual_seed(0)
    plain = torch.hub.load(str(REPO), "retinanet_r18_fpn", source="local", fast=False, **kw)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) or "FrozenBatchNorm" in type(m).__name__ for m in fast.modules())
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    with torch.no_grad():
        got, want = fast(images), plain(images)
    for g, w in zip(got, want):
        assert 5 < len(w["scores"]) < 100
        assert_same_detections(g, w)


def test_hubconf_has_one_entry_per_variant():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert hub.dependencies == ["torch", "torchvision"]
    for name in VARIANTS:
        entry = getattr(hub, name)
        assert callable(entry) and entry.__name__ == name and "RetinaNet" in entry.__doc__


def test_hub_load_torchvision_coco_weights_from_the_cache(torch_home, monkeypatch):
    # What the download would leave in the hub cache: a torchvision RetinaNet state dict (random
    # weights here, 3 classes to keep it small); hub must convert it without downloading.
    torch.manual_seed(0)
    reference = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    path = cached_path(TORCHVISION_COCO_URL)
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = torch.hub.load(
        str(REPO), "retinanet_r50_fpn", source="local", weights="torchvision-coco", score_thresh=0.2, fast=False
    )
    assert model.num_classes == 3 and model.score_thresh == 0.2 and not model.training
    assert model.config.anchor_style == "torchvision" and model.config.p6_from == "p5"
    converted = convert_torchvision_state_dict(reference.state_dict())
    state = model.state_dict()
    for key in ("head.cls_score.weight", "head.box_pred.bias", "fpn.p6.weight", "backbone.layer4.2.conv3.weight"):
        assert torch.equal(state[key], converted[key])

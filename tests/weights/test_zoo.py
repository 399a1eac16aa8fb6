"""Named variants and published weights, loaded from files the tests write (no network)."""

import os

import pytest
import torch
import torchvision

from retinanet import VARIANTS, from_torchvision, get_model
from retinanet.utils.download import cached_path
from retinanet.weights.zoo import TORCHVISION_COCO_URL


def _forbid_download(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


@pytest.mark.parametrize(
    "name,backbone_params",
    [
        ("retinanet_r18_fpn", 11.2e6),
        ("retinanet_r50_fpn", 23.5e6),
        ("retinanet_r101_fpn", 42.5e6),
        ("retinanet_x101_32x8d_fpn", 86.7e6),
    ],
)
def test_variants_build(name, backbone_params):
    model = get_model(name, num_classes=5)
    n = sum(p.numel() for p in model.backbone.parameters())
    assert abs(n - backbone_params) / backbone_params < 0.01
    assert model.head.cls_score.out_channels == 9 * 5
    assert set(VARIANTS) >= {"retinanet_r18_fpn", "retinanet_r50_fpn", "retinanet_r101_fpn", "retinanet_x101_32x8d_fpn"}


def test_pretrained_backbone_from_hub_cache(torch_home, monkeypatch):
    # What the real download would leave in the cache: torchvision's ImageNet ResNet-18 file.
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    path = cached_path(url)
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)
    _forbid_download(monkeypatch)
    model = get_model("retinanet_r18_fpn", num_classes=3, pretrained_backbone=True)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, reference.bn1.running_var)
    # a local file works the same
    model = get_model("retinanet_r18_fpn", num_classes=3, pretrained_backbone=path)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_torchvision_coco_weights_from_hub_cache(torch_home, monkeypatch):
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = cached_path(TORCHVISION_COCO_URL)
    assert os.path.basename(path) == "retinanet_resnet50_fpn_coco-eeacb38b.pth"
    os.makedirs(os.path.dirname(path))
    torch.save(tv.state_dict(), path)
    _forbid_download(monkeypatch)
    model = get_model("retinanet_r50_fpn", weights="torchvision-coco", score_thresh=0.2)
    assert model.num_classes == 91 and model.score_thresh == 0.2 and model.detections_per_img == 300
    direct = from_torchvision(tv.state_dict())
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert torch.equal(model.head.cls_score.bias, tv.head.classification_head.cls_logits.bias)


def test_bad_weights_files_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        get_model("retinanet_r18_fpn", weights=str(bad))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        get_model("retinanet_r18_fpn", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(KeyError, match="unknown weights"):
        get_model("retinanet_r18_fpn", weights="imagenet-21k")
    with pytest.raises(KeyError, match="unknown model"):
        get_model("retinanet_r7_fpn")
    with pytest.raises(TypeError, match="unknown model option"):
        get_model("retinanet_r18_fpn", num_clases=3)


def test_own_checkpoint_round_trip(tmp_path):
    model = get_model("retinanet_r18_fpn", num_classes=4)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    loaded = get_model("retinanet_r18_fpn", weights=str(path), num_classes=4)
    assert torch.equal(loaded.head.cls_score.weight, model.head.cls_score.weight)


def test_code_in_a_checkpoint_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="evil.pth"):
        get_model("retinanet_r18_fpn", weights=str(path))
    assert not (tmp_path / "pwned").exists()

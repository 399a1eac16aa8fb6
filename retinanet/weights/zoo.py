"""Named model variants, the only registry of the library, with their published weights."""

from __future__ import annotations

import torchvision

from .torchvision import from_torchvision
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.retinanet import RetinaNet
from ..utils.download import load_url_state_dict

VARIANTS: dict[str, dict] = {
    "retinanet_r18_fpn": {"backbone": "resnet18"},
    "retinanet_r34_fpn": {"backbone": "resnet34"},
    "retinanet_r50_fpn": {"backbone": "resnet50"},
    "retinanet_r101_fpn": {"backbone": "resnet101"},
    "retinanet_x101_32x8d_fpn": {"backbone": "resnext101_32x8d"},
}

# Published detector weights: variant -> {weights name: (URL, loader)}.
TORCHVISION_COCO_URL = torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.url
WEIGHTS = {"retinanet_r50_fpn": {"torchvision-coco": TORCHVISION_COCO_URL}}


def model_config(name: str, **overrides) -> ModelConfig:
    if name not in VARIANTS:
        raise KeyError(f"unknown model {name!r}; available: {sorted(VARIANTS)}")
    return ModelConfig(**VARIANTS[name]).replace(**overrides)


def get_model(name: str, weights: str | None = None, **overrides) -> RetinaNet:
    """Build a named variant, e.g. ``get_model("retinanet_r50_fpn", num_classes=20)``.

    overrides: any ModelConfig field (``pretrained_backbone=True`` loads torchvision's ImageNet
    weights). ``weights="torchvision-coco"`` (R50 only) fetches torchvision's COCO checkpoint
    (36.4 AP, 91 COCO category ids as labels) into the torch hub cache once and converts it;
    the model is then configured like torchvision's (see convert.from_torchvision). A path
    loads a state dict of this library (a training checkpoint or a bare state dict).
    """
    if weights is None:
        return build_model(model_config(name, **overrides))
    published = WEIGHTS.get(name, {})
    if weights in published:
        return from_torchvision(load_url_state_dict(published[weights]), **overrides)
    if "://" not in weights and not weights.endswith((".pth", ".pt")) and weights not in published:
        raise KeyError(f"unknown weights {weights!r} for {name}; published: {sorted(published)}, or a .pth/.pt path")
    state = load_url_state_dict(weights)
    model = build_model(model_config(name, **overrides))
    model.load_state_dict(state, strict=True)
    return model

"""Named model variants, the only registry of the library, with their published weights.

`load_model` / `get_model` (retinanet/weights/loader.py) build from it.
"""

from __future__ import annotations

import torchvision

from ..model.config import ModelConfig

VARIANTS: dict[str, dict] = {
    "retinanet_r18_fpn": {"backbone": "resnet18"},
    "retinanet_r34_fpn": {"backbone": "resnet34"},
    "retinanet_r50_fpn": {"backbone": "resnet50"},
    # torchvision's v2 architecture (P6 from C5, GroupNorm head, GIoU loss, its anchors and
    # preprocessing): the model of its 41.5 AP COCO weights.
    "retinanet_r50_fpn_v2": {
        "backbone": "resnet50",
        "p6_from": "c5",
        "head_norm": "gn",
        "box_loss": "giou",
        "anchor_offset": 0.0,
        "anchor_style": "torchvision",
        "loss_normalizer": "image",
        "size_divisor": 32,
        "detections_per_img": 300,
    },
    "retinanet_r101_fpn": {"backbone": "resnet101"},
    "retinanet_x101_32x8d_fpn": {"backbone": "resnext101_32x8d"},
}

# Published detector weights: variant -> {weights name: URL}. torchvision's COCO checkpoint is
# in torchvision's key layout, converted on load (retinanet/weights/torchvision.py).
TORCHVISION_COCO = "torchvision-coco"
TORCHVISION_COCO_V2 = "torchvision-coco-v2"
TORCHVISION_COCO_URL = torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.url
TORCHVISION_COCO_V2_URL = torchvision.models.detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1.url
WEIGHTS = {
    "retinanet_r50_fpn": {TORCHVISION_COCO: TORCHVISION_COCO_URL, TORCHVISION_COCO_V2: TORCHVISION_COCO_V2_URL},
    "retinanet_r50_fpn_v2": {TORCHVISION_COCO: TORCHVISION_COCO_V2_URL, TORCHVISION_COCO_V2: TORCHVISION_COCO_V2_URL},
}
DEFAULT_PUBLISHED = "retinanet_r50_fpn"  # the variant `--weights torchvision-coco` means


def model_config(name: str, **overrides) -> ModelConfig:
    """The ModelConfig of a named variant, with ModelConfig field overrides."""
    if name not in VARIANTS:
        raise KeyError(f"unknown model {name!r}; available: {sorted(VARIANTS)}")
    return ModelConfig(**VARIANTS[name]).replace(**overrides)


def coco_category_names() -> list[str]:
    """torchvision's names of the 91 COCO category ids (index = id; "N/A" for unused ids)."""
    return list(torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


__all__ = [
    "TORCHVISION_COCO",
    "TORCHVISION_COCO_URL",
    "TORCHVISION_COCO_V2",
    "TORCHVISION_COCO_V2_URL",
    "VARIANTS",
    "WEIGHTS",
    "coco_category_names",
    "model_config",
]

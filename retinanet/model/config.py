"""The model's configuration: one flat, typed record whose defaults are the paper's.

`build_model(cfg)` (retinanet/model/build.py) is the only place that reads it; every component
below takes plain arguments. Section numbers refer to Lin et al., "Focal Loss for Dense Object
Detection" (ICCV 2017); see shared SPEC §2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d")
NORMS = ("frozen_bn", "bn", "gn")
CLS_LOSSES = ("focal", "ce", "fl_star", "ohem")
BOX_LOSSES = ("smooth_l1", "l1")
NORMALIZERS = ("batch", "image")
ANCHOR_STYLES = ("exact", "torchvision")
P6_SOURCES = ("c5", "p5")


@dataclass
class ModelConfig:
    # --- backbone (§4: ResNet / ResNeXt, ImageNet-pretrained) ---
    backbone: str = "resnet50"
    norm: str = "frozen_bn"  # frozen_bn | bn (trainable) | gn (GroupNorm, 32 groups)
    # Stages frozen from the input on: 0 none, 1 stem, 2 stem + res2 (Detectron's FREEZE_AT=2 and
    # torchvision's trainable_layers=3 both freeze stem + res2), ... up to 5 (all).
    freeze_at: int = 2
    # False, True (torchvision's ImageNet weights, downloaded once into the torch hub cache) or a
    # path to a local state-dict file of the torchvision ResNet.
    pretrained_backbone: bool | str = False

    # --- FPN (§4: P3-P7, C = 256) ---
    fpn_channels: int = 256
    p6_from: str = "c5"  # the paper: P6 from C5; torchvision v1: from P5

    # --- heads (§4) ---
    num_classes: int = 80
    head_convs: int = 4
    head_norm: Optional[str] = None  # None (paper) or "gn"
    prior_prob: float = 0.01  # π, §3.3: last cls bias = -log((1-π)/π)

    # --- anchors (§4: 32^2..512^2 on P3-P7, 3 scales x 3 ratios) ---
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    scales_per_octave: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # Anchor centres at (i + offset) * stride. 0.5 is the pixel-centre convention of the paper's
    # Detectron code ((stride-1)/2 in its +1 box convention); torchvision and detectron2 use 0.
    anchor_offset: float = 0.5
    # "exact": sizes 2^(k/#sc) and strides 2^l. "torchvision": its integer sizes (32, 40, 50),
    # rounded base anchors and strides = padded image size // feature size (weight compatibility).
    anchor_style: str = "exact"

    # --- assignment (§4) ---
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    # Keep, for each box, its best-matching anchors even below fg_iou_thresh. Not in the paper's
    # text but in its code (Detectron) and in every peer but keras-retinanet: on by default.
    allow_low_quality_matches: bool = True
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)

    # --- losses (§3, §4) ---
    cls_loss: str = "focal"  # focal | ce (α-balanced CE when focal_alpha is set) | fl_star | ohem
    focal_alpha: Optional[float] = 0.25
    focal_gamma: float = 2.0
    fl_star_gamma: float = 2.0  # appendix A
    fl_star_beta: float = 1.0
    # OHEM (Table 1(d)): anchors kept per image, the NMS threshold over the scored anchors, and
    # None or 0.25 (the SSD-style 1:3 positive:negative minibatch).
    ohem_batch_size: int = 128
    ohem_nms_thresh: float = 0.7
    ohem_pos_fraction: Optional[float] = None
    box_loss: str = "smooth_l1"  # smooth_l1 | l1
    smooth_l1_beta: float = 0.11  # Detectron's RetinaNet setting
    # "batch": both losses summed over the batch and divided by the number of foreground anchors
    # in it (the paper). "image": per image, then the mean over images (torchvision).
    loss_normalizer: str = "batch"

    # --- input (§4: the image scale is the shorter side) ---
    min_size: int = 800
    # Training picks one of these per image when set (scale jitter, Table 2: 640-800).
    train_min_sizes: tuple[int, ...] = ()
    max_size: int = 1333
    # Pad to a multiple of the coarsest stride, 128 (Detectron's COARSEST_STRIDE for RetinaNet).
    size_divisor: int = 128
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    # --- inference (§4) ---
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def choice(name: str, value, allowed) -> None:
            if value not in allowed:
                raise ValueError(f"model.{name}={value!r}: expected one of {allowed}")

        choice("backbone", self.backbone, BACKBONES)
        choice("norm", self.norm, NORMS)
        choice("p6_from", self.p6_from, P6_SOURCES)
        choice("head_norm", self.head_norm, (None, "gn"))
        choice("cls_loss", self.cls_loss, CLS_LOSSES)
        choice("box_loss", self.box_loss, BOX_LOSSES)
        choice("loss_normalizer", self.loss_normalizer, NORMALIZERS)
        choice("anchor_style", self.anchor_style, ANCHOR_STYLES)
        if not 0 <= self.freeze_at <= 5:
            raise ValueError(f"model.freeze_at={self.freeze_at}: expected 0..5")
        if self.num_classes < 1:
            raise ValueError(f"model.num_classes={self.num_classes}: expected >= 1 (no background class)")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"model.anchor_sizes needs one size per level P3-P7, got {self.anchor_sizes}")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"model.prior_prob={self.prior_prob}: expected 0 < π < 1")
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("model.bg_iou_thresh must not exceed model.fg_iou_thresh")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"model.focal_alpha={self.focal_alpha}: expected 0..1 or None")
        if self.ohem_batch_size < 1:
            raise ValueError(f"model.ohem_batch_size={self.ohem_batch_size}: expected >= 1")
        if self.ohem_pos_fraction is not None and not 0.0 < self.ohem_pos_fraction < 1.0:
            raise ValueError(f"model.ohem_pos_fraction={self.ohem_pos_fraction}: expected None or 0 < f < 1")
        if self.focal_gamma < 0:
            raise ValueError(f"model.focal_gamma={self.focal_gamma}: expected >= 0")
        if self.norm == "gn" and self.pretrained_backbone:
            raise ValueError("ImageNet backbone weights are for BatchNorm: use norm=frozen_bn or bn")

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with `overrides` applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)


def torchvision_v1_config(num_classes: int = 91, **overrides) -> ModelConfig:
    """Exactly torchvision's `retinanet_resnet50_fpn` (v1): its anchors, P6 from P5, L1 box loss,
    per-image loss normalization, 800/1333 resize padded to 32, and 300 detections per image."""
    cfg = ModelConfig(
        backbone="resnet50",
        norm="frozen_bn",
        freeze_at=2,
        p6_from="p5",
        num_classes=num_classes,
        anchor_offset=0.0,
        anchor_style="torchvision",
        box_loss="l1",
        loss_normalizer="image",
        min_size=800,
        max_size=1333,
        size_divisor=32,
        detections_per_img=300,
    )
    return cfg.replace(**overrides)


__all__ = ["ModelConfig", "torchvision_v1_config", "IMAGENET_MEAN", "IMAGENET_STD"]

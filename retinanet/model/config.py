"""The model's configuration: one flat, typed record whose defaults are the paper's.

`build_model(cfg)` (retinanet/model/build.py) is the only place that reads it; every component
below takes plain arguments. Section numbers refer to Lin et al., "Focal Loss for Dense Object
Detection" (ICCV 2017).

The `Literal` aliases below are the one declaration of each set of choices: the components check
their arguments against them (`typing.get_args(ClsLoss)`), `validate()` checks a ModelConfig
against them, and `retinanet.config` checks YAML files and overrides against them. This module
imports nothing beyond the standard library, so the components pay nothing for these names.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, fields, replace
from functools import cache
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d"]
Norm = Literal["frozen_bn", "bn", "gn"]  # of the backbone
HeadNorm = Literal["gn"]  # of the subnets; None (the paper) is no normalization
P6Source = Literal["c5", "p5"]
AnchorStyle = Literal["exact", "torchvision"]
ClsLoss = Literal["focal", "ce", "fl_star", "ohem"]
BoxLoss = Literal["smooth_l1", "l1", "giou"]
LossNormalizer = Literal["batch", "image"]
WeightsClassMap = Literal["index", "names"]


def literal_choices(tp: Any) -> tuple | None:
    """The allowed values of a `Literal[...]` or `Optional[Literal[...]]` type, else None."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1 and get_origin(members[0]) is Literal:
            return (*get_args(members[0]), None)
    return None


@cache
def _choice_fields(cls: type) -> tuple[tuple[str, tuple], ...]:
    # get_type_hints resolves the string annotations of `from __future__ import annotations`.
    hints = get_type_hints(cls)
    return tuple((f.name, c) for f in fields(cls) if (c := literal_choices(hints[f.name])) is not None)


def check_choices(obj: Any, prefix: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` naming the first Literal-typed field of dataclass `obj` whose value is not
    one of its choices. `True == 1`, so the types are compared too."""
    for name, allowed in _choice_fields(type(obj)):
        value = getattr(obj, name)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise error(f"{prefix}.{name}={value!r}: expected one of {list(allowed)}")


@dataclass
class ModelConfig:
    # --- backbone (§4: ResNet / ResNeXt, ImageNet-pretrained) ---
    backbone: Backbone = "resnet50"
    norm: Norm = "frozen_bn"  # frozen_bn | bn (trainable) | gn (GroupNorm, 32 groups)
    # Stages frozen from the input on: 0 none, 1 stem, 2 stem + res2 (Detectron's FREEZE_AT=2 and
    # torchvision's trainable_layers=3 both freeze stem + res2), ... up to 5 (all).
    freeze_at: int = 2
    # False, True (torchvision's ImageNet weights, downloaded once into the torch hub cache) or a
    # path to a local state-dict file of the torchvision ResNet.
    pretrained_backbone: bool | str = False
    # Fine-tuning: the whole detector starts from these weights ("torchvision-coco", a checkpoint
    # of this library or a torchvision-format .pth), every tensor that fits loaded; the class
    # layer re-initialised (σ = 0.01, prior bias) when the class count differs, or with
    # weights_class_map="names" given the rows of the weights' classes of the same name.
    # Read by `retinanet train` and `load_model` (retinanet/weights/), not by build_model.
    weights: Optional[str] = None
    weights_class_map: WeightsClassMap = "index"

    # --- FPN (§4: P3-P7, C = 256) ---
    fpn_channels: int = 256
    p6_from: P6Source = "c5"  # the paper: P6 from C5; torchvision v1: from P5

    # --- heads (§4) ---
    num_classes: int = 80
    head_convs: int = 4
    head_norm: Optional[HeadNorm] = None  # None (paper) or "gn"
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
    anchor_style: AnchorStyle = "exact"

    # --- assignment (§4) ---
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    # Keep, for each box, its best-matching anchors even below fg_iou_thresh. Not in the paper's
    # text but in its code (Detectron) and in every peer but keras-retinanet: on by default.
    allow_low_quality_matches: bool = True
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)

    # --- losses (§3, §4) ---
    cls_loss: ClsLoss = "focal"  # focal | ce (α-balanced CE when focal_alpha is set) | fl_star | ohem
    focal_alpha: Optional[float] = 0.25
    focal_gamma: float = 2.0
    fl_star_gamma: float = 2.0  # appendix A
    fl_star_beta: float = 1.0
    # OHEM (Table 1(d)): anchors kept per image, the NMS threshold over the scored anchors, and
    # None or 0.25 (the SSD-style 1:3 positive:negative minibatch).
    ohem_batch_size: int = 128
    ohem_nms_thresh: float = 0.7
    ohem_pos_fraction: Optional[float] = None
    # smooth_l1 | l1 on the encoded deltas | giou: generalized IoU of the decoded box with its
    # ground truth (torchvision's v2 model; Rezatofighi et al. 2019)
    box_loss: BoxLoss = "smooth_l1"
    smooth_l1_beta: float = 0.11  # Detectron's RetinaNet setting
    # "batch": both losses summed over the batch and divided by the number of foreground anchors
    # in it (the paper). "image": per image, then the mean over images (torchvision).
    loss_normalizer: LossNormalizer = "batch"

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
        check_choices(self, "model")
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
        positive = ("fpn_channels", "min_size", "max_size", "size_divisor", "scales_per_octave")
        positive += ("topk_candidates", "detections_per_img")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)}: expected >= 1")
        if self.head_convs < 0:
            raise ValueError(f"model.head_convs={self.head_convs}: expected >= 0")
        if any(s < 1 for s in self.train_min_sizes):
            raise ValueError(f"model.train_min_sizes={list(self.train_min_sizes)}: expected sizes >= 1")
        if not self.aspect_ratios or any(not r > 0 for r in self.aspect_ratios):
            raise ValueError(f"model.aspect_ratios={list(self.aspect_ratios)}: expected positive ratios")
        if any(not s > 0 for s in self.anchor_sizes):
            raise ValueError(f"model.anchor_sizes={list(self.anchor_sizes)}: expected positive sizes")
        # `not 0 <= x <= 1` is also true for NaN, which would silently keep or drop everything.
        for name in ("score_thresh", "nms_thresh", "fg_iou_thresh", "bg_iou_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model.{name}={getattr(self, name)}: expected 0..1")
        if not self.smooth_l1_beta >= 0:
            raise ValueError(f"model.smooth_l1_beta={self.smooth_l1_beta}: expected >= 0")

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


def torchvision_v2_config(num_classes: int = 91, **overrides) -> ModelConfig:
    """Exactly torchvision's `retinanet_resnet50_fpn_v2` (41.5 COCO AP against v1's 36.4): v1's
    anchors and preprocessing, P6 from C5 (as the paper), GroupNorm in the head's subnets and the
    GIoU loss on decoded boxes."""
    return torchvision_v1_config(num_classes, p6_from="c5", head_norm="gn", box_loss="giou").replace(**overrides)


__all__ = ["ModelConfig", "torchvision_v1_config", "torchvision_v2_config", "IMAGENET_MEAN", "IMAGENET_STD"]

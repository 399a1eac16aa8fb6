"""The one place where a ModelConfig becomes a RetinaNet."""

from __future__ import annotations

from .anchors import AnchorGenerator
from .assignment import BoxCoder, Matcher
from .backbone import ResNetBackbone
from .config import ModelConfig
from .criterion import RetinaNetCriterion
from .fpn import FPN
from .head import RetinaNetHead
from .retinanet import RetinaNet


def build_model(cfg: ModelConfig) -> RetinaNet:
    cfg.validate()
    backbone = ResNetBackbone(cfg.backbone, norm=cfg.norm, freeze_at=cfg.freeze_at, pretrained=cfg.pretrained_backbone)
    fpn = FPN(backbone.out_channels, cfg.fpn_channels, p6_from=cfg.p6_from)
    anchors = AnchorGenerator(
        cfg.anchor_sizes, cfg.scales_per_octave, cfg.aspect_ratios, offset=cfg.anchor_offset, style=cfg.anchor_style
    )
    head = RetinaNetHead(
        cfg.fpn_channels,
        anchors.num_anchors_per_location,
        cfg.num_classes,
        num_convs=cfg.head_convs,
        norm=cfg.head_norm,
        prior_prob=cfg.prior_prob,
    )
    box_coder = BoxCoder(cfg.box_coder_weights, cfg.bbox_xform_clip)
    criterion = RetinaNetCriterion(
        Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches),
        box_coder,
        cls_loss=cfg.cls_loss,
        alpha=cfg.focal_alpha,
        gamma=cfg.focal_gamma,
        fl_star_gamma=cfg.fl_star_gamma,
        fl_star_beta=cfg.fl_star_beta,
        box_loss=cfg.box_loss,
        smooth_l1_beta=cfg.smooth_l1_beta,
        normalizer=cfg.loss_normalizer,
        ohem_batch_size=cfg.ohem_batch_size,
        ohem_nms_thresh=cfg.ohem_nms_thresh,
        ohem_pos_fraction=cfg.ohem_pos_fraction,
    )
    model = RetinaNet(
        backbone,
        fpn,
        head,
        anchors,
        criterion,
        box_coder,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        train_min_sizes=cfg.train_min_sizes,
        size_divisor=cfg.size_divisor,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        score_thresh=cfg.score_thresh,
        topk_candidates=cfg.topk_candidates,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
    )
    model.config = cfg
    return model

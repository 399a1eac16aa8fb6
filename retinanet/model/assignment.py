"""Anchor assignment (§4): IoU matching of anchors to ground-truth boxes, and the box coder.

Everything here is batched: ground truth comes padded to (B, M, 4) with a (B, M) validity mask,
so a batch is assigned with a handful of tensor ops and no per-image Python loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Sentinels of a per-anchor match index (>= 0 is the index of the assigned ground-truth box).
BACKGROUND = -1  # IoU < bg_iou_thresh with every box: an all-zero classification target
IGNORE = -2  # bg_iou_thresh <= IoU < fg_iou_thresh: no classification loss at all


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair. boxes1 (..., M, 4), boxes2 (..., N, 4), xyxy -> (..., M, N).

    Same arithmetic as torchvision.ops.box_iou (so that ties break identically), with leading
    batch dimensions broadcast.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


class Matcher:
    """Assigns each anchor to at most one ground-truth box by IoU (§4).

    IoU >= fg_thresh: foreground, matched to its highest-IoU box; IoU < bg_thresh: BACKGROUND;
    in between: IGNORE. With `allow_low_quality_matches`, each box also keeps the anchors with
    which it has its highest IoU (ties included) even below fg_thresh, so that no box goes
    without a positive (Detectron, the paper's code; torchvision; detectron2). Such an anchor is
    matched to its own highest-IoU box, as in those implementations. A box whose best IoU is 0
    gets no low-quality match (torchvision and detectron2 would match it to every anchor it does
    not touch, a quirk we do not copy).
    """

    def __init__(self, fg_thresh: float = 0.5, bg_thresh: float = 0.4, allow_low_quality_matches: bool = True):
        if bg_thresh > fg_thresh:
            raise ValueError(f"bg_thresh {bg_thresh} > fg_thresh {fg_thresh}")
        self.fg_thresh = fg_thresh
        self.bg_thresh = bg_thresh
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, gt_boxes: Tensor, gt_valid: Tensor, anchors: Tensor) -> Tensor:
        """gt_boxes (B, M, 4) xyxy, padded; gt_valid (B, M) bool; anchors (N, 4) xyxy.

        Returns matches (B, N) int64: index into M of the assigned box, or BACKGROUND / IGNORE.
        Images with no valid box (or M = 0) are all BACKGROUND.
        """
        B, M = gt_valid.shape
        N = anchors.shape[0]
        if M == 0:
            return torch.full((B, N), BACKGROUND, dtype=torch.int64, device=anchors.device)
        iou = pairwise_iou(gt_boxes, anchors)  # (B, M, N)
        iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
        best_iou, best_gt = iou.max(dim=1)  # (B, N)
        # torch.where, not boolean-mask assignment: no host-device synchronisation
        matches = torch.where(best_iou < self.fg_thresh, IGNORE, best_gt)
        matches = torch.where(best_iou < self.bg_thresh, BACKGROUND, matches)
        if self.allow_low_quality_matches:
            best_per_gt = iou.amax(dim=2, keepdim=True)  # (B, M, 1)
            is_best = (iou == best_per_gt) & (best_per_gt > 0)  # padded rows are -1: never best > 0
            low_quality = is_best.any(dim=1)  # (B, N)
            matches = torch.where(low_quality, best_gt, matches)
        return matches


class BoxCoder:
    """R-CNN box parameterisation (dx, dy, dw, dh) between anchors and boxes (§4, [Girshick 2015]).

    Widths are x2 - x1 (no +1), centres x1 + w/2, as in torchvision and detectron2. `weights`
    scale the four targets; `clip` bounds dw, dh before exp so that a wild prediction cannot
    overflow (log(1000/16), the value every peer uses).
    """

    def __init__(
        self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0), clip: float = math.log(1000.0 / 16)
    ):
        self.weights = weights
        self.clip = clip

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """boxes, anchors (..., 4) xyxy, broadcastable -> deltas (..., 4)."""
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        dx = wx * (bx - ax) / aw
        dy = wy * (by - ay) / ah
        dw = ww * torch.log(bw / aw)
        dh = wh * torch.log(bh / ah)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """deltas (..., 4), anchors (..., 4) xyxy, broadcastable -> boxes (..., 4) xyxy."""
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(deltas.dtype)
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.clip)
        cx = dx * aw + ax
        cy = dy * ah + ay
        half_w = 0.5 * (torch.exp(dw) * aw)
        half_h = 0.5 * (torch.exp(dh) * ah)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def pad_targets(targets: list[dict], device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """List of per-image {"boxes": (n_i, 4), "labels": (n_i,)} -> padded boxes (B, M, 4),
    labels (B, M) int64 and a validity mask (B, M), M = max n_i (possibly 0)."""
    B = len(targets)
    M = max((int(t["boxes"].shape[0]) for t in targets), default=0)
    device = device if device is not None else (targets[0]["boxes"].device if B else None)
    boxes = torch.zeros((B, M, 4), dtype=torch.float32, device=device)
    labels = torch.zeros((B, M), dtype=torch.int64, device=device)
    valid = torch.zeros((B, M), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = int(t["boxes"].shape[0])
        if n:
            boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32)
            labels[i, :n] = t["labels"].to(device=device)
            valid[i, :n] = True
    return boxes, labels, valid

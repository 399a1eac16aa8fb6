"""Anchor assignment (§4): IoU matching of anchors to ground-truth boxes, and the box coder."""

from __future__ import annotations

# Sentinels of a per-anchor match index (>= 0 is the index of the assigned ground-truth box).
BACKGROUND = -1  # IoU < bg_iou_thresh with every box: an all-zero classification target
IGNORE = -2  # bg_iou_thresh <= IoU < fg_iou_thresh: no classification loss at all

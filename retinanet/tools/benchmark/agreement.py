"""Detection agreement of `retinanet benchmark`: how many of two models' detections are the same."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchvision

from .common import MATCH_IOU


def match_detections(ref: list[dict], new: list[dict], iou_thresh: float = MATCH_IOU) -> dict[str, Any]:
    """One-to-one matching of `new` detections to `ref` ones, per image: in decreasing reference
    score, each reference detection takes the unmatched new detection of the same label with the
    highest IoU > iou_thresh (identical boxes count as IoU 1). Returns the matched share (matched
    / the larger of the two counts, so that missing and extra detections both count), the
    largest score difference and the largest box difference (px) among matched pairs."""
    matched = total = 0
    max_score = max_box = 0.0
    for a, b in zip(ref, new):
        na, nb = len(a["scores"]), len(b["scores"])
        total += max(na, nb)
        if not na or not nb:
            continue
        ba, bb = a["boxes"].float().cpu(), b["boxes"].float().cpu()
        box_diff = (ba[:, None, :] - bb[None, :, :]).abs().amax(-1)
        # Boxes clipped to zero width or height at the image border have IoU 0 (or 0/0) even
        # with themselves: the same box (within 1e-3 px) counts as a match whatever its area.
        iou = torch.where(box_diff <= 1e-3, torch.ones(()), torchvision.ops.box_iou(ba, bb).nan_to_num(0.0))
        ok = (iou > iou_thresh) & (a["labels"].cpu()[:, None] == b["labels"].cpu()[None, :])
        sa, sb = a["scores"].float().cpu(), b["scores"].float().cpu()
        score_diff = (sa[:, None] - sb[None, :]).abs()
        # Highest IoU first (to 1e-3), then the closest score (identical boxes): one sort key.
        key = torch.where(ok, iou * 1e3 - score_diff, torch.full_like(iou, -torch.inf)).numpy()
        box_diff, score_diff = box_diff.numpy(), score_diff.numpy()
        free = np.ones(nb, dtype=bool)
        # Greedy one-to-one assignment is sequential by nature: one vectorised step per
        # reference detection (a few hundred per image), off the timed path.
        for i in sa.argsort(descending=True).tolist():
            cand = np.where(free, key[i], -np.inf)
            j = int(cand.argmax())
            if cand[j] == -np.inf:
                continue
            free[j] = False
            matched += 1
            max_score = max(max_score, float(score_diff[i, j]))
            max_box = max(max_box, float(box_diff[i, j]))
    return {
        "matched": matched,
        "total": total,
        "matched_share": matched / total if total else 1.0,
        "max_score_diff": max_score,
        "max_box_diff_px": max_box,
    }

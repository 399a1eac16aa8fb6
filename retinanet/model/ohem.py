"""Online hard example mining over anchors: the baseline the focal loss is compared with in the
paper's Table 1(d) (§5.1, "Online Hard Example Mining").

"Each example is scored by its loss, non-maximum suppression (nms) is then applied, and a
minibatch is constructed with the highest-loss examples." The SSD variant ("OHEM 1:3") builds
the minibatch with a forced 1:3 ratio of positives to negatives. The classification loss (CE) is
then computed on the kept anchors only; every other anchor gets neither loss nor gradient.

Batched over images: candidate selection, one `batched_nms` call for the whole batch, and the
per-image quotas via cumulative ranks; no Python loop over images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from .assignment import IGNORE

# NMS only has to look at the highest-loss anchors: the minibatch is `batch_size` anchors, and
# overlapping anchors are suppressed in favour of the higher-loss one, so a pool of 8x the batch
# (at least 1000) leaves enough survivors; it keeps NMS cheap at ~100k anchors per image.
CANDIDATES_PER_KEPT = 8
MIN_CANDIDATES = 1000


def anchor_ce(cls_logits: Tensor, labels: Tensor) -> Tensor:
    """Per-anchor sigmoid CE summed over classes: (B, N, K) logits, (B, N) labels -> (B, N).

    Labels as in `focal_loss_from_labels` (k >= 0 one-hot, BACKGROUND all-zero); IGNORE anchors
    get a value too (treated as background) and must be masked by the caller.
    CE(x, t) = softplus(x) - x t, so the sum over classes is sum softplus(x) - x[label]."""
    x = cls_logits.float()
    ce = F.softplus(x).sum(-1)
    fg = labels >= 0
    x_true = x.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ce - torch.where(fg, x_true, torch.zeros_like(x_true))


def _rank(mask: Tensor) -> Tensor:
    """1-based rank among the True entries of each row (0 where False), in column order."""
    return torch.cumsum(mask.long(), dim=1) * mask


def select_hard_examples(
    scores: Tensor,
    anchors: Tensor,
    labels: Tensor,
    batch_size: int,
    nms_thresh: float,
    pos_fraction: float | None = None,
) -> Tensor:
    """The OHEM minibatch of each image: a (B, N) bool mask of the kept anchors.

    scores: (B, N) per-anchor loss; anchors: (N, 4) xyxy; labels: (B, N) (IGNORE never kept).
    batch_size: anchors kept per image (at most). nms_thresh: IoU above which a lower-loss
    anchor is suppressed by a higher-loss one (NMS over the anchor boxes, per image).
    pos_fraction: None, plain OHEM: the `batch_size` highest-loss survivors. 0.25, the SSD
    variant ("1:3"): at most batch_size * 0.25 positives (highest loss first) and 3 negatives
    per kept positive, so an image without positives contributes no negatives (as in SSD).
    """
    B, N = scores.shape
    if batch_size < 1:
        raise ValueError(f"OHEM batch size must be >= 1, got {batch_size}")
    if pos_fraction is not None and not 0.0 < pos_fraction < 1.0:
        raise ValueError(f"OHEM positive fraction must be in (0, 1), got {pos_fraction}")
    scores = scores.detach().float()
    valid = labels != IGNORE
    is_pos = labels >= 0
    k = min(N, max(CANDIDATES_PER_KEPT * batch_size, MIN_CANDIDATES))
    neg_inf = torch.full_like(scores, float("-inf"))
    if pos_fraction is None:
        cand_scores, cand = torch.where(valid, scores, neg_inf).topk(k, dim=1)
    else:
        # Positives and negatives are mined separately (their quotas differ), then merged.
        ps, pi = torch.where(is_pos, scores, neg_inf).topk(k, dim=1)
        ns, ni = torch.where(valid & ~is_pos, scores, neg_inf).topk(k, dim=1)
        cand_scores, order = torch.cat([ps, ns], 1).sort(dim=1, descending=True)
        cand = torch.cat([pi, ni], 1).gather(1, order)
    present = torch.isfinite(cand_scores)  # fewer valid anchors than candidates
    img = torch.arange(B, device=scores.device)[:, None].expand_as(cand)

    # One NMS for the whole batch: image index as the category keeps images apart.
    flat = present.flatten().nonzero().squeeze(1)
    keep_flat = batched_nms(
        anchors[cand.flatten()[flat]].float(), cand_scores.flatten()[flat], img.flatten()[flat], nms_thresh
    )
    survived = torch.zeros(B * cand.shape[1], dtype=torch.bool, device=scores.device)
    survived[flat[keep_flat]] = True
    survived = survived.view_as(cand)  # candidates are in descending loss order within each row

    if pos_fraction is None:
        chosen = survived & (_rank(survived) <= batch_size)
    else:
        cand_pos = is_pos.gather(1, cand)
        max_pos = max(1, int(batch_size * pos_fraction))
        pos_ok = survived & cand_pos & (_rank(survived & cand_pos) <= max_pos)
        n_pos = pos_ok.sum(1, keepdim=True)
        neg_per_pos = (1.0 - pos_fraction) / pos_fraction
        max_neg = torch.minimum((n_pos * neg_per_pos).floor().long(), torch.full_like(n_pos, batch_size) - n_pos)
        neg = survived & ~cand_pos
        chosen = pos_ok | (neg & (_rank(neg) <= max_neg))
    keep = torch.zeros(B, N, dtype=torch.bool, device=scores.device)
    b, j = chosen.nonzero(as_tuple=True)  # not a scatter: absent candidates may repeat indices
    keep[b, cand[b, j]] = True
    return keep


__all__ = ["anchor_ce", "select_hard_examples"]

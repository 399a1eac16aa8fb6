"""The training objective (§3, §4): assign anchors, then the classification loss over all
non-ignored anchors and the box loss over foreground anchors, both normalized by the number of
foreground anchors. Batched over images: no per-image Python loop."""

from __future__ import annotations

from typing import get_args

import torch
import torch.distributed as dist
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from . import losses, ohem
from .assignment import IGNORE, BoxCoder, Matcher, pad_targets
from .config import BoxLoss, ClsLoss, LossNormalizer


class RetinaNetCriterion:
    """__call__(cls_logits (B, N, K), box_deltas (B, N, 4), anchors (N, 4), targets) ->
    {"cls": scalar, "box": scalar}.

    targets: per image {"boxes": (n, 4) xyxy in the network input's pixels, "labels": (n,)}.

    cls_loss: "focal" (α-balanced focal loss; γ = 0 is α-balanced CE, α = None unweighted),
    "ce" (the same with γ = 0), "fl_star" (appendix A), or "ohem" (Table 1(d): (α-balanced) CE
    on the hard examples that `select_hard_examples` keeps, `ohem_batch_size` per image after
    NMS at `ohem_nms_thresh`, `ohem_pos_fraction` 0.25 for the 1:3 variant; the classification
    loss is then the mean over the kept anchors, the minibatch of OHEM; the box loss is the
    usual one, so that only the classification term differs from a focal-loss run).
    normalizer: "batch" divides each loss summed over the batch by the number of foreground
    anchors in the batch (the paper); "image" divides per image, then averages (torchvision).
    The count is clamped to >= 1, so a batch without boxes trains on background only.
    """

    def __init__(
        self,
        matcher: Matcher,
        box_coder: BoxCoder,
        cls_loss: ClsLoss = "focal",
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        fl_star_gamma: float = 2.0,
        fl_star_beta: float = 1.0,
        box_loss: BoxLoss = "smooth_l1",
        smooth_l1_beta: float = 0.11,
        normalizer: LossNormalizer = "batch",
        ohem_batch_size: int = 128,
        ohem_nms_thresh: float = 0.7,
        ohem_pos_fraction: float | None = None,
    ):
        if cls_loss not in get_args(ClsLoss):
            raise ValueError(f"cls_loss={cls_loss!r}: expected one of {list(get_args(ClsLoss))}")
        if box_loss not in get_args(BoxLoss):
            raise ValueError(f"box_loss={box_loss!r}: expected one of {list(get_args(BoxLoss))}")
        if normalizer not in get_args(LossNormalizer):
            raise ValueError(f"normalizer={normalizer!r}: expected one of {list(get_args(LossNormalizer))}")
        self.matcher = matcher
        self.box_coder = box_coder
        self.cls_loss = cls_loss
        self.alpha = alpha
        self.gamma = 0.0 if cls_loss in ("ce", "ohem") else gamma
        self.ohem_batch_size = ohem_batch_size
        self.ohem_nms_thresh = ohem_nms_thresh
        self.ohem_pos_fraction = ohem_pos_fraction
        self.fl_star_gamma = fl_star_gamma
        self.fl_star_beta = fl_star_beta
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta if box_loss == "smooth_l1" else 0.0
        self.normalizer = normalizer

    def assign(self, anchors: Tensor, targets: list[dict]) -> tuple[Tensor, Tensor, Tensor]:
        """-> anchor_labels (B, N) (class index, BACKGROUND or IGNORE), matched boxes (B, N, 4)
        (meaningful where anchor_labels >= 0), foreground mask (B, N)."""
        gt_boxes, gt_labels, gt_valid = pad_targets(targets, anchors.device)
        matches = self.matcher(gt_boxes, gt_valid, anchors)
        fg = matches >= 0
        safe = matches.clamp(min=0)
        if gt_boxes.shape[1] == 0:
            return matches, anchors.new_zeros((len(targets),) + anchors.shape), fg
        anchor_labels = torch.where(fg, gt_labels.gather(1, safe), matches)
        matched_boxes = gt_boxes.gather(1, safe[..., None].expand(-1, -1, 4))
        return anchor_labels, matched_boxes, fg

    def __call__(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Tensor, targets: list[dict]
    ) -> dict[str, Tensor]:
        anchor_labels, matched_boxes, fg = self.assign(anchors, targets)

        # The box loss as a masked dense sum over all anchors, not over gathered foreground
        # indices: `nonzero` would make the host wait for the device on every step. Background
        # anchors get their own box as target (zero deltas, finite loss), then a zero weight.
        safe_boxes = torch.where(fg[..., None], matched_boxes, anchors.to(matched_boxes.dtype))
        if self.box_loss == "giou":  # on the decoded box against its ground truth, as torchvision's v2
            pred = self.box_coder.decode(box_deltas.float(), anchors)
            per_anchor = generalized_box_iou_loss(pred, safe_boxes.float(), reduction="none", eps=1e-7)
        else:
            target_deltas = self.box_coder.encode(safe_boxes, anchors)
            per_anchor = losses.smooth_l1_loss(
                box_deltas.float(), target_deltas, beta=self.smooth_l1_beta, reduction="none"
            ).sum(-1)
        per_anchor = torch.where(fg, per_anchor, 0.0)  # (B, N)
        box_per_image = per_anchor.sum(dim=1)

        if self.cls_loss == "ohem":
            return {
                "cls": self._ohem_cls(cls_logits, anchors, anchor_labels, per_anchor),
                "box": self._normalize(fg, box_per_image)[0],
            }
        if self.cls_loss == "fl_star":
            cls_per_image = losses.fl_star_loss_from_labels(
                cls_logits, anchor_labels, self.fl_star_gamma, self.fl_star_beta
            )
        else:
            cls_per_image = losses.focal_loss_from_labels(cls_logits, anchor_labels, self.alpha, self.gamma)
        cls, box = self._normalize(fg, cls_per_image, box_per_image)
        return {"cls": cls, "box": box}

    def _ohem_cls(
        self,
        cls_logits: Tensor,
        anchors: Tensor,
        anchor_labels: Tensor,
        box_per_anchor: Tensor,
    ) -> Tensor:
        """CE over the OHEM minibatch of each image, averaged over all kept anchors of the batch.
        An anchor's score is its whole loss, CE plus (for positives) the box loss, as in OHEM."""
        with torch.no_grad():
            scores = ohem.anchor_ce(cls_logits.detach(), anchor_labels)
            scores = scores + box_per_anchor.detach()  # (B, N), zero on background anchors
            keep = ohem.select_hard_examples(
                scores, anchors, anchor_labels, self.ohem_batch_size, self.ohem_nms_thresh, self.ohem_pos_fraction
            )
        labels = torch.where(keep, anchor_labels, torch.full_like(anchor_labels, IGNORE))
        total = losses.focal_loss_from_labels(cls_logits, labels, self.alpha, 0.0).sum()
        count = keep.sum().to(total.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            count = count.detach().clone()  # the mean over processes, as for the fg count below
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return total / count.clamp(min=1)

    def _normalize(self, fg: Tensor, *per_image: Tensor) -> tuple[Tensor, ...]:
        """Each (B,) per-image loss sum divided by the foreground count (see the class docstring)."""
        num_fg = fg.sum(dim=1).to(per_image[0].dtype)
        if self.normalizer == "batch":
            norm = num_fg.sum()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # Normalize by the mean positive count per process: after DDP averages the
                # gradients, k processes train exactly like one process on their k batches.
                norm = norm.detach().clone()
                dist.all_reduce(norm)
                norm = norm / dist.get_world_size()
            norm = norm.clamp(min=1)
            return tuple(loss.sum() / norm for loss in per_image)
        norm = num_fg.clamp(min=1)
        return tuple((loss / norm).mean() for loss in per_image)

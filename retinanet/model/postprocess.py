"""Inference post-processing (§4): per level keep the top-k candidates above a score threshold,
decode, then class-wise NMS and the best detections per image.

Batched over images and over levels: one top-k per level for the whole batch, one decode and
one NMS call for the whole batch (images and classes kept apart by the NMS group index), and no
per-image Python loop.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from .assignment import BoxCoder

# Boxes per torchvision `nms` call in `grouped_nms`. The CPU kernel costs O(kept x boxes) per
# call, so a chunk of C boxes costs ~C^2/2 IoUs. 256 was the fastest of 128-1024 for a batch
# of 8 images x 91 classes at 512 px (~150 calls instead of one per (image, class) group: 728).
NMS_CHUNK = {"cpu": 256, "cuda": 4096}


def grouped_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, chunk_size: int | None = None
) -> Tensor:
    """Exact greedy NMS within each group (e.g. image x class): the indices kept, by decreasing score.

    The same result as torchvision's `batched_nms`, which for more than 1000 boxes on a CPU loops
    over the groups in Python (a mask over all boxes, a nonzero and an `nms` call per group: 728
    groups for a batch of 8 COCO images). Here the boxes are sorted by group once and the groups
    are packed, in order, into chunks of about `chunk_size` boxes; inside a chunk each group is
    shifted by its index times the span of all coordinates, so boxes of different groups never
    overlap and one `nms` call serves the whole chunk. The shift is done in float64, where it is
    exact (a float32 shift would round the coordinates it moves).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    chunk_size = chunk_size or NMS_CHUNK.get(boxes.device.type, 4096)
    order = torch.sort(groups, stable=True).indices
    g = groups[order]
    new = torch.ones(n, dtype=torch.bool, device=boxes.device)
    new[1:] = g[1:] != g[:-1]
    gidx = new.cumsum(0) - 1  # dense group index of each box, in sorted order
    group_chunk = new.nonzero().squeeze(1) // chunk_size  # a group goes whole into the chunk where it starts
    sizes = torch.bincount(group_chunk[gidx]).tolist()
    b = boxes[order].double()
    b = b + (gidx * (b.max() - b.min() + 1))[:, None]
    s = scores[order].double()  # nms wants the boxes' dtype
    keep, start = [], 0
    for size, bc, sc in zip(sizes, b.split(sizes), s.split(sizes)):
        if size:  # a chunk index that no group starts in is empty
            keep.append(nms(bc, sc, iou_threshold) + start)
            start += size
    kept = order[torch.cat(keep)]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def clip_boxes(boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """xyxy boxes (n, 4) clipped to [0, width] x [0, height]; height and width are (n,) (one
    image size per box) or 0-dim tensors of the boxes' dtype."""
    return torch.stack(
        (
            boxes[:, 0].clamp(min=0).minimum(width),
            boxes[:, 1].clamp(min=0).minimum(height),
            boxes[:, 2].clamp(min=0).minimum(width),
            boxes[:, 3].clamp(min=0).minimum(height),
        ),
        dim=1,
    )


def postprocess_detections(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    num_anchors_per_level: list[int],
    image_sizes: Tensor,
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """cls_logits (B, N, K), box_deltas (B, N, 4), anchors (N, 4) xyxy, image_sizes (B, 2) as
    (h, w) of the (unpadded) network input, boxes clipped to it.

    Returns per image {"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,) int64}, sorted by
    decreasing score, D <= detections_per_img.
    """
    B, N, K = cls_logits.shape
    scores, anchor_idx, labels = [], [], []
    start = 0
    for n in num_anchors_per_level:
        logits = cls_logits[:, start : start + n]
        k = min(topk_candidates, n * K)
        # Top-k on logits: the sigmoid is monotonic, so only the k survivors need it. The top-k
        # of the candidates above the threshold is the top-k filtered by the threshold.
        # Two stages instead of one top-k over all n·K (anchor, class) pairs: the top-k pairs lie
        # in at most k anchors, each with a class max >= the k-th largest pair >= the k-th
        # largest class max; so the k anchors of highest class max hold them all (exact up to
        # float ties at that boundary). A max over classes plus two small top-ks is ~3-5x
        # cheaper on a CPU than one top-k over all pairs (P3 at 512 px: 3.3 M pairs per image).
        if k < n * K:
            cand = logits.amax(dim=2).topk(min(k, n), dim=1).indices  # (B, <=k) anchors
            sub = logits.gather(1, cand[..., None].expand(-1, -1, K)).reshape(B, -1)
            top, idx = sub.topk(k, dim=1)
            anchors_l = cand.gather(1, torch.div(idx, K, rounding_mode="floor"))
        else:
            top, idx = logits.reshape(B, n * K).topk(k, dim=1)
            anchors_l = torch.div(idx, K, rounding_mode="floor")
        scores.append(top.float().sigmoid())
        anchor_idx.append(anchors_l + start)
        labels.append(idx % K)
        start += n
    scores, anchor_idx, labels = torch.cat(scores, 1), torch.cat(anchor_idx, 1), torch.cat(labels, 1)

    img, cand = (scores > score_thresh).nonzero(as_tuple=True)
    a = anchor_idx[img, cand]
    boxes = box_coder.decode(box_deltas[img, a].float(), anchors[a])
    hw = image_sizes.to(boxes)[img]
    boxes = clip_boxes(boxes, hw[:, 0], hw[:, 1])
    scores, labels = scores[img, cand], labels[img, cand]

    keep = grouped_nms(boxes, scores, img * K + labels, nms_thresh)  # by decreasing score
    # The first detections_per_img survivors of each image: a stable sort by image keeps the
    # score order inside each image; the rank within the image is the position minus its start.
    keep = keep[torch.sort(img[keep], stable=True).indices]
    kimg = img[keep]
    counts = torch.bincount(kimg, minlength=B)
    rank = torch.arange(kimg.numel(), device=kimg.device) - (counts.cumsum(0) - counts)[kimg]
    keep = keep[rank < detections_per_img]
    sizes = counts.clamp(max=detections_per_img).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes[keep].split(sizes), scores[keep].split(sizes), labels[keep].split(sizes))
    ]

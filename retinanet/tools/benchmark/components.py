"""The `focal`, `assign` and `postprocess` sections: the parts around the network, each timed on
its own against torchvision's counterpart, with their results checked equal."""

from __future__ import annotations

import os

import torch
import torchvision

from ...model import losses
from ...model.assignment import BACKGROUND, IGNORE
from ...model.postprocess import postprocess_detections
from .agreement import match_detections
from .common import LEVEL_STRIDES, NUM_CLASSES, TARGETS, pct
from .context import Context
from .models import random_targets
from .profiling import profile_pair
from .timing import Case, measure, run_counts, summary_row


def focal(ctx: Context) -> None:
    a = ctx.args
    n, k = a.focal_rows, 80
    g = torch.Generator().manual_seed(a.seed)
    x = (torch.randn(n, k, generator=g) * 3.0).to(ctx.device)
    t = (torch.rand(n, k, generator=g) < 1e-3).float().to(ctx.device)
    # The same positives as per-anchor labels in 2 "images", ~10 % of anchors ignored.
    labels = torch.full((n,), BACKGROUND, dtype=torch.int64)
    rows_pos, cols_pos = t.cpu().nonzero(as_tuple=True)
    labels[rows_pos] = cols_pos
    labels[(torch.rand(n, generator=g) < 0.1) & (labels == BACKGROUND)] = IGNORE
    labels = labels.view(2, n // 2).to(ctx.device)

    def fwd_bwd(fn):
        xx = x.detach().requires_grad_()
        loss = fn(xx).sum()
        loss.backward()
        return loss.detach(), xx.grad

    def eager(fn):
        def run(xx):
            saved = os.environ.get(losses.NO_COMPILE_ENV)
            os.environ[losses.NO_COMPILE_ENV] = "1"
            try:
                return fn(xx)
            finally:
                if saved is None:
                    os.environ.pop(losses.NO_COMPILE_ENV, None)
                else:
                    os.environ[losses.NO_COMPILE_ENV] = saved

        return run

    ours = lambda xx: losses.sigmoid_focal_loss(xx, t, reduction="sum")  # noqa: E731
    from_labels = lambda xx: losses.focal_loss_from_labels(xx.view(2, n // 2, k), labels)  # noqa: E731
    tvf = lambda xx: torchvision.ops.sigmoid_focal_loss(xx, t, reduction="sum")  # noqa: E731
    cases = [
        Case("ours", lambda: fwd_bwd(ours)),
        Case("torchvision", lambda: fwd_bwd(tvf)),
        Case("ours eager fallback", lambda: fwd_bwd(eager(ours))),
        Case("ours from labels", lambda: fwd_bwd(from_labels)),
    ]
    m = measure(cases, a, ctx.device)
    (l1, g1), (l2, g2) = m.outputs["ours"], m.outputs["torchvision"]
    compiled = losses.compiled_kernel_active()
    notes = (
        ("fused, compiled" if compiled else "fused, EAGER (compilation failed or disabled)")
        + f"; eager fallback {m.median_ms('ours eager fallback'):.0f} ms, from labels "
        f"{m.median_ms('ours from labels'):.0f} ms"
    )
    ctx.rows.append(
        summary_row(
            "focal",
            f"focal loss fwd+bwd, {n} x {k}",
            m,
            "ours",
            "torchvision",
            TARGETS["focal"],
            notes=notes,
            loss_rel_diff=float((l1 - l2).abs() / l2.abs()),
            grad_max_abs_diff=float((g1 - g2).abs().max()),
            compiled=compiled,
            runs=run_counts(m),
            profile=profile_pair(cases[0].fn, cases[1].fn, ctx.device),
        )
    )


def _square_anchors(model, size: int, device: torch.device):
    """(anchors, anchors per level) of the model for a size x size input."""
    return model.anchor_generator([(size // s, size // s) for s in LEVEL_STRIDES], (size, size), device)


def assign(ctx: Context) -> None:
    a = ctx.args
    tv, ours = ctx.models()
    size, b = a.assign_size, a.assign_batch
    anchors, per_level = _square_anchors(ours, size, ctx.device)
    g = torch.Generator().manual_seed(a.seed + 3)
    cls0 = (torch.randn(b, anchors.shape[0], NUM_CLASSES, generator=g) * 2 - 4).to(ctx.device)
    box0 = (torch.randn(b, anchors.shape[0], 4, generator=g) * 0.3).to(ctx.device)
    targets = random_targets(b, 20, size, ctx.device, a.seed + 4)

    def run(fn):
        cls, box = cls0.detach().requires_grad_(), box0.detach().requires_grad_()
        out = fn(cls, box)
        sum(out.values()).backward()
        return {k: v.detach() for k, v in out.items()}, cls.grad, box.grad

    def ours_fn(cls, box):
        return ours.criterion(cls, box, anchors, targets)

    def tv_fn(cls, box):
        return tv.compute_loss(targets, {"cls_logits": cls, "bbox_regression": box}, [anchors] * b)

    m = measure([Case("ours", lambda: run(ours_fn)), Case("torchvision", lambda: run(tv_fn))], a, ctx.device)
    (lo, gco, _), (lt, gct, _) = m.outputs["ours"], m.outputs["torchvision"]
    diffs = {
        "cls_rel_diff": float((lo["cls"] - lt["classification"]).abs() / lt["classification"].abs()),
        "box_rel_diff": float((lo["box"] - lt["bbox_regression"]).abs() / lt["bbox_regression"].abs()),
        "cls_grad_max_abs_diff": float((gco - gct).abs().max()),
    }
    ctx.rows.append(
        summary_row(
            "assign",
            f"assignment + loss fwd+bwd, {b} images x 20 boxes, {anchors.shape[0]} anchors",
            m,
            "ours",
            "torchvision",
            TARGETS["assign"],
            notes=f"loss rel. diff cls {diffs['cls_rel_diff']:.1e}, box {diffs['box_rel_diff']:.1e}",
            **diffs,
            runs=run_counts(m),
            profile=profile_pair(lambda: run(ours_fn), lambda: run(tv_fn), ctx.device),
        )
    )


def postprocess(ctx: Context) -> None:
    a = ctx.args
    tv, ours = ctx.models()
    size, b = a.assign_size, a.postprocess_batch
    anchors, per_level = _square_anchors(ours, size, ctx.device)
    g = torch.Generator().manual_seed(a.seed + 5)
    # Logits of a trained detector are mostly very negative; N(-7, 2) puts ~2 % above the
    # 0.05 score threshold, so every level fills its 1000 candidates and NMS has work.
    cls = (torch.randn(b, anchors.shape[0], NUM_CLASSES, generator=g) * 2 - 7).to(ctx.device)
    box = (torch.randn(b, anchors.shape[0], 4, generator=g) * 0.2).to(ctx.device)
    sizes = torch.tensor([[size, size]] * b, device=ctx.device)
    image_sizes = [(size, size)] * b

    def ours_fn():
        return postprocess_detections(
            cls,
            box,
            anchors,
            per_level,
            sizes,
            ours.box_coder,
            ours.score_thresh,
            ours.topk_candidates,
            ours.nms_thresh,
            ours.detections_per_img,
        )

    def tv_fn():  # what torchvision's forward does after the head, minus the final rescale
        split = {"cls_logits": list(cls.split(per_level, dim=1)), "bbox_regression": list(box.split(per_level, dim=1))}
        split_anchors = [list(anchors.split(per_level))] * b
        return tv.postprocess_detections(split, split_anchors, image_sizes)

    with torch.no_grad():
        m = measure([Case("ours", ours_fn), Case("torchvision", tv_fn)], a, ctx.device)
        prof = profile_pair(ours_fn, tv_fn, ctx.device)
    agree = match_detections(m.outputs["torchvision"], m.outputs["ours"])
    ctx.rows.append(
        summary_row(
            "postprocess",
            f"post-processing, batch {b}, {size} px",
            m,
            "ours",
            "torchvision",
            TARGETS["postprocess"],
            extra_ok=agree["matched_share"] == 1.0,
            notes=f"detections matched {pct(agree['matched_share'])}",
            agreement=agree,
            runs=run_counts(m),
            profile=prof,
        )
    )

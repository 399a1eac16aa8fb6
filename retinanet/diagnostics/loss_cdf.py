"""Fig. 4 of the paper (§5.1, "Analysis of the Focal Loss"): the cumulative distribution of the
normalized loss of a trained model's positive and negative examples, for several γ.

`collect_pt` runs the model on validation images and keeps p_t of every positive (the
ground-truth class output of each foreground anchor) and negative (every class output of each
background anchor) binary example; `plot_fig4` draws the CDFs. `retinanet analyze loss-cdf`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..utils.plotting import pyplot, save_figure

FIG4_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def focal_loss_of_pt(pt: np.ndarray, gamma: float) -> np.ndarray:
    """FL(p_t) = -(1 - p_t)^γ log(p_t) (§3.2, without α): the curves of Fig. 1 and Fig. 4."""
    return -((1.0 - pt) ** gamma) * np.log(pt)


@torch.no_grad()
def collect_pt(
    model, dataset, device: torch.device, max_images: int = 100, batch_size: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """p_t of the positive and negative binary examples of a trained model on `dataset`.

    Positives: the ground-truth class output of each foreground anchor (y = 1). Negatives: every
    class output of each background anchor (y = 0, p_t = 1 - p); ignored anchors are left out.
    This is §5.1's "Analysis of the Focal Loss": the model's predictions sampled on many images.
    """
    model.eval()
    pos, neg = [], []
    n = min(len(dataset), max_images)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        images = [im.to(device) for im, _ in items]
        batch, sizes, orig = model._resize_batch(images)
        feats = model.fpn(model.backbone(batch))
        logits, _ = model.head(feats)
        anchors, _ = model.anchor_generator([tuple(f.shape[-2:]) for f in feats], tuple(batch.shape[-2:]), batch.device)
        targets = model._scale_targets(
            [{k: v.to(device) for k, v in t.items() if k in ("boxes", "labels")} for _, t in items], sizes, orig
        )
        labels, _, fg = model.criterion.assign(anchors, targets)
        p = logits.float().sigmoid()
        pos.append(p[fg].gather(1, labels[fg].unsqueeze(1)).squeeze(1).cpu())
        neg.append((1 - p[labels == -1]).flatten().cpu())
    return torch.cat(pos).double().numpy(), torch.cat(neg).double().numpy()


def normalized_loss_cdf(pt: np.ndarray, gamma: float, points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 4's curve: FL of every example, normalized to sum to one, sorted from lowest to
    highest; returns (fraction of examples, cumulative normalized loss) at `points` positions."""
    loss = np.sort(focal_loss_of_pt(np.clip(pt, 1e-12, 1.0), gamma))
    total = loss.sum()
    cdf = np.cumsum(loss) / total if total > 0 else np.linspace(0, 1, len(loss))
    frac = np.arange(1, len(loss) + 1) / len(loss)
    idx = np.unique(np.linspace(0, len(loss) - 1, points).astype(int))
    return frac[idx], cdf[idx]


def plot_fig4(
    pos_pt: np.ndarray, neg_pt: np.ndarray, out: str | Path, gammas: Sequence[float] = FIG4_GAMMAS
) -> tuple[Path, dict]:
    """Fig. 4: the CDF of the normalized loss over positives and, separately, over negatives.
    Also returns, per γ, the share of the negatives' loss carried by their hardest 1% and the
    share of the positives' loss carried by their hardest 20% (the paper's reading of the plot)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    summary = {}
    for g in gammas:
        for ax, pt, kind in ((axes[0], pos_pt, "positive"), (axes[1], neg_pt, "negative")):
            frac, cdf = normalized_loss_cdf(pt, g)
            ax.plot(frac, cdf, label=f"γ = {g:g}")
        summary[f"{g:g}"] = {
            "negatives_hardest_1pct_share": round(top_share(neg_pt, g, 0.01), 4),
            "positives_hardest_20pct_share": round(top_share(pos_pt, g, 0.20), 4),
        }
    for ax, kind, n in ((axes[0], "positive", len(pos_pt)), (axes[1], "negative", len(neg_pt))):
        ax.set(
            xlabel=f"fraction of {kind} samples ({n:,})",
            ylabel="cumulative normalized loss",
            xlim=(0, 1),
            ylim=(0, 1),
            title=f"Fig. 4: CDF of the loss of {kind} samples",
        )
        ax.legend()
    return save_figure(fig, out), summary


def top_share(pt: np.ndarray, gamma: float, top: float) -> float:
    """The share of the total loss FL_γ(p_t) carried by the hardest `top` fraction of examples."""
    loss = np.sort(focal_loss_of_pt(np.clip(pt, 1e-12, 1.0), gamma))
    k = max(1, int(round(len(loss) * top)))
    return float(loss[-k:].sum() / loss.sum()) if loss.sum() > 0 else 0.0


def score_summary(pos_pt: np.ndarray, neg_pt: np.ndarray, score_thresh: float = 0.05) -> dict:
    """How far the class outputs have moved from the prior π (§3.3): the 10 / 50 / 90 % quantiles
    of the positives' ground-truth-class probability (their p_t), the share of positives above
    the detection threshold, the highest score of any background output (1 - the lowest
    negative p_t) and how many background outputs are above the threshold per positive (false
    detections before NMS). A model still at the prior has p ≈ π everywhere and detects nothing."""
    q = np.quantile(pos_pt, [0.1, 0.5, 0.9]) if len(pos_pt) else np.full(3, np.nan)
    return {
        "positives_p_q10": float(q[0]),
        "positives_p_median": float(q[1]),
        "positives_p_q90": float(q[2]),
        "score_thresh": float(score_thresh),
        "positives_above_thresh": float((pos_pt > score_thresh).mean()) if len(pos_pt) else float("nan"),
        "negatives_max_p": float(1.0 - neg_pt.min()) if len(neg_pt) else float("nan"),
        # background outputs that would be detections before NMS, per positive example
        "negatives_above_thresh_per_positive": float((neg_pt < 1.0 - score_thresh).sum() / len(pos_pt))
        if len(pos_pt)
        else float("nan"),
    }


def prior_gradient_ratio(neg_per_pos: float, gamma: float, alpha: float | None, prior: float) -> float:
    """§3.3's argument at initialization, where every class output is the prior π: the summed
    |dloss/dx| of the negatives against the positives', for `neg_per_pos` negative (anchor,
    class) pairs per positive pair. Above ~1 the easy negatives' gradient outweighs the
    positives' and can keep the outputs at π (CE with α = .75 at 12,455 pairs: 42). The
    gradients are those of the training loss itself (appendix B's closed form, eager or fused)."""
    from ..model.losses import sigmoid_focal_loss

    x = torch.full((2,), math.log(prior / (1.0 - prior)), dtype=torch.float64, requires_grad=True)
    loss = sigmoid_focal_loss(x, torch.tensor([0.0, 1.0], dtype=torch.float64), alpha, gamma, "sum")
    (grad,) = torch.autograd.grad(loss, x)
    return float(neg_per_pos * grad[0].abs() / grad[1].abs())


__all__ = [
    "FIG4_GAMMAS",
    "collect_pt",
    "focal_loss_of_pt",
    "normalized_loss_cdf",
    "plot_fig4",
    "prior_gradient_ratio",
    "score_summary",
    "top_share",
]

"""The paper's figures: Fig. 1 (loss against p_t), Fig. 2 (AP against inference time, from the
speed table), Fig. 4 (cumulative distribution of the normalized loss of a trained model).

Plots are matplotlib PNGs (Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

FIG1_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
FIG4_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def focal_loss_of_pt(pt: np.ndarray, gamma: float) -> np.ndarray:
    """FL(p_t) = -(1 - p_t)^γ log(p_t) (§3.2, without α): the curves of Fig. 1."""
    return -((1.0 - pt) ** gamma) * np.log(pt)


def plot_fig1(out: str | Path, gammas: Sequence[float] = FIG1_GAMMAS) -> Path:
    """Fig. 1: loss against the probability of the ground-truth class, one curve per γ; the
    region p_t > .6 is what the paper calls well-classified examples."""
    plt = _pyplot()
    pt = np.linspace(1e-3, 1.0, 1000)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for g in gammas:
        label = f"γ = {g:g}" + (" (CE)" if g == 0 else "")
        ax.plot(pt, focal_loss_of_pt(pt, g), label=label, lw=2)
    ax.axvspan(0.6, 1.0, color="0.92", zorder=0)
    ax.text(0.8, 4.2, "well-classified\nexamples", ha="center", va="center", fontsize=9)
    ax.set(xlim=(0, 1), ylim=(0, 5), xlabel="probability of ground truth class", ylabel="loss",
           title="Fig. 1: focal loss FL(p_t) = -(1 - p_t)^γ log(p_t)")  # fmt: skip
    ax.legend()
    return _save(fig, out)


def plot_fig2(speed_results: str | Path, out: str | Path) -> Path:
    """Fig. 2: AP against ms per image for the depth x scale rows of a speed table result
    (experiments/results/speed_<scale>.json), one line per backbone, the paper's points beside
    them when the result holds its rows (paper scale)."""
    plt = _pyplot()
    report = json.loads(Path(speed_results).read_text())
    series: dict[str, list[tuple[float, float, str]]] = {}
    paper: dict[str, list[tuple[float, float]]] = {}
    for row in report["rows"]:
        depth, scale = row["name"].split()[-2:]
        m = row["measured"]
        if m.get("ms_per_image") is not None and m.get("AP") is not None:
            series.setdefault(depth, []).append((m["ms_per_image"], m["AP"], scale))
        if "time" in row["paper"]:
            paper.setdefault(depth, []).append((row["paper"]["time"], row["paper"]["AP"]))
    if not series:
        raise ValueError(f"{speed_results}: no row has both AP and ms_per_image")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for depth, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"RetinaNet-{depth} (measured)")
        for t, ap, scale in pts:
            ax.annotate(scale, (t, ap), textcoords="offset points", xytext=(4, -10), fontsize=8)
    for depth, pts in sorted(paper.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", alpha=0.6, label=f"RetinaNet-{depth} (paper, M40)")
    device = next((r["runs"][0].get("device") for r in report["rows"] if r["runs"]), None)
    ax.set(xlabel="inference time (ms per image" + (f", {device}" if device else "") + ")", ylabel="COCO AP",
           title=f"Fig. 2: speed versus accuracy ({report['scale']} scale)")  # fmt: skip
    ax.legend()
    return _save(fig, out)


@torch.no_grad()
def collect_pt(model, dataset, device: torch.device, max_images: int = 100, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """p_t of the positive and negative binary examples of a trained model on `dataset`.

    Positives: the ground-truth class output of each foreground anchor (y = 1). Negatives: every
    class output of each background anchor (y = 0, p_t = 1 - p); ignored anchors are left out.
    This is §5.1's "Analysis of the Focal Loss": the model's predictions sampled on many images.
    """
    from ..engine.trainer import unwrap

    model = unwrap(model).eval()
    pos, neg = [], []
    n = min(len(dataset), max_images)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        images = [im.to(device) for im, _ in items]
        batch, sizes, orig = model.preprocess(images)
        feats = model.fpn(model.backbone(batch))
        logits, _ = model.head(feats)
        anchors, _ = model.anchor_generator([tuple(f.shape[-2:]) for f in feats], tuple(batch.shape[-2:]), batch.device)
        targets = model._scale_targets([{k: v.to(device) for k, v in t.items() if k in ("boxes", "labels")} for _, t in items],
                                       sizes.float() / orig.float())  # fmt: skip
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


def plot_fig4(pos_pt: np.ndarray, neg_pt: np.ndarray, out: str | Path, gammas: Sequence[float] = FIG4_GAMMAS) -> tuple[Path, dict]:
    """Fig. 4: the CDF of the normalized loss over positives and, separately, over negatives.
    Also returns, per γ, the share of the negatives' loss carried by their hardest 1% and the
    share of the positives' loss carried by their hardest 20% (the paper's reading of the plot)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    summary = {}
    for g in gammas:
        for ax, pt, kind in ((axes[0], pos_pt, "positive"), (axes[1], neg_pt, "negative")):
            frac, cdf = normalized_loss_cdf(pt, g)
            ax.plot(frac, cdf, label=f"γ = {g:g}")
        summary[f"{g:g}"] = {
            "negatives_hardest_1pct_share": round(_top_share(neg_pt, g, 0.01), 4),
            "positives_hardest_20pct_share": round(_top_share(pos_pt, g, 0.20), 4),
        }
    for ax, kind, n in ((axes[0], "positive", len(pos_pt)), (axes[1], "negative", len(neg_pt))):
        ax.set(xlabel=f"fraction of {kind} samples ({n:,})", ylabel="cumulative normalized loss", xlim=(0, 1), ylim=(0, 1),
               title=f"Fig. 4: CDF of the loss of {kind} samples")  # fmt: skip
        ax.legend()
    return _save(fig, out), summary


def _top_share(pt: np.ndarray, gamma: float, top: float) -> float:
    loss = np.sort(focal_loss_of_pt(np.clip(pt, 1e-12, 1.0), gamma))
    k = max(1, int(round(len(loss) * top)))
    return float(loss[-k:].sum() / loss.sum()) if loss.sum() > 0 else 0.0


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


__all__ = ["plot_fig1", "plot_fig2", "plot_fig4", "collect_pt", "normalized_loss_cdf", "focal_loss_of_pt"]

"""The paper's figures: Fig. 1 (loss against p_t) and Fig. 2 (AP against inference time, from the
speed table). Fig. 4, the loss distribution of a trained model, is a diagnostic of that model:
retinanet/diagnostics/loss_cdf.py.

Plots are matplotlib PNGs (Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..diagnostics.loss_cdf import focal_loss_of_pt
from ..utils.plotting import pyplot, save_figure

FIG1_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)


def plot_fig1(out: str | Path, gammas: Sequence[float] = FIG1_GAMMAS) -> Path:
    """Fig. 1: loss against the probability of the ground-truth class, one curve per γ; the
    region p_t > .6 is what the paper calls well-classified examples."""
    plt = pyplot()
    pt = np.linspace(1e-3, 1.0, 1000)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for g in gammas:
        label = f"γ = {g:g}" + (" (CE)" if g == 0 else "")
        ax.plot(pt, focal_loss_of_pt(pt, g), label=label, lw=2)
    ax.axvspan(0.6, 1.0, color="0.92", zorder=0)
    ax.text(0.8, 4.2, "well-classified\nexamples", ha="center", va="center", fontsize=9)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 5),
        xlabel="probability of ground truth class",
        ylabel="loss",
        title="Fig. 1: focal loss FL(p_t) = -(1 - p_t)^γ log(p_t)",
    )
    ax.legend()
    return save_figure(fig, out)


def plot_fig2(speed_results: str | Path, out: str | Path) -> Path:
    """Fig. 2: AP against ms per image for the depth x scale rows of a speed table result
    (experiments/results/speed_<scale>.json), one line per backbone, the paper's points beside
    them when the result holds its rows (paper scale)."""
    plt = pyplot()
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
    ax.set(
        xlabel="inference time (ms per image" + (f", {device}" if device else "") + ")",
        ylabel="COCO AP",
        title=f"Fig. 2: speed versus accuracy ({report['scale']} scale)",
    )
    ax.legend()
    return save_figure(fig, out)


__all__ = ["plot_fig1", "plot_fig2"]

"""The anchor coverage report (`coverage_report`, retinanet/diagnostics/anchors.py) as text, as
JSON and as a plot: what `retinanet analyze anchors` prints and draws."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..model.anchors import cell_anchors
from .anchors import ASPECT_BUCKETS, COVERAGE_TOLERANCE, SIZE_BUCKETS, NetworkBoxes


def format_imbalance(im: dict) -> str:
    if not im.get("images"):
        return "class imbalance: no image with boxes"
    ratio = im["negative_pairs_per_positive_pair"]
    return (
        f"class imbalance ({im['images']} images): per image {im['anchors_per_image']:,.0f} anchors, "
        f"{im['objects_per_image']:.1f} objects, {im['positive_per_image']:.1f} positive anchors "
        f"({im['positive_per_object']:.1f} per object), {im['ignored_per_image']:.1f} ignored; with "
        f"{im['num_classes']} classes, "
        + ("no positive anchor" if ratio is None else f"{ratio:,.0f} negative (anchor, class) pairs per positive pair")
        + " (the paper's COCO setting: ~100k anchors per image, 80 classes)"
    )


def public(report: dict) -> dict:
    """The report without its private tensors (for JSON)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def _pct(v: Optional[float]) -> str:
    return "    -" if v is None else f"{100 * v:5.1f}%"


def format_report(report: dict) -> str:
    """The report as text: one table with the configured (and proposed) coverage per bucket."""
    inp = report["input"]
    conf, prop = report["configured"], report["proposed"]
    lines = [
        f"anchor coverage of {report['dataset']}: {report['num_boxes']} boxes in {report['num_images']} images, "
        f"input min_size {inp['min_size']} / max_size {inp['max_size']}, a box is covered when an anchor reaches "
        f"IoU >= {report['iou_thresh']:g}",
        f"configured: {conf['description']}",
    ]
    if prop is not None:
        lines.append(
            f"proposed:   {prop['description']} (best of {prop['candidates']} candidates, "
            f"searched on {prop['sample']} boxes)"
        )
    header = f"| {'boxes':<14} | {'n':>7} | {'configured':>10} | {'mean IoU':>8} |"
    rule = f"|{'-' * 16}|{'-' * 9}|{'-' * 12}|{'-' * 10}|"
    if prop is not None:
        header += f" {'proposed':>10} | {'mean IoU':>8} |"
        rule += f"{'-' * 12}|{'-' * 10}|"
    lines += ["", header, rule]
    labels = {"all": "all", "small": "small (<32²)", "medium": "medium", "large": "large (>96²)"}
    for name in ("all", *SIZE_BUCKETS, *ASPECT_BUCKETS):
        c = conf["buckets"][name]
        iou = "       -" if c["mean_best_iou"] is None else f"{c['mean_best_iou']:8.3f}"
        row = f"| {labels.get(name, name):<14} | {c['boxes']:>7} | {_pct(c['coverage']):>10} | {iou} |"
        if prop is not None:
            p = prop["buckets"][name]
            iou_p = "       -" if p["mean_best_iou"] is None else f"{p['mean_best_iou']:8.3f}"
            row += f" {_pct(p['coverage']):>10} | {iou_p} |"
        lines.append(row)
    if prop is not None:
        gain = (prop["buckets"]["all"]["coverage"] or 0) - (conf["buckets"]["all"]["coverage"] or 0)
        lines += [
            "",
            f"proposed anchors: coverage {_pct(prop['buckets']['all']['coverage']).strip()} "
            f"(configured {_pct(conf['buckets']['all']['coverage']).strip()}, {100 * gain:+.1f} points); "
            "train with:",
            "  " + " ".join(prop["overrides"]),
        ]
        if prop["setting"] == conf["setting"]:
            lines.append(
                f"  (the configured anchors are within {100 * COVERAGE_TOLERANCE:g} points of the best candidate)"
            )
        elif prop["anchors_per_location"] != conf["anchors_per_location"]:
            lines.append(
                "  (another number of anchors per location changes the head's outputs: "
                "pretrained detector heads do not load)"
            )
    if report.get("imbalance"):
        lines += ["", format_imbalance(report["imbalance"])]
    return "\n".join(lines)


def plot_report(report: dict, path: str | Path, max_points: int = 20000) -> Path:
    """A PNG: coverage by size and by aspect bucket (configured vs proposed) and a scatter of
    the boxes (sqrt area at the input scale vs h/w; covered or not by the configured anchors)
    with the anchor shapes of both settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conf, prop = report["configured"], report["proposed"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1.3, 1.4]})
    panels = ((axes[0], ("all", *SIZE_BUCKETS), "by COCO size"), (axes[1], ASPECT_BUCKETS, "by aspect ratio h/w"))
    for ax, names, title in panels:
        x = np.arange(len(names))
        width = 0.4 if prop is not None else 0.7
        conf_v = [100 * (conf["buckets"][n]["coverage"] or 0) for n in names]
        ax.bar(x - (width / 2 if prop is not None else 0), conf_v, width, label="configured", color="#888888")
        if prop is not None:
            proposed = [100 * (prop["buckets"][n]["coverage"] or 0) for n in names]
            ax.bar(x + width / 2, proposed, width, label="proposed", color="#1f77b4")
        ax.set_xticks(x, [f"{n}\n({conf['buckets'][n]['boxes']})" for n in names], fontsize=8)
        ax.set_ylim(0, 118)  # room for the legend above the bars
        ax.set_ylabel(f"boxes with an anchor at IoU >= {report['iou_thresh']:g} (%)")
        ax.set_title(f"coverage {title}")
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax = axes[2]
    nb: NetworkBoxes = report["_boxes"]
    best = report["_best_configured"]
    n = nb.boxes.shape[0]
    if n > max_points:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_points]
    else:
        idx = torch.arange(n)
    wh = (nb.boxes[idx, 2:] - nb.boxes[idx, :2]).numpy()
    side, aspect = np.sqrt(wh[:, 0] * wh[:, 1]), wh[:, 1] / wh[:, 0]
    ok = (best[idx] >= report["iou_thresh"]).numpy()
    ax.scatter(side[ok], aspect[ok], s=8, c="#2ca02c", alpha=0.5, zorder=3, label="box covered (configured)")
    ax.scatter(side[~ok], aspect[~ok], s=8, c="#d62728", alpha=0.7, zorder=3, label="box not covered (configured)")
    anchor_sets = ((conf, "x", "black", "configured anchors"), (prop, "+", "#1f77b4", "proposed anchors"))
    for entry, marker, colour, label in anchor_sets:
        if entry is None:
            continue
        s = entry["setting"]
        cells = [cell_anchors(float(v), s["scales_per_octave"], tuple(s["aspect_ratios"])) for v in s["anchor_sizes"]]
        shapes = torch.cat(cells)
        w, h = (shapes[:, 2] - shapes[:, 0]).numpy(), (shapes[:, 3] - shapes[:, 1]).numpy()
        ax.scatter(np.sqrt(w * h), h / w, marker=marker, s=50, c=colour, alpha=0.7, zorder=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # octave ticks, labelled plainly (a log axis labels only powers of ten, or crowds its minor ticks)
    for axis, get_lim, ticks, labels in (
        (ax.xaxis, ax.get_xlim, [2.0**k for k in range(1, 13)], [str(2**k) for k in range(1, 13)]),
        (
            ax.yaxis,
            ax.get_ylim,
            [2.0**k for k in range(-4, 5)],
            [f"1/{2**-k}" if k < 0 else str(2**k) for k in range(-4, 5)],
        ),
    ):
        lo, hi = get_lim()
        inside = [(t, lab) for t, lab in zip(ticks, labels) if lo <= t <= hi]
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_ticks([t for t, _ in inside], [lab for _, lab in inside])
    ax.set_xlabel("sqrt(box area) at the input scale (px)")
    ax.set_ylabel("h / w")
    ax.set_title("boxes and anchor shapes")
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Anchor coverage: {report['dataset']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["format_imbalance", "format_report", "plot_report", "public"]

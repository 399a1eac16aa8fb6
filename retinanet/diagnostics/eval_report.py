"""The evaluation report's folder (`retinanet eval --report DIR`): the numbers of
`retinanet.engine.report.build_report` as JSON, pictures and one page that shows them.

DIR/report.json        every number (the input of everything else here, and of
                       `retinanet predict --score-thresh best:DIR`)
DIR/pr_curves.json     the precision-recall curves (recall grid, precision per class at IoU 0.5 and
                       0.5:0.95, the score at each recall point at IoU 0.5)
DIR/confusion_matrix.json
DIR/pr_curve_iou50.png, pr_curve_iou50_95.png, confusion_matrix.png, f1_curve.png, ap_by_size.png
DIR/index.md, index.html  the page: tables and pictures

The pictures are drawn from the report dict alone, so that they can be drawn again from a
report.json (`write_report(json.load(...), DIR)`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.report import REPORT_FILE
from ..utils.io import atomic_write
from ..utils.plotting import pyplot, save_figure

PICTURES = {
    "pr50": "pr_curve_iou50.png",
    "pr": "pr_curve_iou50_95.png",
    "confusion": "confusion_matrix.png",
    "f1": "f1_curve.png",
    "sizes": "ap_by_size.png",
}
# Beyond this many classes a legend or a number in every cell is unreadable: left out.
MAX_LEGEND = 20
DPI = 100


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ap(x: Any) -> str:
    return "n/a" if x is None else f"{x:.1f}"


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def _colors(n: int):
    cmap = pyplot().get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "viridis")
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def plot_pr_curves(report: Mapping, iou_key: str, out: Path) -> Path:
    """Precision against recall per class (COCO's interpolated curves) and their mean over the
    classes with ground truth (whose area is the mAP)."""
    plt = pyplot()
    curves = report["pr_curves"]
    recall = np.asarray(curves["recall"])
    ap_key = "AP50" if iou_key == "iou_0.5" else "AP"
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    valid = []
    for name, color in zip(report["classes"], _colors(len(report["classes"]))):
        p = curves[iou_key]["precision"][name]
        if p[0] is None:  # no ground truth: no curve
            continue
        valid.append(np.asarray(p, dtype=np.float64))
        ap = report["per_class"][name][ap_key]
        ax.plot(recall, p, color=color, lw=1.2, label=f"{name} ({_ap(ap)})")
    if valid:
        mean = np.mean(valid, axis=0)
        ax.plot(recall, mean, color="black", lw=2.5, label=f"mean ({100 * mean.mean():.1f})")
    label = "IoU 0.5" if iou_key == "iou_0.5" else "IoU 0.5:0.95 (mean of 10 IoUs)"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"Precision-recall, {label}")
    ax.grid(alpha=0.3)
    if len(valid) <= MAX_LEGEND:
        ax.legend(fontsize=8, loc="upper right", title=f"class ({ap_key})", title_fontsize=8)  # empty on a PR plot
    return save_figure(fig, out, dpi=DPI)


def plot_confusion_matrix(report: Mapping, out: Path) -> Path:
    """The confusion matrix's counts, coloured by each row's share (ground-truth rows; the
    background row, which has no total to share, by its largest count)."""
    plt = pyplot()
    cm = report["confusion_matrix"]
    m = np.asarray(cm["matrix"], dtype=np.float64)
    labels = cm["labels"]
    n = len(labels)
    rows = m.sum(1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    share[-1] = m[-1] / m[-1].max() if m[-1].max() > 0 else 0.0
    side = min(max(4.8, 0.55 * n + 2.0), 16)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="ground truth")
    ax.set_title(f"Confusion matrix, score >= {cm['score_thresh']:g}, IoU >= {cm['iou_thresh']:g}", fontsize=10)
    if n <= MAX_LEGEND + 1:
        for i, j in zip(*np.nonzero(m)):
            ax.text(
                j,
                i,
                f"{int(m[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    return save_figure(fig, out, dpi=DPI)


def plot_f1_curves(report: Mapping, out: Path) -> Path:
    """Left: F1 against the score threshold per class and overall, each optimum marked. Right:
    the overall precision, recall and F1, with the report's threshold."""
    plt = pyplot()
    tc = report["threshold_curves"]
    grid = np.asarray(tc["score_thresh"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))

    def series(values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)

    for name, color in zip(report["classes"], _colors(len(report["classes"]))):
        best = report["per_class"][name]["best"]
        ax1.plot(grid, series(tc["per_class"][name]["f1"]), color=color, lw=1.1, label=name)
        if best["score_thresh"] is not None:
            ax1.plot(best["score_thresh"], best["f1"], "o", color=color, ms=4)
    best = report["overall"]["best"]
    ax1.plot(grid, series(tc["overall"]["f1"]), color="black", lw=2.5, label="overall")
    if best["score_thresh"] is not None:
        ax1.plot(best["score_thresh"], best["f1"], "o", color="black", ms=6)
    ax1.set(xlabel="score threshold", ylabel="F1 (IoU 0.5)", xlim=(0, 1), ylim=(0, 1), title="F1 per class")
    ax1.grid(alpha=0.3)
    if len(report["classes"]) <= MAX_LEGEND:
        ax1.legend(fontsize=7, loc="upper right")
    for key, color in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "black")):
        ax2.plot(grid, series(tc["overall"][key]), color=color, lw=1.8, label=key)
    ax2.axvline(report["score_thresh"], color="gray", ls="--", lw=1, label=f"report: {report['score_thresh']:g}")
    if best["score_thresh"] is not None:
        ax2.axvline(best["score_thresh"], color="black", ls=":", lw=1, label=f"F1-optimal: {best['score_thresh']:.3f}")
    ax2.set(xlabel="score threshold", xlim=(0, 1), ylim=(0, 1.02), title="Overall (all classes pooled)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower left")
    return save_figure(fig, out, dpi=DPI)


def plot_ap_by_size(report: Mapping, out: Path) -> Path:
    """AP (0.5:0.95) of each class for small, medium and large objects (COCO's area ranges);
    missing bars: no ground truth of that size."""
    plt = pyplot()
    names = report["classes"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(names) + 2), 4.2))
    width = 0.27
    for i, (size, color) in enumerate(zip(("small", "medium", "large"), ("#9ecae1", "#4292c6", "#08519c"))):
        values = [report["per_class"][n][f"AP_{size}"] for n in names]
        ax.bar(x + (i - 1) * width, [np.nan if v is None else v for v in values], width, color=color, label=size)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(ylabel="AP (IoU 0.5:0.95, %)", ylim=(0, 100), title="AP by object size")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=DPI)


# ---------------------------------------------------------------------------------------------
# The page: one list of blocks, written as Markdown and as HTML
# ---------------------------------------------------------------------------------------------


def _page(report: Mapping) -> list[tuple]:
    """The page as blocks: ("h", text), ("p", text), ("table", header, rows), ("img", file, alt)."""
    info = report.get("info", {})
    names, s = report["classes"], report["score_thresh"]
    coco = report["coco"]
    described = ", ".join(f"{k} {v}" for k, v in info.items() if v is not None and k != "model_score_thresh")
    blocks: list[tuple] = [("h", "Evaluation report")]
    blocks.append(
        (
            "p",
            f"{described + '; ' if described else ''}{report['num_images']} images, {len(names)} classes. "
            "Every number comes from one pycocotools COCOeval run (its `eval['precision']` and `evalImgs`); "
            f"counts at IoU {report['iou_thresh']:g}, area all, the {report['max_dets']} best detections per "
            "image and class; AP in percent.",
        )
    )
    floor = info.get("model_score_thresh")
    if floor is not None and floor > 0:
        blocks.append(("p", f"The model dropped scores below {floor:g} (model.score_thresh): the curves end there."))
    blocks.append(("h2", "COCO AP"))
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    blocks.append(("table", ["AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100"], [[_ap(coco[k]) for k in keys]]))
    blocks.append(("h2", "Per class"))
    rows = []
    for n in names:
        c = report["per_class"][n]
        num = c["num_gt"]
        rows.append(
            [n, str(num["all"]), _ap(c["AP"]), _ap(c["AP50"]), _ap(c["AP75"])]
            + [f"{_ap(c[f'AP_{z}'])} ({num[z]})" for z in ("small", "medium", "large")]
        )
    blocks.append(("table", ["class", "GT", "AP", "AP50", "AP75", "AP_S (GT)", "AP_M (GT)", "AP_L (GT)"], rows))
    blocks.append(("img", PICTURES["sizes"], "AP by object size"))

    blocks.append(("h2", f"Precision, recall, F1 at score >= {s:g}"))
    blocks.append(
        (
            "p",
            "TP: detections COCO matched to a box of their class (IoU >= 0.5); FP: those it left unmatched; "
            "FN: boxes without a match. Detections on crowd boxes of their class count as neither. "
            "Overall: the counts summed over classes (micro).",
        )
    )
    header = ["class", "TP", "FP", "FN", "precision", "recall", "F1"]
    blocks.append(("table", header, _prf_rows(report, "at_thresh")))

    blocks.append(("h2", "F1-optimal score threshold"))
    best = report["overall"]["best"]
    use = (
        f"Overall: score >= {best['score_thresh']:.4f} gives F1 {best['f1']:.3f}; "
        "`retinanet predict --score-thresh best:DIR` applies it (DIR: this folder)."
        if best["score_thresh"] is not None
        else "No threshold gives a true positive: there is no F1-optimal threshold."
    )
    blocks.append(("p", "The detection score that maximises F1 = 2TP / (2TP + FP + FN) (IoU 0.5). " + use))
    blocks.append(("table", ["class", "threshold", *header[1:]], _prf_rows(report, "best", with_thresh=True)))
    blocks.append(("img", PICTURES["f1"], "F1 against the score threshold"))

    blocks.append(("h2", "Precision-recall curves"))
    blocks.append(
        (
            "p",
            "COCO's interpolated precision on its 101 recall points, per class (AP in the legend) and their "
            "mean; pr_curves.json has the numbers and, at IoU 0.5, the score at each recall point.",
        )
    )
    blocks.append(("img", PICTURES["pr50"], "precision-recall at IoU 0.5"))
    blocks.append(("img", PICTURES["pr"], "precision-recall at IoU 0.5:0.95"))

    cm = report["confusion_matrix"]
    blocks.append(("h2", f"Confusion matrix at score >= {cm['score_thresh']:g}"))
    blocks.append(
        (
            "p",
            "Rows: ground truth, columns: prediction. Diagonal: COCO's true positives. Then, in descending "
            "score order, each detection COCO left unmatched takes the free box of another class with the "
            f"highest IoU >= {cm['iou_thresh']:g} (a class swap, one box per detection); the rest are "
            "background: unmatched detections in the background row, missed boxes in the background column. "
            "Crowd boxes are neither rows nor misses, and the detections of their class on them are left out.",
        )
    )
    labels = cm["labels"]
    rows = [[labels[i], *[str(v) for v in row]] for i, row in enumerate(cm["matrix"])]
    blocks.append(("table", ["gt \\ predicted", *labels], rows))
    blocks.append(("img", PICTURES["confusion"], "confusion matrix"))
    blocks.append(("h2", "Files"))
    blocks.append(("p", f"{REPORT_FILE} (every number), pr_curves.json, confusion_matrix.json, the pictures."))
    return blocks


def _prf_rows(report: Mapping, key: str, with_thresh: bool = False) -> list[list[str]]:
    rows = []
    for name, c in [
        *((n, report["per_class"][n][key]) for n in report["classes"]),
        ("overall", report["overall"][key]),
    ]:
        thresh = [_f(c["score_thresh"], 4)] if with_thresh else []
        counts = [str(c["tp"]), str(c["fp"]), str(c["fn"])]
        rows.append([name, *thresh, *counts, _f(c["precision"]), _f(c["recall"]), _f(c["f1"])])
    return rows


def render_markdown(blocks: Sequence[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"# {b[1]}")
        elif b[0] == "h2":
            out.append(f"## {b[1]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        else:
            _, header, rows = b
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out.append("\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]))
    return "\n\n".join(out) + "\n"


def render_html(blocks: Sequence[tuple]) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h", "h2"):
            body.append(f"<{'h1' if b[0] == 'h' else 'h2'}>{e(b[1])}</{'h1' if b[0] == 'h' else 'h2'}>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "img":
            body.append(f'<p><img src="{e(b[1])}" alt="{e(b[2])}"></p>')
        else:
            _, header, rows = b
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><tr>{head}</tr>{cells}</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    title = e(blocks[0][1]) if blocks else "report"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>'
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


def write_report(report: Mapping, out_dir: str | Path) -> dict[str, Path]:
    """Write the report folder (see the module docstring); returns {what: path}."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--report {out} is a file: give a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "report": out / REPORT_FILE,
        "pr_curves": out / "pr_curves.json",
        "confusion": out / "confusion_matrix.json",
    }
    atomic_write(written["report"], json.dumps(report, indent=1))
    pr = {
        "classes": report["classes"],
        "AP50": {n: report["per_class"][n]["AP50"] for n in report["classes"]},
        "AP": {n: report["per_class"][n]["AP"] for n in report["classes"]},
        **report["pr_curves"],
    }
    atomic_write(written["pr_curves"], json.dumps(pr, indent=1))
    atomic_write(written["confusion"], json.dumps(report["confusion_matrix"], indent=1))
    written["pr50_png"] = plot_pr_curves(report, "iou_0.5", out / PICTURES["pr50"])
    written["pr_png"] = plot_pr_curves(report, "iou_0.5:0.95", out / PICTURES["pr"])
    written["confusion_png"] = plot_confusion_matrix(report, out / PICTURES["confusion"])
    written["f1_png"] = plot_f1_curves(report, out / PICTURES["f1"])
    written["sizes_png"] = plot_ap_by_size(report, out / PICTURES["sizes"])
    blocks = _page(report)
    written["index"] = out / "index.md"
    atomic_write(written["index"], render_markdown(blocks))
    written["html"] = out / "index.html"
    atomic_write(written["html"], render_html(blocks))
    return written


__all__ = [
    "PICTURES",
    "plot_ap_by_size",
    "plot_confusion_matrix",
    "plot_f1_curves",
    "plot_pr_curves",
    "render_html",
    "render_markdown",
    "write_report",
]

"""Tables that compare rows with statistical power: paired comparisons over shared seeds, seeds
added until each comparison's 95 % interval is narrow enough, the class imbalance of the
setting, and the Fig. 4 loss shares of chosen rows (experiments/tables/focal_power.yaml).

A table opts in with these keys (all optional):

    comparisons: [{a: "FL γ=2 α=.25", b: "best:CE α="}, {a: "FL γ=2 α=.25", b: "FL γ=1 α=.25"}]
    power: {metric: AP, ci95: 1.5, min_seeds: 4, max_seeds: 12, scales: [mini]}
    loss_cdf: ["FL γ=2 α=.25", "best:CE α="]
    imbalance: true

"best:<prefix>" names the row of that prefix with the highest mean metric over the seeds that
every such row has (the sweep's common seeds), so the choice does not move as the chosen row
gets more seeds. Seed k of every row is the run with cfg.seed + k: the same initial weights and
the same data order in both rows of a comparison (the losses differ, the draws do not), so the
per-seed difference a - b cancels what the seed alone decides; its mean and t-interval over the
seeds are the comparison (`stats.paired_difference`).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Config, ConfigError, config_to_dict
from ..utils.io import atomic_write
from .stats import paired_difference

log = logging.getLogger(__name__)

BEST = "best:"
POWER_DEFAULTS = {"metric": "AP", "ci95": 1.5, "min_seeds": 4, "max_seeds": 12, "scales": ["mini", "paper"]}
CDF_GAMMAS = (0.0, 2.0)  # the shares under CE's loss and under the focal loss's
CDF_IMAGES = 200


def power_options(raw: Optional[dict], where: str) -> dict:
    unknown = set(raw or {}) - set(POWER_DEFAULTS)
    if unknown:
        raise ConfigError(f"{where}: unknown power key(s) {sorted(unknown)}; allowed: {sorted(POWER_DEFAULTS)}")
    opts = {**POWER_DEFAULTS, **(raw or {})}
    if not 2 <= int(opts["min_seeds"]) <= int(opts["max_seeds"]):
        raise ConfigError(f"{where}: power needs 2 <= min_seeds <= max_seeds, got {opts}")
    return opts


def check_names(table, names: list[str], where: str) -> None:
    """Every row name (or best:<prefix>) of comparisons / loss_cdf names a row of the table."""
    rows = [r.name for r in table.rows]
    for n in names:
        ok = any(r.startswith(n[len(BEST) :]) for r in rows) if n.startswith(BEST) else n in rows
        if not ok:
            raise ConfigError(f"{where}: {n!r} names no row of table {table.name}; rows: {rows}")


def values(results: dict[str, list[dict]], row: str, metric: str) -> dict[int, float]:
    """{seed index: metric} of a row's finished, not diverged runs."""
    out = {}
    for r in results.get(row, []):
        v = r.get("metrics", {}).get(metric)
        if v is not None and not r.get("diverged"):
            out[int(r["seed"])] = float(v)
    return out


def resolve(name: str, results: dict[str, list[dict]], candidates: list[str], metric: str) -> str:
    """A row name, with best:<prefix> replaced by the best such row on the common seeds."""
    if not name.startswith(BEST):
        return name
    prefix = name[len(BEST) :]
    rows = [r for r in candidates if r.startswith(prefix)]
    per_row = {r: values(results, r, metric) for r in rows}
    common = set.intersection(*(set(v) for v in per_row.values())) if per_row else set()
    if not common:
        raise ConfigError(f"{name}: the rows {rows} have no finished seed in common")

    def score(r: str) -> float:
        return statistics.fmean(per_row[r][s] for s in common)

    return max(rows, key=score)


def compare(results: dict[str, list[dict]], comparisons: list[tuple[str, str]], metric: str) -> list[dict]:
    """The report's comparisons: {"a", "b", "diff_ap", "ci95", "seeds", "per_seed"} each."""
    out = []
    for a, b in comparisons:
        d = paired_difference(values(results, a, metric), values(results, b, metric))
        key = "diff_ap" if metric == "AP" else f"diff_{metric}"
        out.append({"a": a, "b": b, key: d["diff"], "ci95": d["ci95"], "seeds": d["seeds"], "per_seed": d["per_seed"]})
    return out


def ensure_power(
    table,
    results: dict[str, list[dict]],
    run_seed: Callable[[str, int], dict],
    candidates: list[str],
    scale: str,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run further seeds of the compared rows (`run_seed(row name, seed index, wait)` -> result,
    the cached one when it exists; None when another worker trains it and not `wait`) until
    every comparison has min_seeds paired seeds and a 95 % half-width <= ci95, or its rows reach
    max_seeds (at the scales of power.scales; elsewhere the comparisons are of the seeds the rows
    have). Returns (comparisons, the resolved pairs)."""
    opts = table.power
    metric = opts["metric"]
    while True:
        pairs = [
            (resolve(c["a"], results, candidates, metric), resolve(c["b"], results, candidates, metric))
            for c in table.comparisons
        ]
        stats = compare(results, pairs, metric)
        grow: dict[str, int] = {}
        for (a, b), s in zip(pairs, stats):
            short = s["seeds"] < opts["min_seeds"] or s["ci95"] is None or s["ci95"] > opts["ci95"]
            if short and s["seeds"] < opts["max_seeds"]:
                for row in (a, b):  # both rows up to one more paired seed
                    grow[row] = max(grow.get(row, 0), s["seeds"] + 1)
        if not grow or scale not in opts["scales"]:
            return stats, pairs
        pending = []  # runs another worker is training: waited for once this one's are done
        for row, want in grow.items():
            have = {int(r["seed"]) for r in results.get(row, [])}
            for seed in range(want):
                if seed not in have:
                    result = run_seed(row, seed, False)
                    if result is None:
                        pending.append((row, seed))
                    else:
                        results.setdefault(row, []).append(result)
        for row, seed in pending:
            results.setdefault(row, []).append(run_seed(row, seed, True))


def setting_imbalance(cfg: Config, cache_dir: Path) -> dict:
    """`class_imbalance` (negative (anchor, class) pairs per positive pair, §3) of the training
    set at cfg's model settings, cached in cache_dir/imbalance.json by the data and model config
    (measured once per setting: it needs the dataset, not training)."""
    from ..data.build import build_datasets
    from ..diagnostics.anchors import class_imbalance, network_boxes

    tree = config_to_dict(cfg)
    key = json.dumps({"data": tree["data"], "model": tree["model"]}, sort_keys=True, default=str)
    path = Path(cache_dir) / "imbalance.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["imbalance"]
    train_ds, _ = build_datasets(cfg)
    imbalance = class_imbalance(network_boxes(train_ds, cfg.model), cfg.model, train_ds.num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"key": key, "imbalance": imbalance}, indent=1))
    return imbalance


def prior_balance(cfg: Config, neg_per_pos: float) -> Optional[float]:
    """`prior_gradient_ratio` of cfg's classification loss (focal or α-balanced CE; None for the
    others) at the setting's imbalance: whether the easy negatives' gradient outweighs the
    positives' at initialization (§3.3)."""
    from ..diagnostics.loss_cdf import prior_gradient_ratio

    m = cfg.model
    if m.cls_loss not in ("focal", "ce"):
        return None
    gamma = 0.0 if m.cls_loss == "ce" else m.focal_gamma
    return prior_gradient_ratio(neg_per_pos, gamma, m.focal_alpha, m.prior_prob)


def loss_shares(cfg: Config, run_dir: Path, result: dict, write: Callable[[Path, dict], None]) -> dict:
    """`result` with "loss_cdf" added (unless there): Fig. 4's reading of the run's trained model
    on the val split, per γ of CDF_GAMMAS: the share of the negatives' loss carried by their
    hardest 1 % and 10 %, and of the positives' by their hardest 20 %."""
    from ..data.build import build_datasets
    from ..diagnostics.loss_cdf import collect_pt, top_share
    from ..engine import resolve_device
    from ..weights.loader import load_model

    if "loss_cdf" in result or result.get("diverged"):
        return result
    weights = run_dir / "model_final.pth"
    if not weights.is_file():
        raise ConfigError(f"{weights}: missing, so its loss CDF cannot be measured; delete its result.json to retrain")
    device = resolve_device(cfg.train.device)
    model = load_model(str(weights)).model.to(device)
    _, val_ds = build_datasets(cfg, train=False)
    pos, neg = collect_pt(model, val_ds, device, max_images=CDF_IMAGES)
    shares: dict[str, Any] = {"images": min(CDF_IMAGES, len(val_ds)), "positives": len(pos), "negatives": len(neg)}
    for g in CDF_GAMMAS:
        shares[f"gamma_{g:g}"] = {
            "negatives_hardest_1pct": top_share(neg, g, 0.01),
            "negatives_hardest_10pct": top_share(neg, g, 0.10),
            "positives_hardest_20pct": top_share(pos, g, 0.20),
        }
    result = dict(result, loss_cdf=shares)
    write(run_dir, result)
    return result


def loss_trend(metrics_path: Path) -> Optional[float]:
    """How flat a run's training loss ends: the relative change of its mean from the first to the
    second half of the last fifth of the iterations (metrics.jsonl's loss records), e.g. -0.015
    for a 1.5 % fall; None with fewer than 10 records in that fifth (train.log_period too large)."""
    losses = {}
    for line in Path(metrics_path).read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec and "iter" in rec:
            losses[int(rec["iter"])] = float(rec["loss"])
    if not losses:
        return None
    last = max(losses)
    start, middle = last - last // 5, last - last // 10
    first = [v for it, v in losses.items() if start < it <= middle]
    second = [v for it, v in losses.items() if middle < it]
    if len(first) + len(second) < 10 or not first or not second:
        return None
    a, b = statistics.fmean(first), statistics.fmean(second)
    return (b - a) / a


def with_loss_trend(run_dir: Path, result: dict, write: Callable[[Path, dict], None]) -> dict:
    """`result` with "last_fifth_loss_change" (`loss_trend`) added and written to its
    result.json, when its metrics.jsonl is there (it is not committed: a cloned cache keeps the
    value the training machine wrote)."""
    path = Path(run_dir) / "metrics.jsonl"
    if "last_fifth_loss_change" in result or result.get("diverged") or not path.is_file():
        return result
    change = loss_trend(path)
    if change is None:
        return result
    updated = dict(result, last_fifth_loss_change=change)
    write(Path(run_dir), {k: v for k, v in updated.items() if k not in ("hash", "seed")})
    return updated


def trend_summary(results: dict[str, list[dict]]) -> Optional[dict]:
    """The spread of `last_fifth_loss_change` over every run that has it."""
    changes = [r["last_fifth_loss_change"] for rs in results.values() for r in rs if "last_fifth_loss_change" in r]
    if not changes:
        return None
    return {"runs": len(changes), "min": min(changes), "median": statistics.median(changes), "max": max(changes)}


def report_lines(report: dict) -> list[str]:
    """The paired comparisons, the setting's imbalance and the Fig. 4 shares, as markdown."""
    metric = report.get("power", {}).get("metric", "AP")
    key = "diff_ap" if metric == "AP" else f"diff_{metric}"
    lines = [
        "",
        f"Paired comparisons (seed k of both rows: the same initial weights and data order), {metric}:",
        "",
        "| a | b | mean a - b | 95 % CI | seeds | per seed |",
        "|---|---|---:|---|---:|---|",
    ]
    for c in report["comparisons"]:
        d, h = c[key], c["ci95"]
        ci = "—" if h is None else f"[{d - h:+.2f}, {d + h:+.2f}]"
        per_seed = ", ".join(f"{v:+.1f}" for _, v in sorted(c["per_seed"].items(), key=lambda kv: int(kv[0])))
        diff = "—" if d is None else f"{d:+.2f}"
        lines.append(f"| {c['a']} | {c['b']} | {diff} | {ci} | {c['seeds']} | {per_seed} |")
    trend = report.get("last_fifth_loss_change")
    if trend:
        lines += [
            "",
            f"Convergence: over the last fifth of the iterations the training loss changed by "
            f"{trend['min']:+.1%} to {trend['max']:+.1%} (median {trend['median']:+.1%}; {trend['runs']} runs; "
            "the mean of its second half against its first).",
        ]
    if report.get("imbalance_neg_pairs_per_pos") is not None:
        im = report["imbalance"]
        lines += [
            "",
            f"Class imbalance of the setting (`retinanet analyze anchors`, {im['images']} training images): "
            f"{report['imbalance_neg_pairs_per_pos']:,.0f} negative (anchor, class) pairs per positive pair; "
            f"{im['anchors_per_image']:,.0f} anchors, {im['positive_per_image']:.1f} positive anchors and "
            f"{im['objects_per_image']:.2f} objects per image, {im['num_classes']} classes.",
        ]
    if report.get("prior_gradient_ratio"):
        ratios = "; ".join(f"{row} {v:.3g}" for row, v in report["prior_gradient_ratio"].items() if v is not None)
        lines += [
            "",
            "At initialization (every class output at the prior π, §3.3), the negatives' summed gradient "
            f"against the positives' at that imbalance: {ratios}.",
        ]
    if report.get("loss_cdf"):
        lines += [
            "",
            "Fig. 4 read off the trained models (val images): the share of the loss carried by the hardest examples.",
            "",
            "| model | seed | loss | negatives: hardest 1 % | hardest 10 % | positives: hardest 20 % |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for row, shares in report["loss_cdf"].items():
            for g in sorted(k for k in shares if k.startswith("gamma_")):
                v = shares[g]
                lines.append(
                    f"| {row} | {shares['seed']} | FL γ={g[len('gamma_') :]} | {v['negatives_hardest_1pct']:.1%} | "
                    f"{v['negatives_hardest_10pct']:.1%} | {v['positives_hardest_20pct']:.1%} |"
                )
    return lines


__all__ = [
    "BEST",
    "POWER_DEFAULTS",
    "check_names",
    "compare",
    "ensure_power",
    "loss_shares",
    "loss_trend",
    "power_options",
    "prior_balance",
    "report_lines",
    "resolve",
    "setting_imbalance",
    "trend_summary",
    "values",
    "with_loss_trend",
]

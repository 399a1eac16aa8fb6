"""The paper's ablations (Table 1 (a)-(e)) as data, and the runner that reproduces them.

A table is a YAML file in experiments/tables/: a base config per scale, overrides common to every
row, and rows that are named sets of dotted overrides with the paper's numbers beside them.
Nothing about a row lives in code, so adding a row is adding four lines of YAML.

`run_table("alpha", "mini")` trains every row (and its seeds), evaluates it, and writes
experiments/results/alpha_mini.{md,json}. Each finished run is cached under
experiments/runs/<table>_<scale>/<hash of its resolved config>/result.json: an interrupted
table resumes (a half-trained row continues from its last checkpoint) and finished rows are
never trained again, even when they appear in another table with the same resolved config
(e.g. the γ = 2, α = .25 baseline of (b) and (c)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml

from ..config import Config, ConfigError, apply_overrides, config_to_dict, load_config, parse_overrides
from ..utils.io import atomic_write
from ..utils.machine import device_name, git_commit
from ..utils.paths import project_path
from . import claims, power
from .stats import mean_ci95

log = logging.getLogger(__name__)

# experiments/ of the source checkout (or of the current folder when installed elsewhere).
TABLES_DIR = project_path("experiments/tables")
RESULTS_DIR = project_path("experiments/results")
RUNS_DIR = project_path("experiments/runs")
TABLES = ("alpha", "gamma", "anchors", "ohem", "speed")
SCALES = ("mini", "paper")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclasses.dataclass
class Row:
    name: str
    overrides: dict[str, list[str]]  # per scale ("all" applies to both)
    paper: dict[str, float]  # the paper's numbers for this row (its Table 1 cell)
    seeds: dict[str, int]  # runs per scale (different cfg.seed), default 1
    scales: tuple[str, ...] = SCALES  # the scales this row exists at (Table 1(e) has its own grid per scale)

    def overrides_for(self, scale: str) -> list[str]:
        return list(self.overrides.get("all", [])) + list(self.overrides.get(scale, []))


@dataclasses.dataclass
class Table:
    name: str
    title: str
    metrics: list[str]
    base: dict[str, str]  # scale -> config file (relative to the repo)
    common: dict[str, list[str]]  # scale -> overrides for every row
    rows: list[Row]
    # Re-run the best row whose name starts with `prefix` with this many seeds per scale, once
    # all rows are done (Table 1(a): the best α-balanced CE row is only known after the fact).
    repeat_best: Optional[dict[str, Any]] = None
    notes: str = ""
    # Time every row's inference after all rows trained (Table 1(e)'s "time" column).
    timed: bool = False
    # Paired comparisons with power (tools/power.py): [{a, b}], the seed rule, Fig. 4 shares of
    # chosen rows, and the setting's class imbalance in the report.
    comparisons: list[dict] = dataclasses.field(default_factory=list)
    power: Optional[dict] = None
    loss_cdf: list[str] = dataclasses.field(default_factory=list)
    imbalance: bool = False

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"table {self.name} has no row {name!r}; rows: {[r.name for r in self.rows]}")


def _per_scale(value: Any, where: str) -> dict[str, Any]:
    """A table field given once for both scales, or as {mini: ..., paper: ..., all: ...}."""
    if isinstance(value, dict):
        unknown = set(value) - set(SCALES) - {"all"}
        if unknown:
            raise ConfigError(f"{where}: unknown scale(s) {sorted(unknown)}; expected {SCALES} or 'all'")
        return dict(value)
    return {"all": value}


def load_table(name: str, tables_dir: Optional[Path] = None) -> Table:
    """Read and check experiments/tables/<name>.yaml (in `tables_dir`, default TABLES_DIR)."""
    tables_dir = TABLES_DIR if tables_dir is None else tables_dir
    path = Path(tables_dir) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(tables_dir).glob("*.yaml"))
        raise ConfigError(f"no experiment table {name!r} ({path} not found); tables: {known}")
    data = yaml.safe_load(path.read_text())
    allowed = {"title", "metrics", "base", "common", "rows", "repeat_best", "notes", "timed"}
    allowed |= {"comparisons", "power", "loss_cdf", "imbalance"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    rows = []
    for i, r in enumerate(data["rows"]):
        bad = set(r) - {"name", "overrides", "paper", "seeds", "scales"}
        if bad:
            raise ConfigError(f"{path}: row {i}: unknown key(s) {sorted(bad)}")
        overrides = _per_scale(r.get("overrides", []), f"{path}: row {r['name']!r} overrides")
        seeds = _per_scale(r.get("seeds", 1), f"{path}: row {r['name']!r} seeds")
        scales = tuple(r.get("scales", SCALES))
        if set(scales) - set(SCALES):
            raise ConfigError(f"{path}: row {r['name']!r}: scales {list(scales)}; expected a subset of {SCALES}")
        rows.append(Row(str(r["name"]), overrides, dict(r.get("paper", {})), seeds, scales))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: duplicate row names in {names}")
    common = _per_scale(data.get("common", []), f"{path}: common")
    table = Table(
        name,
        data["title"],
        list(data.get("metrics", ["AP", "AP50", "AP75"])),
        dict(data["base"]),
        common,
        rows,
        data.get("repeat_best"),
        data.get("notes", ""),
        bool(data.get("timed", False)),
        [dict(c) for c in data.get("comparisons", [])],
        None,
        [str(n) for n in data.get("loss_cdf", [])],
        bool(data.get("imbalance", False)),
    )
    for c in table.comparisons:
        if set(c) != {"a", "b"}:
            raise ConfigError(f"{path}: a comparison is {{a: row, b: row}}, got {c}")
        power.check_names(table, [c["a"], c["b"]], f"{path}: comparisons")
    power.check_names(table, table.loss_cdf, f"{path}: loss_cdf")
    if table.comparisons or "power" in data:
        table.power = power.power_options(data.get("power"), str(path))
    return table


def row_config(table: Table, row: Row, scale: str, seed: int = 0, extra: Sequence[str] = ()) -> Config:
    """The resolved config of one run: base file, the table's common overrides, the row's, the
    user's `extra` overrides, then the seed."""
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r}: expected one of {SCALES}")
    base = table.base.get(scale)
    if base is None:
        raise ConfigError(f"table {table.name} has no base config for scale {scale!r}")
    overrides = list(table.common.get("all", [])) + list(table.common.get(scale, [])) + row.overrides_for(scale)
    cfg = load_config(project_path(base), overrides)
    cfg = apply_overrides(cfg, list(extra))
    return dataclasses.replace(cfg, seed=cfg.seed + seed)


def seeds_for(row: Row, scale: str) -> int:
    return int(row.seeds.get(scale, row.seeds.get("all", 1)))


def config_hash(cfg: Config) -> str:
    """12 hex digits identifying what a run computes: the resolved config without output_dir."""
    tree = config_to_dict(cfg)
    tree.pop("output_dir", None)
    # Evaluation details that do not change the trained model or its AP.
    tree.get("train", {}).pop("log_period", None)
    tree.get("data", {}).pop("num_workers", None)
    # Options added after runs were cached, hashed only when set: at their default they change
    # nothing, and the cached runs keep their hashes.
    added = (
        ("data", "verify_images", False),
        ("data", "augment", []),
        ("data", "synth_preset", None),
        ("model", "weights", None),
        ("model", "weights_class_map", "index"),
        ("train", "patience", 0),
        ("train", "save_best", None),
    )
    for section, key, default in added:
        if tree.get(section, {}).get(key, default) == default:
            tree.get(section, {}).pop(key, None)
    # Defaults that changed meaning-preserving form: the splits' None ("the kind's usual split")
    # was VOC's "trainval" / "test" when the runs were cached.
    for key, old in (("train_split", "trainval"), ("val_split", "test")):
        if key in tree.get("data", {}) and tree["data"][key] is None:
            tree["data"][key] = old
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def measure_inference_ms(
    model: torch.nn.Module, dataset, device: torch.device, num_images: int = 50, warmup: int = 5
) -> float:
    """Median wall time of one image through the model in eval mode (batch 1, preprocessing,
    network and post-processing; no data loading), in milliseconds: the "time" of Table 1(e)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(num_images + warmup):  # a val split smaller than that is cycled through
            image = dataset[i % len(dataset)][0].to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model([image])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run_one(cfg: Config, run_dir: Path) -> dict:
    """Train and evaluate one config in run_dir (resuming a partial run); cached in result.json."""
    from ..engine import NonFiniteLossError, is_main, resolve_device, train

    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cfg = dataclasses.replace(cfg, output_dir=str(run_dir))
    start = time.perf_counter()
    try:
        out = train(cfg, resume=(run_dir / "last_checkpoint.pth").is_file())
    except NonFiniteLossError as e:
        # A diverged row is a result (Table 1(a) asks which rows diverge), recorded, not retried.
        out = {"metrics": {}, "iteration": None, "skipped": None, "error": str(e)}
    seconds = time.perf_counter() - start
    if not is_main():
        return {}
    # NaN (no box of that size in the val split) becomes null: result.json stays valid JSON.
    metrics = {k: (None if math.isnan(float(v)) else float(v)) for k, v in out["metrics"].items() if k in METRICS}
    # Diverged: training stopped on non-finite losses. (NaN metrics are normal: AP_S is NaN when
    # the val split has no small boxes.) Steps skipped for a non-finite loss are counted apart.
    diverged = "error" in out
    result = {
        "metrics": metrics,
        "train_seconds": round(seconds, 1),
        "iterations": out["iteration"],
        "nonfinite_skipped": int(out.get("skipped") or 0),
        "diverged": diverged,
        "commit": git_commit(),
        # (threads: float sums are added in another order with another count, so seed k is
        # bit-for-bit the same run only on the same CPU kind and thread count)
        "trained_on": device_name(resolve_device(cfg.train.device)),
    }
    if "error" in out:
        result["error"] = out["error"]
    result = power.with_loss_trend(run_dir, result, lambda *_: None)  # converged? (written just below)
    _write_result(run_dir, result)
    return result


def train_locked(cfg: Config, run_dir: Path, wait: bool) -> Optional[dict]:
    """`run_one` under the run folder's lock (claims.py), so that workers started side by side
    share a table's runs. When another process holds it: None at once, or with `wait` the result
    it leaves (or this process resumes the run, if the other one died)."""
    if claims.distributed() or (run_dir / "result.json").is_file():
        return run_one(cfg, run_dir)
    lock = claims.RunLock(run_dir)
    if not lock.try_acquire():
        if not wait:
            print(f"  ... trained by {lock.holder()}", flush=True)
            return None
        lock.acquire()
    try:
        return run_one(cfg, run_dir)
    finally:
        lock.release()


def _write_result(run_dir: Path, result: dict) -> None:
    atomic_write(run_dir / "result.json", json.dumps(result, indent=1))


def time_run(cfg: Config, run_dir: Path, result: dict, retime: bool = False) -> dict:
    """`result` (the run's result.json) with the inference time of the trained run added (Table
    1(e)'s "time"), unless it is there already (retime: measure again). A table's rows are timed
    one after the other, after all of them trained, so their times share the machine's state
    (and other jobs that slowed the training do not reach the timing when they have ended)."""
    from ..data.build import build_datasets
    from ..engine import is_main, resolve_device
    from ..weights.loader import load_model

    if not is_main() or result.get("diverged") or ("ms_per_image" in result and not retime):
        return result
    weights = run_dir / "model_final.pth"
    if not weights.is_file():
        raise ConfigError(
            f"{weights}: missing, so this run cannot be timed; delete {run_dir / 'result.json'} to train it again"
        )
    device = resolve_device(cfg.train.device)
    model = load_model(str(weights)).model.to(device)
    _, val_ds = build_datasets(cfg, train=False)
    result = dict(
        result,
        ms_per_image=round(measure_inference_ms(model, val_ds, device), 2),
        timed_commit=git_commit(),
        device=device_name(device),
    )
    _write_result(run_dir, result)
    return result


def find_in_other_table(runs_dir: Path, scale: str, run_dir: Path) -> Optional[Path]:
    """The folder of a finished run with run_dir's config hash in another table (e.g. the γ = 2,
    α = .25 baseline is a row of (b), (c), (d) and (e)), or None."""
    for src in sorted(Path(runs_dir).glob(f"*_{scale}/{run_dir.name}/result.json")):
        if src.parent != run_dir:
            return src.parent
    return None


def reuse_run(src: Path, run_dir: Path) -> dict:
    """The result of the finished run in `src`, copied with its weights into run_dir (by the
    main process), so each table's folder holds all of its runs."""
    from ..engine import is_main

    result = json.loads((src / "result.json").read_text())
    for k in ("ms_per_image", "device", "timed_commit"):  # a time belongs to the table that measured it
        result.pop(k, None)
    result["reused_from"] = src.parent.name
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if (src / "model_final.pth").is_file():
            shutil.copy2(src / "model_final.pth", run_dir / "model_final.pth")
        _write_result(run_dir, result)
    return result


def plan(table: Table, scale: str, extra: Sequence[str] = ()) -> list[tuple[Row, int, Config]]:
    """Every run of the table at this scale: (row, seed index, resolved config)."""
    return [
        (row, s, row_config(table, row, scale, s, extra))
        for row in rows_at(table, scale)
        for s in range(seeds_for(row, scale))
    ]


def rows_at(table: Table, scale: str) -> list[Row]:
    return [r for r in table.rows if scale in r.scales]


def summarize(runs: list[dict], metrics: Sequence[str], ci: bool = False) -> dict:
    """Mean and (for several seeds) min-max spread of each metric over a row's runs; with `ci`,
    also the 95 % t-interval's half-width (<metric>_ci95)."""
    out = {"runs": len(runs), "diverged": any(r.get("diverged") for r in runs)}
    # Runs that trained to the end with finite losses and still match no object (AP exactly 0:
    # e.g. CE whose positives never rise above the prior, Table 1(a)'s α = .1): a result to mark
    # beside the row, not a divergence.
    out["learned_nothing"] = sum(1 for r in runs if not r.get("diverged") and r.get("metrics", {}).get("AP") == 0.0)
    for m in list(metrics) + (["ms_per_image"] if runs and "ms_per_image" in runs[0] else []):
        vals = [r["metrics"][m] if m in r.get("metrics", {}) else r.get(m) for r in runs]
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if vals:
            out[m] = statistics.fmean(vals)  # rounded once, where it is shown
            if len(vals) > 1:
                out[m + "_spread"] = max(vals) - min(vals)
                if ci:
                    out[m + "_ci95"] = mean_ci95(vals)[1]
    return out


def run_table(
    name: str,
    scale: str,
    extra: Sequence[str] = (),
    runs_dir: Optional[Path] = None,
    results_dir: Optional[Path] = None,
    tables_dir: Optional[Path] = None,
    dry_run: bool = False,
    retime: bool = False,
) -> dict:
    """Run (or resume) every row of a table and write results_dir/<name>_<scale>.{md,json}
    (default folders: RUNS_DIR, RESULTS_DIR, TABLES_DIR, read when called).
    retime: measure the inference times of a timing table (speed) again, e.g. on a quiet machine."""
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    results_dir = RESULTS_DIR if results_dir is None else results_dir
    table = load_table(name, tables_dir)
    parse_overrides(list(extra))  # malformed overrides fail before any training
    runs = plan(table, scale, extra)
    results: dict[str, list[dict]] = {}
    done = []
    for row, s, cfg in runs:
        run_dir = Path(runs_dir) / f"{name}_{scale}" / config_hash(cfg)
        cached = (run_dir / "result.json").is_file()
        # Every process of a distributed run sees the same files, so all take the same path.
        src = None if cached else find_in_other_table(Path(runs_dir), scale, run_dir)
        note = " (cached)" if cached else (f" (the same run as {src.parent.name}/{src.name})" if src else "")
        print(f"[{name}/{scale}] {row.name} seed {s}: {run_dir}{note}", flush=True)
        if dry_run:
            continue
        # A run another worker is training (claims.py) is left to it, and waited for at the end.
        done.append((row, s, cfg, run_dir, reuse_run(src, run_dir) if src else train_locked(cfg, run_dir, False)))
    if dry_run:
        return {"table": name, "scale": scale, "runs": len(runs)}
    for i, (row, s, cfg, run_dir, result) in enumerate(done):
        if result is None:
            print(f"[{name}/{scale}] waiting for {row.name} seed {s}: {run_dir}", flush=True)
            done[i] = (row, s, cfg, run_dir, train_locked(cfg, run_dir, True))
    for row, s, cfg, run_dir, result in done:
        if table.timed:
            result = time_run(cfg, run_dir, result, retime)
        results.setdefault(row.name, []).append({**result, "hash": run_dir.name, "seed": s})

    def run_seed(row: Row, s: int, why: str, wait: bool = True) -> Optional[dict]:
        """The run's result; None when another worker is training it and not `wait`."""
        cfg = row_config(table, row, scale, s, extra)
        run_dir = Path(runs_dir) / f"{name}_{scale}" / config_hash(cfg)
        print(f"[{name}/{scale}] {why} {row.name} seed {s}: {run_dir}", flush=True)
        result = train_locked(cfg, run_dir, wait)
        return None if result is None else {**result, "hash": run_dir.name, "seed": s}

    best_note = ""
    rb = table.repeat_best
    if rb:
        prefix, want = rb["prefix"], int(_per_scale(rb["seeds"], "repeat_best.seeds").get(scale, 1))
        candidates = [r for r in rows_at(table, scale) if r.name.startswith(prefix)]
        best = max(
            candidates, key=lambda r: statistics.fmean(x["metrics"].get("AP", float("-inf")) for x in results[r.name])
        )
        for s in range(seeds_for(best, scale), want):
            results[best.name].append(run_seed(best, s, f"best {prefix!r} row"))
        best_note = f"The best {prefix!r} row ({best.name}) was re-run with {want} seeds."
    extras: dict[str, Any] = {}
    if table.comparisons:
        names = [r.name for r in rows_at(table, scale)]
        comparisons, _ = power.ensure_power(
            table,
            results,
            lambda row, s, wait: run_seed(table.row(row), s, "paired seed for power:", wait),
            names,
            scale,
        )
        extras["comparisons"] = comparisons
        extras["power"] = table.power
        for entry in results.values():
            entry.sort(key=lambda r: r["seed"])
            for i, r in enumerate(entry):  # did each run train close to convergence?
                run_dir = Path(runs_dir) / f"{name}_{scale}" / r["hash"]
                entry[i] = power.with_loss_trend(run_dir, r, _write_result)
        extras["last_fifth_loss_change"] = power.trend_summary(results)
    if table.loss_cdf:
        metric = (table.power or power.POWER_DEFAULTS)["metric"]
        extras["loss_cdf"] = {}
        for label in table.loss_cdf:
            row_name = power.resolve(label, results, [r.name for r in rows_at(table, scale)], metric)
            first = results[row_name][0]
            cfg = row_config(table, table.row(row_name), scale, first["seed"], extra)
            run_dir = Path(runs_dir) / f"{name}_{scale}" / first["hash"]
            with contextlib.nullcontext() if claims.distributed() else claims.RunLock(run_dir):
                # (under the run's lock: another worker may be measuring it; then its result.json has it)
                saved = json.loads((run_dir / "result.json").read_text())
                updated = power.loss_shares(cfg, run_dir, saved, _write_result)
            results[row_name][0] = {**updated, "hash": first["hash"], "seed": first["seed"]}
            extras["loss_cdf"][row_name] = {"seed": first["seed"], **updated.get("loss_cdf", {})}
    if table.imbalance:
        first_row = rows_at(table, scale)[0]
        imbalance = power.setting_imbalance(
            row_config(table, first_row, scale, 0, extra), Path(runs_dir) / f"{name}_{scale}"
        )
        extras["imbalance_neg_pairs_per_pos"] = imbalance.get("negative_pairs_per_positive_pair")
        extras["imbalance"] = imbalance
        if imbalance.get("negative_pairs_per_positive_pair"):
            extras["prior_gradient_ratio"] = {
                r.name: power.prior_balance(
                    row_config(table, r, scale, 0, extra), imbalance["negative_pairs_per_positive_pair"]
                )
                for r in rows_at(table, scale)
            }

    report = {
        "table": name,
        "scale": scale,
        "title": table.title,
        "commit": git_commit(),
        "extra_overrides": list(extra),
        "metrics": table.metrics,
        "notes": " ".join(x for x in (table.notes, best_note) if x),
        "rows": [
            {
                "name": r.name,
                "paper": r.paper,
                "measured": summarize(results[r.name], table.metrics, ci=bool(table.comparisons)),
                "runs": results[r.name],
            }
            for r in rows_at(table, scale)
        ],
        **extras,
    }
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(results_dir / f"{name}_{scale}.json", json.dumps(report, indent=1))
    atomic_write(results_dir / f"{name}_{scale}.md", format_report(report))
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    """Markdown: the measured numbers (mean, ± half the min-max spread over seeds) beside the paper's."""
    metrics = report["metrics"]
    speed = any("ms_per_image" in r["measured"] for r in report["rows"])
    head = (
        ["row"]
        + [f"{m} (paper)" for m in metrics]
        + [f"{m} (measured)" for m in metrics]
        + (["ms/img (paper)", "ms/img (measured)"] if speed else [])
        + ["runs"]
    )
    lines = [
        f"# {report['title']} — {report['scale']} scale",
        "",
        f"Commit {report['commit']}."
        + (f" Extra overrides: `{' '.join(report['extra_overrides'])}`." if report["extra_overrides"] else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in report["rows"]:
        m = row["measured"]

        def cell(k: str) -> str:
            if k not in m:
                return "—"
            if "comparisons" in report:  # mean ± the 95 % t-interval's half-width
                return f"{m[k]:.1f}" + (f" ± {m[k + '_ci95']:.1f}" if m.get(k + "_ci95") is not None else "")
            return f"{m[k]:.1f}" + (f" ± {m[k + '_spread'] / 2:.1f}" if k + "_spread" in m else "")

        paper = [str(row["paper"].get(k, "—")) for k in metrics]
        mark = " (diverged)" if m.get("diverged") else ""
        if m.get("learned_nothing"):
            mark += f" (AP 0 in {m['learned_nothing']} of {m['runs']} seeds)"
        cells = [row["name"] + mark] + paper + [cell(k) for k in metrics]
        if speed:
            cells += [str(row["paper"].get("time", "—")), cell("ms_per_image")]
        lines.append("| " + " | ".join(cells + [str(m["runs"])]) + " |")
    if any(row["measured"].get("learned_nothing") for row in report["rows"]):
        lines += [
            "",
            "AP 0 in k of n seeds: those runs trained to the end with finite losses (not diverged) "
            "and no detection matched an object.",
        ]
    if "comparisons" in report:
        lines += ["", "± is the 95 % confidence interval's half-width over seeds (t-distribution)."]
        lines += power.report_lines(report)
    if report.get("notes"):
        lines += ["", report["notes"]]
    return "\n".join(lines) + "\n"


__all__ = [
    "TABLES",
    "SCALES",
    "Table",
    "Row",
    "load_table",
    "row_config",
    "plan",
    "config_hash",
    "run_one",
    "time_run",
    "find_in_other_table",
    "reuse_run",
    "run_table",
    "format_report",
    "measure_inference_ms",
]

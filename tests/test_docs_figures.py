"""Every figure quoted in README.md, benchmarks/RESULTS.md and experiments/README.md is read
from the committed artifact that holds it and looked for, formatted, in the document's text.

FIGURES is data: (document, artifact, extraction, text with a {} for the formatted value).
Changing a number in a document or in an artifact makes the test fail. Pure JSON, no torch."""

from __future__ import annotations

import json
import math
import re
import statistics
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README, RESULTS, EXPERIMENTS = "README.md", "benchmarks/RESULTS.md", "experiments/README.md"


@cache
def text(doc: str) -> str:
    return " ".join((ROOT / doc).read_text().split())  # line breaks and indents as one space


@cache
def artifact(path: str):
    p = ROOT / path
    if p.suffix == ".jsonl":
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if p.suffix == ".log":
        return p.read_text()
    return json.loads(p.read_text())


def key(path: str, *keys):
    def get():
        x = artifact(path)
        for k in keys:
            x = x[k]
        return x

    return get


def last_eval(path: str, metric: str):
    return lambda: [r["eval"] for r in artifact(path) if "eval" in r][-1][metric]


def eval_at(path: str, it: int, metric: str):
    return lambda: next(r["eval"][metric] for r in artifact(path) if "eval" in r and r["eval"]["iter"] == it)


def time_at(path: str, it: int):
    return lambda: next(r["time"] for r in artifact(path) if r.get("iter") == it and "time" in r)


def bench_row(name: str, field: str):
    return lambda: next(r[field] for r in artifact("benchmarks/results.json")["rows"] if r["name"] == name)


FOCAL = "focal loss fwd+bwd, 200000 x 80"


def focal_note(pattern: str):
    return lambda: float(re.search(pattern, bench_row(FOCAL, "notes")())[1])


def table_runs(table: str, row: str, metric: str) -> list[float]:
    rows = artifact(f"experiments/results/{table}_mini.json")["rows"]
    return [r["metrics"][metric] for r in next(x for x in rows if x["name"] == row)["runs"]]


def mean(table: str, row: str, metric: str = "AP"):
    """The mean of the runs' unrounded metrics: rounded once, by the format string."""
    return lambda: statistics.fmean(table_runs(table, row, metric))


def half_spread(table: str, row: str, metric: str = "AP"):
    return lambda: (max(v := table_runs(table, row, metric)) - min(v)) / 2


def diff(a, b):
    return lambda: a() - b()


def transfer(row: str, metric: str = "AP", spread: bool = False):
    def get():
        v = [r["metrics"][metric] for r in artifact("experiments/results/transfer_mini.json")["rows"][row]["runs"]]
        return max(v) - min(v) if spread else statistics.fmean(v)

    return get


def tiled(block: int, column: int):
    """Row `block` of the COCO tables printed by the four `retinanet eval` commands."""

    def get():
        rows = [line for line in artifact(TILED).splitlines() if re.match(r"^\| [0-9]", line)]
        return float(rows[block].strip("|").split("|")[column])

    return get


def paper(table: str, row: str):
    rows = artifact(f"experiments/results/{table}_mini.json")["rows"]
    return lambda: next(x for x in rows if x["name"] == row)["paper"]["AP"]


DEMO, RERUN = "docs/demo/metrics.jsonl", "docs/demo/metrics_rerun.jsonl"
BENCH = "benchmarks/results.json"
ANCH = "docs/anchors/mini_3sc_3ar.json"
TILED = "docs/tiled_prediction/eval.log"
REPORT, FT = "docs/eval_report/report.json", "docs/finetune_small/metrics.jsonl"
TR_S, TR_F = "from scratch", "fine-tuned from the source model"
TR_A = 'fine-tuned, data.augment=[photometric,vflip,"lsj(min_scale=0.5,max_scale=1.5)"]'
IMB = ("imbalance",)
FIG4 = "experiments/figures/fig4_loss_cdf.json"

FIGURES = [
    # README: the demo
    (README, DEMO, last_eval(DEMO, "AP"), "**AP {:.1f}** on the 100 val images"),
    (README, DEMO, last_eval(DEMO, "AP50"), "(AP50 {:.1f}, AP75"),
    (README, DEMO, last_eval(DEMO, "AP75"), "AP75 {:.1f}, AP_S"),
    (README, DEMO, last_eval(DEMO, "APs"), "AP_S {:.1f}, AP_M"),
    (README, DEMO, last_eval(DEMO, "APm"), "AP_M {:.1f}, AP_L"),
    (README, DEMO, last_eval(DEMO, "APl"), "AP_L {:.1f}). The run is seeded"),
    (README, RERUN, last_eval(RERUN, "AP"), "**AP {:.1f}** on the 100 val images"),
    (README, RERUN, time_at(RERUN, 165), "({:.0f} s and"),
    (README, DEMO, time_at(DEMO, 165), "and {:.0f} s of training in two runs"),
    (README, BENCH, bench_row("AP on the synthetic val (100 images), fold_bn+channels_last - fp32", "details"), None),
    # README: the focal loss
    (README, BENCH, bench_row(FOCAL, "ours_ms"), "compiled path took {:.0f} ms"),
    (README, BENCH, bench_row(FOCAL, "torchvision_ms"), "torchvision's {:,.0f} ms"),
    (README, BENCH, lambda: 1 / bench_row(FOCAL, "ratio")(), "({:.1f}× faster"),
    (README, BENCH, key(BENCH, "config", "repeats"), "medians of {} alternating runs), the label"),
    (README, BENCH, focal_note(r"from labels (\d+) ms"), "the label path {:.0f} ms"),
    (README, BENCH, focal_note(r"eager fallback (\d+) ms"), "eager fallback {:.0f} ms."),
    # README: evaluation report, fine-tuning, transfer
    (
        README,
        "docs/eval_report/metrics.jsonl",
        last_eval("docs/eval_report/metrics.jsonl", "AP"),
        "AP {:.1f} on the 100",
    ),
    (README, REPORT, key(REPORT, "overall", "best", "score_thresh"), "F1-optimal threshold {:.3f}"),
    (README, REPORT, key(REPORT, "overall", "best", "f1"), "F1 {:.3f} against"),
    (README, REPORT, key(REPORT, "overall", "at_thresh", "f1"), "against {:.3f} at 0.3"),
    (README, FT, time_at(FT, 60), "({:.0f} s of training"),
    (README, FT, eval_at(FT, 20, "AP"), "images: {:.1f} after 20"),
    (README, FT, eval_at(FT, 60, "AP"), "{:.1f} after 60"),
    (
        README,
        "experiments/results/transfer_mini.json",
        key("experiments/results/transfer_mini.json", "source", "metrics", "AP"),
        "600 images; val AP {:.1f})",
    ),
    (README, "experiments/results/transfer_mini.json", diff(transfer(TR_F), transfer(TR_S)), "ahead by {:.1f} AP"),
    (README, "experiments/results/transfer_mini.json", diff(transfer(TR_F), transfer(TR_A)), "cost {:.1f} AP"),
    # README: speed against torchvision
    (README, BENCH, lambda: artifact(BENCH)["elapsed_s"] / 60, "RESULTS.md, {:.1f} min on 2 cores"),
    (README, BENCH, bench_row("inference fp32, 800 px, batch 1", "ratio"), "| {:.3f} /"),
    (README, BENCH, bench_row("inference fp32, 800 px, batch 4", "ratio"), "/ {:.3f} | ≤ 0.85 |"),
    (README, BENCH, bench_row("inference fp32, 512 px, batch 1", "ratio"), "| {:.3f} /"),
    (README, BENCH, bench_row("inference fp32, 512 px, batch 4", "ratio"), "/ {:.3f} | — |"),
    (README, BENCH, bench_row("training step fp32, 512 px, batch 2", "ratio"), "| {:.3f} (peak memory"),
    (README, BENCH, bench_row(FOCAL, "ratio"), "| {:.3f} | ≤ 0.15 |"),
    (
        README,
        BENCH,
        bench_row("assignment + loss fwd+bwd, 8 images x 20 boxes, 49104 anchors", "ratio"),
        "| {:.3f} | ≤ 0.30 |",
    ),
    (README, BENCH, bench_row("post-processing, batch 8, 512 px", "ratio"), "| {:.3f} | ≤ 0.50 |"),
    (README, BENCH, key(BENCH, "breakdown", "conv_throughput", 3, "gflops_per_s"), "({:.1f} against 131 GFLOP/s"),
    (README, BENCH, key(BENCH, "breakdown", "conv_throughput", 1, "gflops_per_s"), "against {:.0f} GFLOP/s"),
    (README, BENCH, bench_row("AP on the synthetic val (100 images), fold_bn+channels_last - fp32", "notes"), None),
    (README, BENCH, lambda: 100 * artifact(BENCH)["breakdown"]["train"]["ours fp32"]["conv_share"], "spends {:.2f} %"),
    (
        README,
        BENCH,
        lambda: 100 * artifact(BENCH)["breakdown"]["train"]["torchvision fp32"]["conv_share"],
        "(torchvision's: {:.2f} %)",
    ),
    (README, BENCH, lambda: artifact(BENCH)["updates"][0]["elapsed_s"] / 60, "benchmarks/results.json` ({:.1f} min)"),
    # RESULTS.md quotes from results.json (rendered by `retinanet benchmark`, see its own test below)
    (RESULTS, BENCH, bench_row(FOCAL, "ours_ms"), "| focal loss fwd+bwd, 200000 x 80 | {:,.0f} |"),
    (RESULTS, BENCH, bench_row(FOCAL, "torchvision_ms"), "| {:,.0f} | 0.078 |"),
    (RESULTS, BENCH, lambda: artifact(BENCH)["elapsed_s"] / 60, "({:.1f} min)"),
    # experiments/README: imbalance, anchors
    (
        EXPERIMENTS,
        ANCH,
        key(ANCH, *IMB, "negative_pairs_per_positive_pair"),
        "**{:,.0f} negative (anchor, class) pairs",
    ),
    (
        EXPERIMENTS,
        ANCH,
        key(ANCH, *IMB, "negative_pairs_per_positive_pair"),
        "({:,.0f} negative (anchor, class) pairs per",
    ),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "anchors_per_image"), "image {:,.0f} anchors, "),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "objects_per_image"), "anchors, {:.1f} objects, "),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "positive_per_image"), "objects, {:.0f} positive anchors"),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "positive_per_object"), "({:.0f} per object) and"),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "ignored_per_image"), "and {:.0f} ignored"),
    (EXPERIMENTS, ANCH, key(ANCH, *IMB, "positive_per_object"), "24.3 positive anchors per object (the same file)"),
    (
        EXPERIMENTS,
        ANCH,
        lambda: 100 * artifact(ANCH)["configured"]["buckets"]["all"]["coverage"],
        "for {:.1f} % of the boxes",
    ),
    (EXPERIMENTS, ANCH, lambda: artifact(ANCH)["imbalance"]["anchors_per_image"] / 9, "are {:,.0f} locations × 9"),
    (EXPERIMENTS, FIG4, key(FIG4, "positives"), "{:,} positive and"),
    # experiments/README: derived differences, from the runs' unrounded metrics
    (
        EXPERIMENTS,
        "experiments/results/anchors_mini.json",
        diff(mean("anchors", "2 sc, 1 ar"), mean("anchors", "3 sc, 1 ar")),
        "and {:.1f} with 1 ratio",
    ),
    (
        EXPERIMENTS,
        "experiments/results/speed_mini.json",
        diff(mean("speed", "mini R18 288"), mean("speed", "mini R34 288")),
        "only the gap at 288 px ({:.1f})",
    ),
    (
        EXPERIMENTS,
        "experiments/results/speed_mini.json",
        diff(mean("speed", "mini R18 320"), mean("speed", "mini R34 320")),
        "at 320 px ({:.1f})",
    ),
    (
        EXPERIMENTS,
        "experiments/results/speed_mini.json",
        diff(mean("speed", "mini R18 224"), mean("speed", "mini R34 224")),
        "at 224 px ({:.1f})",
    ),
    (
        EXPERIMENTS,
        "experiments/results/gamma_mini.json",
        lambda: 2 * half_spread("gamma", "γ=2 α=.25")(),
        "seed spread of {:.1f} AP",
    ),
    (
        EXPERIMENTS,
        "experiments/results/alpha_mini.json",
        lambda: 2 * half_spread("alpha", "α=.90")(),
        "spread over {:.1f} AP, so",
    ),
    (
        EXPERIMENTS,
        "experiments/results/schedule_mini.json",
        diff(mean("schedule", "CE α=.90, 120 it"), mean("schedule", "FL γ=2 α=.25, 120 it")),
        "CE's mean is {:.1f} AP higher",
    ),
    (
        EXPERIMENTS,
        "experiments/results/schedule_mini.json",
        diff(mean("schedule", "CE α=.90, 360 it"), mean("schedule", "FL γ=2 α=.25, 360 it")),
        "shrinks to {:.1f} AP",
    ),
    (
        EXPERIMENTS,
        "experiments/results/schedule_mini.json",
        diff(mean("schedule", "FL γ=2 α=.25, 360 it", "AP75"), mean("schedule", "CE α=.90, 360 it", "AP75")),
        "(AP75 +{:.1f})",
    ),
    (
        EXPERIMENTS,
        "experiments/results/schedule_mini.json",
        diff(mean("schedule", "CE α=.90, 360 it", "AP50"), mean("schedule", "FL γ=2 α=.25, 360 it", "AP50")),
        "AP50 (+{:.1f})",
    ),
    (
        EXPERIMENTS,
        "experiments/results/ohem_mini.json",
        diff(mean("ohem", "OHEM 512 nms .7"), mean("ohem", "FL")),
        "is {:.1f} AP above FL's",
    ),
]
FIGURES = [f for f in FIGURES if f[3] is not None]

# The 1-decimal tables of experiments/README.md, row by row: (table, row in the JSON, the
# row's first cell in the document, the metrics of its columns after the paper's AP).
TABLE_ROWS = [
    ("alpha", "α=.10", ".10", ["AP", "AP50"]),
    ("alpha", "α=.25", ".25", ["AP", "AP50"]),
    ("alpha", "α=.50", ".50", ["AP", "AP50"]),
    ("alpha", "α=.75", ".75", ["AP", "AP50"]),
    ("alpha", "α=.99", ".99", ["AP", "AP50"]),
    ("alpha", "α=.999", ".999", ["AP", "AP50"]),
    ("gamma", "γ=0 α=.75", "γ=0 α=.75", ["AP", "AP50"]),
    ("gamma", "γ=0.1 α=.75", "γ=0.1 α=.75", ["AP", "AP50"]),
    ("gamma", "γ=0.2 α=.75", "γ=0.2 α=.75", ["AP", "AP50"]),
    ("gamma", "γ=0.5 α=.50", "γ=0.5 α=.50", ["AP", "AP50"]),
    ("gamma", "γ=1 α=.25", "γ=1 α=.25", ["AP", "AP50"]),
    ("gamma", "γ=5 α=.25", "γ=5 α=.25", ["AP", "AP50"]),
    ("anchors", "1 sc, 1 ar", "1 sc, 1 ar", ["AP"]),
    ("anchors", "2 sc, 1 ar", "2 sc, 1 ar", ["AP"]),
    ("anchors", "3 sc, 1 ar", "3 sc, 1 ar", ["AP"]),
    ("anchors", "1 sc, 3 ar", "1 sc, 3 ar", ["AP"]),
    ("anchors", "4 sc, 3 ar", "4 sc, 3 ar", ["AP"]),
    ("ohem", "OHEM 128 nms .7", "OHEM 128, NMS .7", ["AP", "AP50"]),
    ("ohem", "OHEM 256 nms .7", "OHEM 256, NMS .7", ["AP", "AP50"]),
    ("ohem", "OHEM 128 nms .5", "OHEM 128, NMS .5", ["AP", "AP50"]),
    ("ohem", "OHEM 256 nms .5", "OHEM 256, NMS .5", ["AP", "AP50"]),
    ("ohem", "OHEM 512 nms .5", "OHEM 512, NMS .5", ["AP", "AP50"]),
    ("ohem", "OHEM 1:3 128 nms .5", "OHEM 1:3 128, NMS .5", ["AP", "AP50"]),
    ("ohem", "OHEM 1:3 256 nms .5", "OHEM 1:3 256, NMS .5", ["AP", "AP50"]),
    ("ohem", "OHEM 1:3 512 nms .5", "OHEM 1:3 512, NMS .5", ["AP", "AP50"]),
    ("ohem", "FL", "FL (γ = 2, α = .25)", ["AP", "AP50"]),
]
SPEED_ROWS = [
    ("mini R18 224", "R18, 224 px"),
    ("mini R18 288", "R18, 288 px"),
    ("mini R18 320", "R18, 320 px (the baseline's seed 0)"),
    ("mini R34 224", "R34, 224 px"),
    ("mini R34 288", "R34, 288 px"),
    ("mini R34 320", "R34, 320 px"),
]


@pytest.mark.parametrize("doc, path, get, template", FIGURES, ids=lambda x: x if isinstance(x, str) else "")
def test_figure_is_in_the_document(doc, path, get, template):
    assert (ROOT / path).is_file(), f"{path}: the artifact is not there"
    quoted = template.format(get())
    assert " ".join(quoted.split()) in text(doc), f"{doc} should say {quoted!r} ({path})"


@pytest.mark.parametrize("table, row, cell, metrics", TABLE_ROWS, ids=[f"{t}:{r}" for t, r, _, _ in TABLE_ROWS])
def test_experiment_table_row(table, row, cell, metrics):
    values = " | ".join(f"{mean(table, row, m)():.1f}" for m in metrics)
    line = f"| {cell} | {paper(table, row)():.1f} | {values} |"
    assert line in text(EXPERIMENTS), f"experiments/README.md should have the row {line!r}"


@pytest.mark.parametrize("row, cell", SPEED_ROWS)
def test_speed_table_row(row, cell):
    ms = next(r for r in artifact("experiments/results/speed_mini.json")["rows"] if r["name"] == row)["runs"][0]
    values = " | ".join(f"{mean('speed', row, m)():.1f}" for m in ("AP", "APs", "APm", "APl"))
    line = f"| {cell} | {values} | {ms['ms_per_image']:.1f} |"
    assert line in text(EXPERIMENTS), f"experiments/README.md should have the row {line!r}"


def test_three_seed_rows_and_schedule():
    t = text(EXPERIMENTS)
    for table, row in (("gamma", "γ=2 α=.25"), ("alpha", "α=.90"), ("schedule", "FL γ=2 α=.25, 120 it")):
        quoted = f"{mean(table, row)():.1f} ± {half_spread(table, row)():.1f}"
        assert quoted in t, quoted
        seeds = ", ".join(f"{v:.1f}" for v in table_runs(table, row, "AP"))
        assert seeds in t, seeds
    for row in ("FL γ=2 α=.25, 360 it", "CE α=.90, 360 it"):
        ap, ap50, ap75 = (f"{mean('schedule', row, m)():.1f}" for m in ("AP", "AP50", "AP75"))
        assert f"| {ap} | {ap50} / {ap75} |" in t, row


def test_fig4_table():
    t = text(EXPERIMENTS)
    for g, v in artifact(FIG4)["gammas"].items():
        line = f"| {g} | {v['negatives_hardest_1pct_share']:.3f} | {v['positives_hardest_20pct_share']:.3f} |"
        assert line in t, line


def test_transfer_tables():
    for doc in (README, EXPERIMENTS):
        t = text(doc)
        for row in (TR_S, TR_F, TR_A):
            cells = " | ".join(
                f"{transfer(row, m)():.1f} ± {transfer(row, m, True)():.1f}" for m in ("AP", "AP50", "AP75")
            )
            assert cells.replace("**", "") in t.replace("**", ""), f"{doc}: {row}: {cells}"


def test_tiled_table():
    rows = [line for line in artifact(TILED).splitlines() if re.match(r"^\| [0-9]", line)]
    assert len(rows) == 4
    t = text(README)
    for line in rows:
        ap, ap50, _ap75, aps, apm, apl = line.strip("|").split("|")
        quoted = " | ".join(c.strip() for c in (ap, ap50, aps, apm, apl))
        assert f"| {quoted} |" in t, quoted


def test_anchor_coverage_table():
    # configured and proposed columns: `retinanet analyze anchors ... --json` with the search
    search = "docs/anchors/mini_3sc_3ar_search.json"
    t = text(README)
    for bucket, label in (("all", "all "), ("small", "small (<32²)"), ("medium", "medium "), ("large", "large (>96²)")):
        b = artifact(ANCH)["configured"]["buckets"][bucket]
        assert artifact(search)["configured"]["buckets"][bucket] == b, bucket  # the same measurement
        p = artifact(search)["proposed"]["buckets"][bucket]
        assert re.search(
            rf"\| {re.escape(label.strip())}\s*\|\s*{b['boxes']} \|"
            rf"\s*{100 * b['coverage']:.1f}% \|\s*{b['mean_best_iou']:.3f} \|"
            rf"\s*{100 * p['coverage']:.1f}% \|\s*{p['mean_best_iou']:.3f} \|",
            t,
        ), bucket
    assert "train with: " + " ".join(artifact(search)["proposed"]["overrides"]) + " ```" in t


def test_results_md_quotes_results_json():
    """Every summary row of RESULTS.md: ours and torchvision ms (thousands separated), the ratio."""
    t = text(RESULTS)
    for r in artifact(BENCH)["rows"]:
        ours = "—" if r["ours_ms"] is None else f"{r['ours_ms']:,.0f}"
        tv = "—" if r["torchvision_ms"] is None else f"{r['torchvision_ms']:,.0f}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        assert f"| {r['name']} | {ours} | {tv} | {ratio} |" in t, r["name"]
    for row in artifact(BENCH)["ablation"]["rows"]:
        assert f"| {row['variant']} | {row['ms']:,.0f} | {row['vs_plain']:.3f} | {row['vs_torchvision']:.3f} |" in t
    for c in artifact(BENCH)["breakdown"]["conv_throughput"]:
        assert f"| {c['gflops_per_s']:.1f} |" in t


def test_each_document_ends_with_its_sources():
    for doc in (README, RESULTS, EXPERIMENTS):
        assert "## Where the figures come from" in (ROOT / doc).read_text(), doc


# focal_power/mini while it runs: the runs experiments/README.md quotes, row -> the config hashes
# of seeds 0, 1, ... (`retinanet experiment focal_power --scale mini --dry-run` lists them;
# tests/tools/test_experiments.py checks them against the table).
FOCAL_RUNS = {
    "FL γ=2 α=.25": ["7ca0e766607f", "767ff7bd72de", "a06ff1983688", "52f02cf831ec", "62862a595bee", "ba72587e7f35"],
    "CE α=.10": ["4ec39641ce53", "e2eed6609915"],
    "CE α=.25": ["75b4e0e6602d", "989c385d5f2b"],
    "CE α=.50": ["2e9207a75e82", "b30a8d1e5862"],
    "CE α=.75": ["e6fdc66aab2f", "12cce437d17e", "e45a21b8da0f", "d1676d287723", "3f157b814571", "d168a8bbb9c6"],
    "CE α=.90": ["7e787d88af92", "9dedc8605429"],
    "CE α=.99": ["7dcccf4778dc", "957576c3a2db", "e78a216fd8f2", "f24046aa95e1"],
    "CE α=.999": ["66d80f270dec", "db8fcafded1c"],
    "FL γ=0.1 α=.75": ["ba465308b807", "85113bccc6d0", "5db6c16be5c9", "0ed9b046947f", "140a688cb08a", "670e175ca934"],
    "FL γ=0.2 α=.75": ["bf0aa74c4f0e", "50bef7bf9e2a", "8d5ad7689dea", "b15861b3a1eb", "03ebf6480906"],
    "FL γ=0.5 α=.50": ["17a523abd858", "a1a54f80ed03", "21f743d337d7", "8b849849195b", "cad2a37b6098"],
    "FL γ=1 α=.25": ["4c08679df7d7", "a252101fadba", "747249434725", "415aa459fd60", "c5c515ec7cde"],
    "FL γ=5 α=.25": ["9f25fa7314e7", "842c01f70dff", "61870484aedd", "fff467d6fcc9", "ee6ff92e04d4"],
}
FOCAL_CELLS = {
    "FL γ=2 α=.25": "FL γ = 2, α = .25",
    "CE α=.10": "CE α = .10",
    "CE α=.25": "CE α = .25",
    "CE α=.50": "CE α = .50",
    "CE α=.75": "CE α = .75 (= FL γ = 0)",
    "CE α=.90": "CE α = .90",
    "CE α=.99": "CE α = .99",
    "CE α=.999": "CE α = .999",
    "FL γ=0.1 α=.75": "FL γ = 0.1, α = .75",
    "FL γ=0.2 α=.75": "FL γ = 0.2, α = .75",
    "FL γ=0.5 α=.50": "FL γ = 0.5, α = .50",
    "FL γ=1 α=.25": "FL γ = 1, α = .25",
    "FL γ=5 α=.25": "FL γ = 5, α = .25",
}
# The rows that stayed at the prior (AP 0 on every seed) and the quoted class scores of seed 0.
FOCAL_AT_PRIOR = ["CE α=.10", "CE α=.25", "CE α=.50", "CE α=.75", "CE α=.90"]
FOCAL_AT_PRIOR += ["FL γ=0.1 α=.75", "FL γ=0.2 α=.75", "FL γ=0.5 α=.50", "FL γ=1 α=.25"]
FOCAL_SCORES = "docs/focal_power/{}_seed0_scores.json"
FOCAL_SCORED = {
    "CE α=.75": "ce_alpha75",
    "FL γ=1 α=.25": "fl_gamma1",
    "FL γ=2 α=.25": "fl_gamma2",
    "FL γ=5 α=.25": "fl_gamma5",
    "CE α=.99": "ce_alpha99",
    "CE α=.999": "ce_alpha999",
}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
T975 |= {9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120}
T975 |= {17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064}
T975 |= {25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045}


def focal_results(row: str) -> list[dict]:
    return [artifact(f"experiments/runs/focal_power_mini/{h}/result.json") for h in FOCAL_RUNS[row]]


def focal_aps(row: str) -> list[float]:
    return [r["metrics"]["AP"] for r in focal_results(row)]


def ci95(values: list[float]) -> float:
    return T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5


def focal_table() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "experiments/tables/focal_power.yaml").read_text())


def prior_ratio(overrides: list[str], neg_per_pos: float, prior: float = 0.01) -> float:
    """§3.3 at initialization (every output at p = π): the negatives' summed |dL/dx| over the
    positives', from appendix B by hand: a negative's (1 - α) p^γ (p - γ (1 - p) log(1 - p)),
    a positive's α (1 - p)^γ (1 - p - γ p log p); CE is γ = 0."""
    o = dict(x.split("=", 1) for x in overrides)
    a, g = float(o["model.focal_alpha"]), float(o.get("model.focal_gamma", 0.0))
    if o["model.cls_loss"] == "ce":
        g = 0.0
    p = prior
    neg = (1 - a) * p**g * (p - g * (1 - p) * math.log(1 - p))
    pos = a * (1 - p) ** g * (1 - p - g * p * math.log(p))
    return neg_per_pos * neg / pos


def ratio_cell(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def paired(a: str, b: str) -> list[float]:
    return [x - y for x, y in zip(focal_aps(a), focal_aps(b))]


def test_focal_power_progress():
    t = text(EXPERIMENTS)
    table = focal_table()
    rows = {r["name"]: r for r in table["rows"]}
    im = artifact("docs/focal_power/anchors.json")["imbalance"]["negative_pairs_per_positive_pair"]
    assert set(FOCAL_CELLS) == set(FOCAL_RUNS) == set(rows)
    for row, cell in FOCAL_CELLS.items():
        aps = focal_aps(row)
        spread = "" if max(aps) == min(aps) else f" ± {ci95(aps):.1f}"
        seeds = ", ".join(f"{a:.1f}" for a in aps)
        ratio = ratio_cell(prior_ratio(rows[row]["overrides"], im))
        line = f"| {cell} | {rows[row]['paper']['AP']:.1f} | {ratio} | {len(aps)} | {seeds} | "
        line += f"{statistics.fmean(aps):.1f}{spread} |"
        assert line in t, line
    # which rows stay at the prior: the ratio at initialization separates them
    stuck = [r for row in FOCAL_AT_PRIOR for r in focal_results(row)]
    assert all(r["metrics"]["AP"] == 0.0 and not r["diverged"] for r in stuck)
    learned = [row for row in FOCAL_RUNS if row not in FOCAL_AT_PRIOR]
    assert all(a > 0 for row in learned for a in focal_aps(row))
    lowest_stuck = min(prior_ratio(rows[r]["overrides"], im) for r in FOCAL_AT_PRIOR)
    highest_learned = max(prior_ratio(rows[r]["overrides"], im) for r in learned)
    assert highest_learned < lowest_stuck
    assert f"AP 0 in all {len(stuck)} runs" in t
    fl, ce = (prior_ratio(rows[r]["overrides"], im) for r in ("FL γ=2 α=.25", "CE α=.25"))
    assert f"at the prior is 1/{round(ce / fl, -2):,.0f} of CE's at the same α" in t
    untested = prior_ratio(["model.cls_loss=focal", "model.focal_gamma=1", "model.focal_alpha=0.75"], im)
    assert f"(FL γ = 1 with α = .75: {ratio_cell(untested)}x, so predicted to learn)" in t
    assert f"by {ratio_cell(lowest_stuck)}x or more" in t and f"at {ratio_cell(highest_learned)}x or less" in t
    for b, words in (
        ("CE α=.99", "against the best CE (α = .99)"),
        ("CE α=.75", "against γ = 0"),
        ("FL γ=5 α=.25", "against γ = 5"),
    ):
        d = paired("FL γ=2 α=.25", b)
        quoted = f"{words}: {statistics.fmean(d):+.1f} ± {ci95(d):.1f} AP over {len(d)} seeds"
        assert quoted in t, quoted
    d = paired("FL γ=2 α=.25", "CE α=.99")
    assert "The per-seed differences are " + ", ".join(f"{x:+.1f}" for x in d) + "." in t
    assert min(d) > 0 and "and is behind on every seed so far" in t
    sd = statistics.stdev(d)
    needed = next(n for n in range(2, 31) if T975[n - 1] * sd / n**0.5 <= 1.5)
    assert f"standard deviation ({sd:.1f} AP)" in t and f"reaches ±1.5 AP at about {needed} seeds" in t
    d0 = paired("FL γ=2 α=.25", "CE α=.75")
    assert f"(a half-width of {ci95(d0):.2f}, just above the target)" in t and ci95(d0) > 1.5
    means = {row: statistics.fmean(focal_aps(row)) for row in FOCAL_RUNS}
    assert f"FL gets {means['FL γ=2 α=.25']:.1f} AP, CE {means['CE α=.999']:.1f}." in t
    assert f"and the row gets {means['FL γ=5 α=.25']:.1f} AP" in t
    runs = [r for row in FOCAL_RUNS for r in focal_results(row)]
    planned = sum(r["seeds"]["mini"] for r in table["rows"])
    hours = sum(r["train_seconds"] for r in runs) / 3600
    extra = len(runs) - planned
    head = f"**So far** ({len(runs)} runs: the {planned} planned and {extra} of the seeds the power rule adds"
    assert f"{head}; {hours:.1f} hours" in t, head
    changes = [100 * r["last_fifth_loss_change"] for r in runs]
    assert f"changes by {max(changes):+.2f} % to {min(changes):+.2f} % in the {len(runs)} runs so far" in t


def test_focal_power_setting_and_scores():
    t = text(EXPERIMENTS)
    im = artifact("docs/focal_power/anchors.json")["imbalance"]
    assert f"**{im['negative_pairs_per_positive_pair']:,.0f} negative (anchor, class) pairs per positive pair**" in t
    assert (
        f"images: per image {im['anchors_per_image']:,.0f} anchors, {im['objects_per_image']:.1f} objects, "
        f"{im['positive_per_image']:.1f} positive anchors, {im['positive_per_object']:.1f} per object, "
        f"{im['ignored_per_image']:.1f} ignored; {im['num_classes']} classes)"
    ) in t
    ce = artifact(FOCAL_SCORES.format("ce_alpha75"))["scores"]
    assert f"has median {ce['positives_p_median']:.3f} (π = 0.01), {ce['positives_p_q90']:.3f} at" in t
    assert f"any background anchor is {ce['negatives_max_p']:.3f}: nothing" in t and ce["positives_above_thresh"] == 0
    for row, name in FOCAL_SCORED.items():
        s = artifact(FOCAL_SCORES.format(name))["scores"]
        ap = focal_aps(row)[0]
        line = (
            f"| {FOCAL_CELLS[row]} | {ap:.1f} | {s['positives_p_median']:.3f} | "
            f"{100 * s['positives_above_thresh']:.0f} % | {s['negatives_above_thresh_per_positive']:,.1f} |"
        )
        assert line in t, line
    ce999, fl2, fl5 = (artifact(FOCAL_SCORES.format(n))["scores"] for n in ("ce_alpha999", "fl_gamma2", "fl_gamma5"))
    assert f"its positives reach a median p of {ce999['positives_p_median']:.2f}, but" in t
    assert f"{ce999['negatives_above_thresh_per_positive']:,.0f} background outputs per positive are above" in t
    assert f"median of {fl2['positives_p_median']:.2f}, and its background stays lower" in t
    assert f"({fl2['negatives_above_thresh_per_positive']:,.0f} per positive)" in t
    assert f"({fl5['negatives_above_thresh_per_positive']:,.0f} per positive above the threshold)" in t

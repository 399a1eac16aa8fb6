"""`retinanet benchmark`: its command line, the run of the selected sections, --update merging,
and the files it writes (OUT/results.json, OUT/results.md)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ...utils.machine import git_commit
from .ap import ap
from .breakdown import breakdown
from .common import DEFAULT_AP_WEIGHTS, SECTIONS, TARGETS, dtype_name
from .components import assign, focal, postprocess
from .context import Context
from .inference import ablation, inference
from .loader import loader
from .memory import memory_child
from .report import render_markdown, summary_table
from .timing import machine_info
from .training import train

# In SECTIONS order, which run_benchmark keeps: the ablation picks the fast mode used after it.
SECTION_RUNNERS: dict[str, Callable[[Context], None]] = {
    "ablation": ablation,
    "inference": inference,
    "train": train,
    "focal": focal,
    "assign": assign,
    "postprocess": postprocess,
    "breakdown": breakdown,
    "ap": ap,
    "loader": loader,
}
assert tuple(SECTION_RUNNERS) == SECTIONS


_EXAMPLES = (
    "examples:\n"
    "  retinanet benchmark --out benchmarks/run                 # everything (tens of minutes on 2 CPU cores)\n"
    "  retinanet benchmark --quick --out /tmp/bench             # tiny sizes: a smoke run\n"
    "  retinanet benchmark --only focal,assign,postprocess\n"
    "  retinanet benchmark --device cuda --dtype fp16"
)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retinanet benchmark",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="This library against torchvision's retinanet_resnet50_fpn, same weights and inputs, same run.",
        epilog="sections: " + ", ".join(SECTIONS) + "\n" + _EXAMPLES,
    )
    add = p.add_argument
    add("--sizes", type=_ints, default=[512, 800], help="inference sizes in px (square images), default 512,800")
    add("--batch-sizes", type=_ints, default=[1, 4], help="inference batch sizes, default 1,4")
    add("--repeats", type=int, default=5, help="timed runs per case (median reported), default 5")
    add("--warmup", type=int, default=1, help="untimed runs per case first, default 1")
    add("--device", default="cpu", help="cpu (default) or cuda")
    add("--dtype", choices=("bf16", "fp16"), default="bf16", help="the low precision to try (fast mode, training)")
    add(
        "--fast-mode",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="fast inference mode: auto = the fastest variant of the ablation keeping >= 99%% of detections",
    )
    add(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also try torch.compile (default: on, off with --quick)",
    )
    add("--out", default="outputs/benchmark", help="folder for results.json and results.md")
    add("--only", default=",".join(SECTIONS), help="comma-separated sections (default all): " + ",".join(SECTIONS))
    add("--quick", action="store_true", help="tiny sizes and few repeats: a smoke run of every code path")
    add("--threads", type=int, help="torch threads (default: torch's choice)")
    add("--seed", type=int, default=0)
    add("--train-size", type=int, default=512)
    add("--train-batch", type=int, default=2)
    add("--ablation-size", type=int, help="default: the first of --sizes")
    add("--focal-rows", type=int, default=200_000)
    add("--assign-size", type=int, default=512, help="image size of the anchors for assign and postprocess")
    add("--assign-batch", type=int, default=8)
    add("--postprocess-batch", type=int, default=8)
    add(
        "--max-run-seconds",
        type=float,
        default=120.0,
        help="skip a case whose single run would take longer (estimated from conv FLOPs and measured throughput)",
    )
    add("--slow-seconds", type=float, default=60.0, help="time a case slower than this at most twice")
    add("--no-memory", action="store_true", help="skip the training peak-memory measurements")
    add(
        "--profile-runs",
        type=int,
        default=3,
        help="profiled runs per model in the breakdown (median kept), default 3",
    )
    add(
        "--update",
        metavar="RESULTS_JSON",
        help="re-measure only the --only sections and merge them into this earlier results.json (same "
        "machine): its other rows stay, the re-run ones are replaced, the update is listed in the report",
    )
    add("--ap-weights", default=DEFAULT_AP_WEIGHTS, help="trained weights for the ap section (default: the demo's)")
    add("--memory-child", help=argparse.SUPPRESS)
    return p


def _apply_quick(args: argparse.Namespace) -> None:
    args.sizes, args.batch_sizes = [128], [1]
    args.repeats, args.warmup = min(args.repeats, 2), 1
    args.train_size, args.train_batch = 128, 1
    args.focal_rows = 20_000
    args.assign_size, args.assign_batch, args.postprocess_batch = 128, 2, 2
    args.ablation_size = 128
    args.max_run_seconds = min(args.max_run_seconds, 30.0)
    args.profile_runs = 1
    if args.compile is None:
        args.compile = False


def run_benchmark(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict:
    """Run the selected sections; write OUT/results.json and OUT/results.md; return the results."""
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.quick:
        _apply_quick(args)
    if args.compile is None:
        args.compile = True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        torch.backends.cudnn.benchmark = True  # both models alike
    base = _load_update_base(args.update, device, sections) if args.update else None
    ctx = Context(args)
    if base is not None and "ablation" not in sections and (base.get("ablation") or {}).get("fast_mode"):
        ctx.fast_mode = _restore_mode(base["ablation"]["fast_mode"])  # the mode the kept rows measured
    start = time.perf_counter()
    ctx.results["machine"] = machine_info(device)
    ctx.results["config"] = {k: v for k, v in vars(args).items() if k != "memory_child"}
    ctx.results["command"] = "retinanet benchmark " + " ".join(getattr(args, "argv", []) or [])
    ctx.results["targets"] = TARGETS
    for section, run_section in SECTION_RUNNERS.items():
        if section not in sections:
            continue
        t0 = time.perf_counter()
        echo(f"[benchmark] {section} ...")
        run_section(ctx)
        ctx.results.setdefault("section_seconds", {})[section] = time.perf_counter() - t0
        echo(f"[benchmark] {section} done in {time.perf_counter() - t0:.0f} s")
    ctx.results["rows"] = ctx.rows
    ctx.results["elapsed_s"] = time.perf_counter() - start
    results = _merge_update(base, ctx.results, sections) if base is not None else ctx.results
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    (out / "results.md").write_text(render_markdown(results))
    return results


def _load_update_base(path: str, device: torch.device, sections: list[str]) -> dict:
    """The earlier results.json that --update re-measures some sections of; same machine only."""
    try:
        base = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--update {path}: cannot read an earlier results.json ({e})") from e
    if not isinstance(base, dict) or "rows" not in base or "machine" not in base:
        raise ValueError(f"--update {path}: not a results.json of `retinanet benchmark` (no rows or machine)")
    now, then = machine_info(device), base["machine"]
    differ = [k for k in ("cpu", "usable_cpus", "torch", "torchvision", "gpu") if now.get(k) != then.get(k)]
    if differ:
        what = ", ".join(f"{k}: {then.get(k)} now {now.get(k)}" for k in differ)
        raise ValueError(
            f"--update {path}: measured on another machine or software ({what}); "
            "ratios from different machines do not belong in one report: run the whole benchmark"
        )
    return base


def _restore_mode(mode: dict) -> dict:
    dtype = mode.get("dtype")
    return {**mode, "dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}


def _merge_update(base: dict, new: dict, sections: list[str]) -> dict:
    """`base` with the rows and section results of `new` in place of its own for `sections`."""
    merged = dict(base)
    for k, v in new.items():
        if k not in ("machine", "config", "command", "elapsed_s", "targets", "rows", "section_seconds"):
            merged[k] = v
    kept = [r for r in base["rows"] if r["section"] not in sections]
    # A stable sort: the order of the rows inside a section is kept.
    merged["rows"] = sorted(kept + new["rows"], key=lambda r: SECTIONS.index(r["section"]))
    merged["section_seconds"] = {**base.get("section_seconds", {}), **new.get("section_seconds", {})}
    merged["targets"] = new["targets"]
    update = {
        "command": new["command"],
        "sections": sections,
        "elapsed_s": new["elapsed_s"],
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "config": new["config"],
    }
    merged["updates"] = list(base.get("updates", [])) + [update]
    return merged


def _json_default(o):
    if isinstance(o, torch.dtype):
        return dtype_name(o)
    if isinstance(o, (Path, torch.device)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, usage errors
        return e.code if isinstance(e.code, int) else 2
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    args.argv = argv
    try:
        results = run_benchmark(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(summary_table(results["rows"]))
    print(f"\nresults: {Path(args.out) / 'results.md'}, {Path(args.out) / 'results.json'}")
    return 0

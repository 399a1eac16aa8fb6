"""The `train` section: one SGD training step (forward, backward, step), fp32 and low precision
(autocast), with the peak memory of each variant and (CUDA) its host-device synchronisations."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ...weights.torchvision import from_torchvision
from .common import TARGETS, dtype_name
from .context import Context
from .flops import conv_flops
from .memory import memory_child
from .models import random_images, random_targets, torchvision_model, train_step, training_setup
from .timing import Case, measure, run_counts, summary_row


def training_variants(ctx: Context) -> dict[str, tuple[str, dict | None, torch.dtype | None]]:
    """name -> (model kind, optimize_for_training options or None, autocast dtype)."""
    lp = ctx.args.dtype
    return {
        "torchvision fp32": ("torchvision", None, None),
        "ours fp32 plain": ("ours", None, None),  # as `retinanet train` runs it
        # channels_last None: the device's default (on for CUDA, off for CPU training)
        "ours fp32 optimized": ("ours", {"absorb_bn": True, "channels_last": None}, None),
        f"torchvision {lp}": ("torchvision", None, ctx.lowp),
        # low precision always channels_last: NCHW bf16/fp16 is oneDNN's slowest CPU path
        f"ours {lp}": ("ours", {"absorb_bn": True, "channels_last": True}, ctx.lowp),
    }


def train(ctx: Context) -> None:
    a = ctx.args
    size, batch = a.train_size, a.train_batch
    variants = training_variants(ctx)
    images = random_images(batch, size, ctx.device, a.seed + 7)
    targets = random_targets(batch, 5, size, ctx.device, a.seed + 8)
    steps, warm_losses = {}, {}
    state = torchvision_model(a.seed, size).state_dict()
    cases, estimates, flops = [], {}, []

    def train_flops() -> float:  # the same convolutions in both models; counted once
        if not flops:
            model = from_torchvision(state, min_size=size, max_size=size).train()
            flops.append(conv_flops(model, batch, size, training=True))
        return flops[0]

    for name, (kind, options, dtype) in variants.items():
        model, opt, scaler = training_setup(kind, options, state, size, ctx.device, dtype)
        step = functools.partial(train_step, model, opt, images, targets, ctx.device, dtype, scaler)
        steps[name] = step
        estimates[name] = ctx.estimate_s(train_flops, dtype, channels_last=bool(options and options["channels_last"]))
        cases.append(Case(name, step, estimates[name]))
    m = measure(cases, a, ctx.device)
    for name, out in m.outputs.items():  # the losses of each variant's (last) warm-up step
        warm_losses[name] = {k: float(v) for k, v in out.items()}
    lp = a.dtype
    mem = training_memory(ctx, variants, estimates) if not a.no_memory else {}
    tag = f"{size} px, batch {batch}"

    def notes(*names, extra=()):
        parts = [
            f"{n}: {mem[n]['step_peak_mb']:.0f} MB"
            for n in names
            if n in mem and (mem[n] or {}).get("step_peak_mb") is not None
        ]
        return "; ".join(filter(None, [*extra, ("peak memory of the step " + ", ".join(parts)) if parts else ""]))

    # The target row: the library's faster fp32 configuration in this run (both are shown).
    plain_ms, opt_ms = m.median_ms("ours fp32 plain"), m.median_ms("ours fp32 optimized")
    best = "ours fp32 optimized" if opt_ms and (not plain_ms or opt_ms < plain_ms) else "ours fp32 plain"
    parity = loss_parity(warm_losses.get("torchvision fp32"), warm_losses.get(best))
    best_notes = [f"ours: {best.split()[-1]} (the faster of the two rows below)", f"losses equal to {parity}"]
    ctx.rows.append(
        summary_row(
            "train",
            f"training step fp32, {tag}",
            m,
            best,
            "torchvision fp32",
            TARGETS["train_fp32"],
            notes=notes(best, "torchvision fp32", extra=best_notes),
            memory={k: mem.get(k) for k in (best, "torchvision fp32")},
            runs=run_counts(m),
        )
    )
    ctx.rows.append(
        summary_row(
            "train",
            f"training step fp32, ours plain (as retinanet train), {tag}",
            m,
            "ours fp32 plain",
            "torchvision fp32",
            notes=notes("ours fp32 plain"),
            runs=run_counts(m),
        )
    )
    opt_desc = "frozen BN in the convs" + (" + channels_last" if ctx.device.type == "cuda" else "")
    ctx.rows.append(
        summary_row(
            "train",
            f"training step fp32, ours optimize_for_training ({opt_desc}), {tag}",
            m,
            "ours fp32 optimized",
            "torchvision fp32",
            notes=notes("ours fp32 optimized"),
            runs=run_counts(m),
        )
    )
    lowp_notes = ["ratio to torchvision in the same precision; ours: frozen BN in the convs + channels_last"]
    ctx.rows.append(
        summary_row(
            "train",
            f"training step {lp} autocast, {tag}",
            m,
            f"ours {lp}",
            f"torchvision {lp}",
            TARGETS["train_lowp"],
            notes=notes(f"ours {lp}", f"torchvision {lp}", extra=lowp_notes),
            memory={k: mem.get(k) for k in (f"ours {lp}", f"torchvision {lp}")},
            runs=run_counts(m),
        )
    )
    ctx.rows.append(
        summary_row(
            "train",
            f"training step ours {lp} vs torchvision fp32, {tag}",
            m,
            f"ours {lp}",
            "torchvision fp32",
            notes="what low precision buys against the fp32 baseline",
            runs=run_counts(m),
        )
    )
    ctx.results["train"] = {
        "size": size,
        "batch": batch,
        "times_s": m.times,
        "first_run_s": m.first_s,
        "skipped": m.skipped,
        "warmup_losses": warm_losses,
        "memory": mem,
        "fp32_target_case": best,
    }
    if ctx.device.type == "cuda":
        names = ("ours fp32 plain", "ours fp32 optimized", f"ours {lp}", "torchvision fp32")
        ctx.results["sync_check"] = {name: sync_points(steps[name]) for name in names}


def training_memory(ctx: Context, variants: dict, estimates: dict[str, float | None]) -> dict[str, dict]:
    """Peak memory of one training step per variant. CUDA: peak allocation in this process.
    CPU: a fresh process per variant runs two steps and reports its peak RSS (ru_maxrss),
    and the peak over its RSS before the first step (the step's own memory)."""
    a = ctx.args
    out = {}
    for name, (kind, options, dtype) in variants.items():
        spec = {
            "kind": kind,
            "options": options,
            "dtype": dtype_name(dtype),
            "size": a.train_size,
            "batch": a.train_batch,
            "device": a.device,
            "seed": a.seed,
            "threads": torch.get_num_threads(),
        }
        est = estimates.get(name)
        if est is not None and 2 * est > a.max_run_seconds:
            out[name] = {"skipped": f"not run: two steps take at least {2 * est:.0f} s"}
            continue
        if ctx.device.type == "cuda":
            out[name] = memory_child(spec)
            continue
        proc = subprocess.run(
            [sys.executable, "-m", "retinanet.tools.benchmark", "--memory-child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=max(600, 10 * a.max_run_seconds),
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]  # the exception line
        ok = proc.returncode == 0 and lines
        out[name] = json.loads(lines[-1]) if ok else {"error": f"exit {proc.returncode}: {last[:300]}"}
    return out


def loss_parity(tv_losses: dict | None, ours: dict | None) -> str:
    if not tv_losses or not ours:
        return "n/a"
    rel = max(
        abs(ours["cls"] - tv_losses["classification"]) / abs(tv_losses["classification"]),
        abs(ours["box"] - tv_losses["bbox_regression"]) / abs(tv_losses["bbox_regression"]),
    )
    return f"rel. {rel:.1e}"


def sync_points(step: Callable[[], Any]) -> dict:
    """Host-device synchronisations in one training step (CUDA): torch.cuda.set_sync_debug_mode
    turns each into a warning; they are counted and their Python locations listed."""
    step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    places = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})
    return {"count": sum("synchroniz" in str(w.message) for w in caught), "where": places}

"""Timing primitives of `retinanet benchmark`: cases measured in alternating order, the summary
rows built from them, and the machine a run is on."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch
import torchvision

from ...utils.machine import cpu_name, cpuinfo, device_name

# The instruction-set extensions that decide which dtypes have native dot products on a CPU.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx_vnni")


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = cpuinfo()
    flags = set(cpu.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    info = {
        "cpu": cpu_name(),
        "cpu_family_model": f"family {cpu['cpu family']} model {cpu['model']}" if "cpu family" in cpu else None,
        "cpu_isa": [f for f in ISA_FLAGS if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = device_name(device)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
    return info


@dataclasses.dataclass
class Case:
    name: str
    fn: Callable[[], Any]
    # A lower bound of one run's seconds (conv FLOPs / measured conv throughput): a case that
    # cannot finish within --max-run-seconds is reported as not run, with the estimate.
    estimate_s: float | None = None
    extra_warmup: int = 0  # e.g. torch.compile: the first call compiles


@dataclasses.dataclass
class Measurement:
    times: dict[str, list[float]]
    outputs: dict[str, Any]
    first_s: dict[str, float]
    skipped: dict[str, str]

    def median_ms(self, name: str) -> float | None:
        t = self.times.get(name)
        return statistics.median(t) * 1e3 if t else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def measure(cases: Sequence[Case], args: argparse.Namespace, device: torch.device) -> Measurement:
    """Warm-up runs (excluded), then `args.repeats` rounds in which every case runs once, the
    order reversed every other round. A case whose last warm-up took longer than
    --slow-seconds is timed at most twice (its median is then of 1-2 runs; the JSON keeps all)."""
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    outputs, first, skipped, last_warm = {}, {}, {}, {}
    active = []
    for c in cases:
        if c.estimate_s is not None and c.estimate_s > args.max_run_seconds:
            skipped[c.name] = (
                f"not run: at least {c.estimate_s:.0f} s per run (its conv FLOPs at this machine's measured "
                f"conv throughput), over --max-run-seconds {args.max_run_seconds:g}"
            )
            times.pop(c.name)
            continue
        active.append(c)
    for c in active:
        for i in range(max(1, args.warmup) + c.extra_warmup):
            t, out = timed(c.fn, device)
            if i == 0:
                first[c.name] = t
            last_warm[c.name] = t
        outputs[c.name] = out
    for r in range(args.repeats):
        for c in active if r % 2 == 0 else active[::-1]:
            if last_warm[c.name] > args.slow_seconds and len(times[c.name]) >= 2:
                continue
            times[c.name].append(timed(c.fn, device)[0])
    return Measurement(times, outputs, first, skipped)


def run_counts(m: Measurement) -> dict[str, int]:
    return {k: len(v) for k, v in m.times.items()}


def summary_row(
    section: str,
    name: str,
    m: Measurement | None,
    ours: str | None,
    theirs: str | None,
    target: float | None = None,
    extra_ok: bool | None = None,
    notes: str = "",
    ours_ms: float | None = None,
    tv_ms: float | None = None,
    **details,
) -> dict:
    """A summary row: medians, ratio ours/torchvision, target and whether it is met (and
    `extra_ok`, e.g. the detection agreement, when given)."""
    if m is not None:
        ours_ms = m.median_ms(ours) if ours else None
        tv_ms = m.median_ms(theirs) if theirs else None
        for case in (ours, theirs):
            if case in m.skipped:
                notes = "; ".join(filter(None, [notes, f"{case}: {m.skipped[case]}"]))
    ratio = ours_ms / tv_ms if ours_ms and tv_ms else None
    met = None
    if target is not None and ratio is not None:
        met = ratio <= target and (extra_ok is None or extra_ok)
    return {
        "section": section,
        "name": name,
        "ours_case": ours,
        "torchvision_case": theirs,
        "ours_ms": ours_ms,
        "torchvision_ms": tv_ms,
        "ratio": ratio,
        "target": target,
        "met": met,
        "notes": notes,
        "details": details,
    }

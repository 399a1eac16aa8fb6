"""torch.profiler helpers of `retinanet benchmark`: where a run's time goes, convolutions apart."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from .timing import sync


def profile(fn: Callable[[], Any], device: torch.device) -> dict:
    """Self time of convolution kernels (forward and backward) against the total, one run."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with torch_profile(activities=acts) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    conv = sum(getattr(e, attr) for e in events if "conv" in e.key.lower())
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:8]
    return {
        "total_ms": total / 1e3,
        "conv_ms": conv / 1e3,
        "conv_share": conv / total if total else None,
        "wall_s": wall,
        "top_ops": [(e.key, getattr(e, attr) / 1e3) for e in top],
    }


def profile_alternating(fns: dict[str, Callable[[], Any]], device: torch.device, runs: int) -> dict[str, dict]:
    """`runs` profiled runs of each function, alternating between them (so that a slow spell of
    the machine hits all alike); per function the run of median total time, with the spread of
    the totals. One run each was too noisy to bound a ratio near 0.9 (a profile once put ours
    above torchvision while the timed medians put it 10 % below)."""
    profs: dict[str, list[dict]] = {name: [] for name in fns}
    for _ in range(max(1, runs)):
        for name, fn in fns.items():
            profs[name].append(profile(fn, device))
    out = {}
    for name, ps in profs.items():
        ps = sorted(ps, key=lambda p: p["total_ms"])
        out[name] = {**ps[len(ps) // 2], "runs": len(ps), "total_ms_range": [ps[0]["total_ms"], ps[-1]["total_ms"]]}
    return out


def profile_pair(ours: Callable[[], Any], theirs: Callable[[], Any], device: torch.device) -> dict:
    """Where each side's time goes (one profiled run each, after the timed ones): the ops that
    bound a ratio, for the report."""
    return {"ours": profile(ours, device), "torchvision": profile(theirs, device)}

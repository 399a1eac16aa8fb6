"""Peak memory of one training step (`--memory-child`): run in a fresh process per variant on
CPU, so that the peak RSS is the step's alone, and in-process on CUDA."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

from .models import random_images, random_targets, torchvision_model, train_step, training_setup


def memory_child(spec: dict) -> dict:
    """One variant's training memory (run in a fresh process on CPU, in-process on CUDA)."""
    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"]) if spec["dtype"] else None  # "bfloat16", "float16"
    state = torchvision_model(spec["seed"], spec["size"]).state_dict()
    model, opt, scaler = training_setup(spec["kind"], spec["options"], state, spec["size"], device, dtype)
    images = random_images(spec["batch"], spec["size"], device, spec["seed"] + 7)
    targets = random_targets(spec["batch"], 5, spec["size"], device, spec["seed"] + 8)
    if device.type == "cuda":
        train_step(model, opt, images, targets, device, dtype, scaler)  # momentum buffers exist from here on
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, opt, images, targets, device, dtype, scaler)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del model, opt
        return {
            "peak_mb": peak / 2**20,
            "step_peak_mb": (peak - base) / 2**20,
            "how": "torch.cuda.max_memory_allocated",
        }
    train_step(model, opt, images, targets, device, dtype, scaler)  # momentum buffers, oneDNN caches, compiled loss
    release_free_heap()  # what the first step freed, so that RSS is back to what is live
    before = proc_status_mb("VmRSS")
    reset = reset_peak_rss()
    train_step(model, opt, images, targets, device, dtype, scaler)
    peak = proc_status_mb("VmHWM")
    if peak is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS), the process peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    if reset:
        how = (
            "peak RSS of a fresh process during its second step (VmHWM, reset before the step), minus its RSS then "
            "(after malloc_trim)"
        )
    else:
        how = "peak RSS of a fresh process over two steps (VmHWM), minus its RSS before the second"
    return {
        "peak_rss_mb": peak,
        "rss_before_mb": before,
        "step_peak_mb": peak - before if before is not None else None,
        "how": how,
    }


def proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux), in MB. VmHWM is the peak RSS of this process
    image; unlike ru_maxrss it does not carry over the parent's RSS inherited through fork+exec."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return None


def release_free_heap() -> None:
    """glibc keeps freed memory in the process (RSS); malloc_trim hands it back to the system."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: "5" into /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False

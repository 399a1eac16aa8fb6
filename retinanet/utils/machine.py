"""What machine a measurement ran on, and which commit of the code: recorded beside every
benchmark and experiment result so that numbers can be compared only where they are comparable."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from functools import cache
from pathlib import Path

import torch

from .paths import SOURCE_ROOT


@cache
def cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} where there is none)."""
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                info.setdefault(key, value)
    return info


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13", ...), or the platform's processor string."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A GPU's name, or the CPU's with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def git_commit(root: str | Path = SOURCE_ROOT) -> str:
    """The commit of the code in `root` ("+dirty" when tracked files have changes), or "unknown"
    (not a git checkout, or no git)."""
    try:
        run = dict(cwd=root, capture_output=True, text=True)
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], check=True, **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


__all__ = ["cpu_name", "cpuinfo", "device_name", "git_commit"]

"""Training checkpoints: written atomically, read back without executing code.

A checkpoint is `{"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config",
"class_names"}`; `model_final.pth` keeps "model", "config" and "class_names". Reading one, or any
other weights file, is `retinanet.weights.load_checkpoint` / `load_model`.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import Config, config_to_dict, save_config
from ..utils.io import atomic_open
from ..weights.loader import load_checkpoint
from .distributed import is_main


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (the previous one, if any, is kept)."""


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save through a temporary file in the same folder and a rename: a crash mid-write
    never leaves a truncated checkpoint behind, and a failed write (a full disk, a folder that
    cannot be written) removes its temporary file and raises CheckpointWriteError saying why."""
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        folder = Path(path).resolve().parent
        free = shutil.disk_usage(folder).free if folder.is_dir() else None
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e)
        why = "no space left on device" if full else f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        space = f"; {free / 2**20:.0f} MiB free in {folder}" if free is not None else ""
        raise CheckpointWriteError(
            f"could not write the checkpoint {path} ({why}{space}); the previous one is kept"
        ) from e


def label_entries(dataset) -> dict:
    """What a checkpoint keeps of the training set's labels: the name and the dataset's category
    id of each label, so that results files name and number classes as the dataset does."""
    return {
        "class_names": [str(n) for n in dataset.class_names],
        "label_to_category_id": [int(c) for c in dataset.label_to_cat_id],
    }


def save_training_state(path, model, optimizer, scheduler, scaler, it: int, cfg: Config, world: int, dataset) -> None:
    """Everything a killed run needs to resume bit-exact at iteration `it`, with the resolved
    config beside it and the labels of `dataset` (the training set). Collective: every process
    calls it (their RNG states are gathered)."""
    rng = torch.get_rng_state()
    if world > 1:  # every rank's RNG, so that a resumed run draws as the interrupted one would
        rng_all = [None] * world
        dist.all_gather_object(rng_all, rng)
    else:
        rng_all = [rng]
    if is_main():
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": it,
            "rng": rng_all,
            "config": config_to_dict(cfg),
            **label_entries(dataset),
        }
        atomic_save(state, path)
        save_config(cfg, Path(path).parent / "config.yaml")


def save_final(path, model, cfg: Config, dataset) -> None:
    """The trained weights with their config and the labels of `dataset` (`model_final.pth`)."""
    atomic_save({"model": model.state_dict(), "config": config_to_dict(cfg), **label_entries(dataset)}, path)


__all__ = [
    "CheckpointWriteError",
    "atomic_save",
    "label_entries",
    "load_checkpoint",
    "save_final",
    "save_training_state",
]

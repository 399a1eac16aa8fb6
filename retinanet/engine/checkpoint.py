"""Training checkpoints: written atomically, read back without executing code.

A checkpoint is `{"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config",
"class_names"}`; `model_final.pth` keeps "model", "config" and "class_names". Reading one, or any
other weights file, is `retinanet.weights.load_checkpoint` / `load_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import Config, config_to_dict, save_config
from ..utils.io import atomic_open
from ..weights.loader import load_checkpoint
from .distributed import is_main


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save through a temporary file in the same folder and a rename: a crash mid-write
    never leaves a truncated checkpoint behind."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_training_state(
    path, model, optimizer, scheduler, scaler, it: int, cfg: Config, world: int, class_names
) -> None:
    """Everything a killed run needs to resume bit-exact at iteration `it`, with the resolved
    config beside it. Collective: every process calls it (their RNG states are gathered)."""
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
            "class_names": list(class_names),
        }
        atomic_save(state, path)
        save_config(cfg, Path(path).parent / "config.yaml")


def save_final(path, model, cfg: Config, class_names) -> None:
    """The trained weights with their config and class names (`model_final.pth`)."""
    atomic_save({"model": model.state_dict(), "config": config_to_dict(cfg), "class_names": list(class_names)}, path)


__all__ = ["atomic_save", "load_checkpoint", "save_final", "save_training_state"]

"""Training checkpoints: written atomically, read back without executing code.

A checkpoint is `{"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config",
"class_names"}`; `model_final.pth` keeps "model", "config" and "class_names". Reading one, or any
other weights file, is `retinanet.weights.load_checkpoint` / `load_model`.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import Config, config_to_dict, save_config, scaled_lr
from ..utils.io import atomic_open
from ..weights.loader import config_from_dict, load_checkpoint
from .distributed import is_main

log = logging.getLogger("retinanet.engine")


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


def save_training_state(
    path, model, optimizer, scheduler, scaler, it: int, cfg: Config, world: int, dataset, progress=None
) -> None:
    """Everything a killed run needs to resume bit-exact at iteration `it`, with the resolved
    config beside it and the labels of `dataset` (the training set); `progress`: the run's
    best evaluation and early-stopping count. Collective: every process calls it (their RNG
    states are gathered)."""
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
            "progress": dict(progress or {}),
            **label_entries(dataset),
        }
        atomic_save(state, path)
        save_config(cfg, Path(path).parent / "config.yaml")


# Settings a resumed run may change: they are applied from the resume's iteration on (the LR
# schedule is recomputed from the new values). Any other train.* change is refused: batch_size
# and the run's seed decide which images each iteration sees, amp the scaler's state.
RESUMABLE_TRAIN_KEYS = (
    "base_lr",
    "base_batch_size",
    "momentum",
    "weight_decay",
    "max_iter",
    "lr_steps",
    "lr_gamma",
    "warmup_iters",
    "warmup_factor",
    "clip_grad_norm",
    "checkpoint_period",
    "eval_period",
    "save_best",
    "patience",
    "log_period",
    "max_nonfinite",
    "device",
    "deterministic",
)


class ResumeError(ValueError):
    """A checkpoint that a run cannot resume from (corrupt, weights only, another model or data
    stream); the message names the file and what to do instead."""


def restore_training_state(path, model, optimizer, scheduler, scaler, cfg: Config, rank: int) -> tuple[int, dict]:
    """Load a `save_training_state` checkpoint into the training objects; returns its iteration
    and the run's saved progress (best evaluation, early-stopping count).

    train.* settings changed since the checkpoint are applied when they are in
    RESUMABLE_TRAIN_KEYS (and logged), refused otherwise; a model of another shape is refused.
    The scheduler's state holds the base LRs it started with, so a changed base_lr is written
    back into it: the LR from here on is the new base LR times the schedule's factor."""
    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:  # corrupt, truncated, not ours
        raise ResumeError(f"{e}; delete it to start again, or use another output_dir") from None
    saved = ckpt.get("config")
    if not isinstance(saved, dict) or not all(k in ckpt for k in ("optimizer", "scheduler", "scaler", "iteration")):
        raise ResumeError(f"{path}: not a training checkpoint (weights only?): start a new run instead of --resume")
    old_cfg = config_from_dict(saved)
    old = old_cfg.train
    changed = {f"train.{f.name}": (getattr(old, f.name), getattr(cfg.train, f.name)) for f in dataclasses.fields(old)}
    changed["seed"] = (old_cfg.seed, cfg.seed)
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    refused = sorted(set(changed) - {f"train.{k}" for k in RESUMABLE_TRAIN_KEYS})
    if refused:
        what = ", ".join(f"{k} {changed[k][0]} -> {changed[k][1]}" for k in refused)
        raise ResumeError(f"{path}: cannot resume with {what}: start a new run (another output_dir) instead")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines()[:2])[:300]
        raise ResumeError(
            f"{path} holds a model of another shape than the config's ({first}): use another output_dir"
        ) from None
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    it = int(ckpt["iteration"])
    lr = scaled_lr(cfg.train)
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, (fn(it) for fn in scheduler.lr_lambdas)):
        group.update(initial_lr=lr, lr=lr * factor, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    if changed and is_main():
        log.info("resumed with changed %s", ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    rng = ckpt["rng"]
    torch.set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    progress = ckpt.get("progress")
    return it, dict(progress) if isinstance(progress, dict) else {}


def save_final(path, model, cfg: Config, dataset, **extra) -> None:
    """The trained weights with their config and the labels of `dataset` (`model_final.pth`,
    `model_best.pth` with `extra` entries such as the evaluation that made it the best)."""
    atomic_save({"model": model.state_dict(), "config": config_to_dict(cfg), **label_entries(dataset), **extra}, path)


__all__ = [
    "RESUMABLE_TRAIN_KEYS",
    "CheckpointWriteError",
    "ResumeError",
    "atomic_save",
    "label_entries",
    "load_checkpoint",
    "restore_training_state",
    "save_final",
    "save_training_state",
]

"""The training loop (Lin et al. 2017, §4 "Optimization"): one flat loop, no trainer hierarchy.

Distribution is torch.distributed's: run under `torchrun --nproc_per_node N -m retinanet train
...` and every process trains its share of the global batch inside DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, ConfigError, save_config, scaled_lr
from ..data.build import build_datasets
from ..data.common import DatasetError, collate_fn, worker_error_message
from ..data.samplers import SeededSamples, TrainingBatches, aspect_groups
from ..model.batchnorm import absorb_frozen_batchnorm
from ..model.build import build_model
from ..utils.io import atomic_write
from ..weights.loader import init_from_weights
from .checkpoint import restore_training_state, save_final, save_training_state
from .distributed import init_distributed, is_main, resolve_device
from .evaluate import autocast, eval_loader, evaluate, resolve_amp
from .metrics import format_ap_table
from .optim import SkippableSGD
from .progress import Progress

log = logging.getLogger("retinanet.engine")


def lr_factor(it: int, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float) -> float:
    """Linear warmup from warmup_factor to 1 over warmup_iters, then ×gamma at each step."""
    f = gamma ** sum(it >= s for s in steps)
    if it < warmup_iters:
        alpha = it / warmup_iters
        f *= warmup_factor * (1 - alpha) + alpha
    return f


class NonFiniteLossError(RuntimeError):
    pass


# What a run leaves in its output_dir: a new run there would overwrite or append to these.
RUN_FILES = ("last_checkpoint.pth", "model_final.pth", "metrics.jsonl", "tb")


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in a folder that holds another one (its checkpoint would be
    overwritten and its metrics log appended to), unless resuming it or told to overwrite it;
    with `overwrite`, the old run's files are removed first (by the main process)."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if not existing or resume:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} holds a run ({', '.join(existing)}): continue it with --resume, train into another "
            "output_dir=..., or pass --overwrite to start it again"
        )
    if is_main():
        log.warning("--overwrite: removing the previous run's %s in %s", ", ".join(existing), out)
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(
    cfg: Config,
    resume: bool = False,
    stop_after: int | None = None,
    on_step=None,
    print_final: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train `cfg` to cfg.train.max_iter, with checkpoints, logs and evaluation under
    cfg.output_dir. `resume` continues from output_dir/last_checkpoint; a folder holding another
    run is refused unless `overwrite` (see `check_output_dir`). `stop_after` ends the
    run (checkpointed) after that many iterations of this call (for tests and time budgets).
    `on_step(iteration, model)` is called after every optimizer step. `print_final` False: the
    final AP table is logged but not printed (the caller prints its own, e.g. the demo).
    Returns {"iteration", "metrics" (the final evaluation, rank 0)}."""
    rank, world, local_rank = init_distributed()
    tc = cfg.train
    device = resolve_device(tc.device, local_rank)
    precision = resolve_amp(tc.amp, device)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.amp=fp16 needs a CUDA device (its loss scaling, GradScaler, is CUDA's), not {device}: "
            "unscaled float16 gradients underflow, and float16 convolutions train far slower than float32 "
            "on a CPU; use train.amp=bf16 or off"
        )
    out = Path(cfg.output_dir)
    check_output_dir(out, resume, overwrite)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)

    train_ds, val_ds = build_datasets(cfg)
    if cfg.model.num_classes != len(train_ds.class_names):
        cfg = replace(cfg, model=cfg.model.replace(num_classes=len(train_ds.class_names)))
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by the {world} processes")
    per_rank = tc.batch_size // world

    # With model.weights (fine-tuning) every tensor comes from those weights: no ImageNet backbone first.
    model = build_model(cfg.model.replace(pretrained_backbone=False) if cfg.model.weights else cfg.model)
    last = out / "last_checkpoint.pth"
    resuming = resume and last.exists()
    if cfg.model.weights and not resuming:  # a resumed run's weights are its checkpoint's
        report = init_from_weights(model, cfg.model, train_ds.class_names)
        log.info("%s", report.summary())
        if is_main():
            atomic_write(out / "weights_report.json", report.to_json())
    model = model.to(device)
    if precision != "off":
        # Frozen BatchNorm applied inside the conv before it: under autocast FrozenBatchNorm2d's
        # float32 scale would promote every normalized activation back to float32.
        absorbed = absorb_frozen_batchnorm(model)
        log.info("%s autocast; %d frozen BatchNorms applied inside their convolutions", precision, absorbed)
    if world > 1 and device.type == "cuda" and cfg.model.norm == "bn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = scaled_lr(tc)
    optimizer = SkippableSGD(params, lr=lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, tc.warmup_iters, tc.warmup_factor, tuple(tc.lr_steps), tc.lr_gamma)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    if (tc.save_best or tc.patience) and val_ds is None:
        raise ConfigError("train.save_best / train.patience need a validation set: set data.val_path")
    start_iter = 0
    saved_progress: dict = {}
    if resuming:
        start_iter, saved_progress = restore_training_state(last, model, optimizer, scheduler, scaler, cfg, rank)
        log.info("resumed from %s at iteration %d", last, start_iter)
    elif resume:
        log.warning("--resume: no checkpoint at %s, starting from scratch", last)

    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[local_rank] if device.type == "cuda" else None,
            # Buffers change in training only with trainable BatchNorm (model.norm=bn, synced
            # by SyncBatchNorm): otherwise there is nothing to broadcast before every forward.
            broadcast_buffers=cfg.model.norm == "bn",
            gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copies
        )

    groups = aspect_groups(train_ds.aspect_ratios()) if cfg.data.aspect_ratio_grouping else [0] * len(train_ds)
    batches = TrainingBatches(groups, per_rank, cfg.seed, start=start_iter, rank=rank, world=world)
    loader = DataLoader(
        SeededSamples(train_ds, cfg.seed, cfg.data.on_bad),
        batch_sampler=batches,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # its own generator: creating the iterator must not draw from the global RNG, which a
        # resumed run restores from the checkpoint
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if is_main():
        save_config(cfg, out / "config.yaml")
    writer = _tensorboard(out) if is_main() else None
    metrics_file = open(out / "metrics.jsonl", "a") if is_main() else None

    end_iter = tc.max_iter if stop_after is None else min(tc.max_iter, start_iter + stop_after)
    progress = Progress.restore(saved_progress, tc.save_best or "AP")
    if progress.stopped_early:
        log.info("this run stopped early at iteration %d (train.patience): nothing left to train", start_iter)
        end_iter = start_iter
    last_eval: dict = {}
    val_loader = None  # built at the first periodic evaluation, its workers kept for the next ones

    def checkpoint(iteration: int) -> None:
        save_training_state(
            last, model, optimizer, scheduler, scaler, iteration, cfg, world, train_ds, progress.state()
        )

    def after_evaluation(m: dict, iteration: int, final: bool = False) -> bool:
        """Best model and early stopping after an evaluation; True: stop the run."""
        nonlocal progress
        if is_main() and progress.update(m, iteration) and tc.save_best:
            best = {"metric": progress.metric, "value": progress.best, "iteration": iteration}
            save_final(out / "model_best.pth", model, cfg, train_ds, best=best)
            log.info(
                "new best %s %.2f at iteration %d: %s",
                progress.metric,
                progress.best,
                iteration,
                out / "model_best.pth",
            )
        progress = progress.synced(world)
        if tc.patience and progress.evals_since_best >= tc.patience and not (final or progress.stopped_early):
            progress.stopped_early = True
            log.info(
                "early stop at iteration %d: %d evaluations without a %s above %.2f (iteration %d)",
                iteration,
                progress.evals_since_best,
                progress.metric,
                progress.best,
                progress.best_iteration,
            )
        return progress.stopped_early

    def check_nonfinite(iteration: int) -> None:
        """Log the steps skipped since the last check; stop when train.max_nonfinite came in a row."""
        new, longest = nonfinite.read()
        if new:
            log.warning("%d non-finite losses up to iteration %d: those steps were skipped", new, iteration)
        if longest >= tc.max_nonfinite:
            checkpoint(iteration)
            raise NonFiniteLossError(
                f"{longest} non-finite losses in a row by iteration {iteration}: training diverged "
                f"(lr {scheduler.get_last_lr()[0]:.4g}); lower train.base_lr, raise train.warmup_iters or set "
                f"train.clip_grad_norm. Checkpoint written to {out / 'last_checkpoint.pth'}"
            )

    amp = autocast(tc.amp, device)
    replaced = 0
    nonfinite = NonFiniteCounts(device)
    model.train()
    bar = tqdm(total=tc.max_iter, initial=start_iter, desc="train", disable=not is_main(), dynamic_ncols=True)
    data_iter = iter(loader)
    t0 = time.perf_counter()
    it = start_iter
    try:
        while it < end_iter:
            try:
                images, targets = next(data_iter)
            except DatasetError as e:  # from a worker: its message carries the worker's traceback
                raise DatasetError(worker_error_message(e)) from None
            replaced += sum(t.pop("replaced", 0) for t in targets)
            # Pinned (DataLoader pin_memory on CUDA) and non-blocking: the host queues the copies
            # and goes on; nothing in the step below reads a value back from the device.
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [
                {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets
            ]
            with amp:
                losses = ddp_model(images, targets)
            loss = losses["cls"] + losses["box"]
            # A non-finite loss skips the update (on every process alike: one skipping alone would
            # leave the others waiting in the gradient all-reduce), decided on the device; the
            # host reads the counts at the log period (see `check_nonfinite`).
            ok = all_finite(loss, world)
            nonfinite.add(ok)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.clip_grad_norm)
            if scaler.is_enabled():  # fp16: the scaler skips steps with inf/NaN gradients (its own host check)
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step_if(ok)
            scheduler.step()  # the schedule follows the iteration, stepped or not
            it += 1
            bar.update(1)
            if on_step is not None:
                on_step(it, model)
            if it % tc.log_period == 0 or it == end_iter:
                check_nonfinite(it)

            if it % tc.log_period == 0 or it == end_iter:
                record = {
                    "iter": it,
                    "loss": loss.item(),
                    "cls": losses["cls"].item(),
                    "box": losses["box"].item(),
                    "lr": scheduler.get_last_lr()[0],
                    "skipped": nonfinite.skipped,
                    "replaced": replaced,
                    "time": time.perf_counter() - t0,
                }
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")
                if is_main():
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    for k in ("loss", "cls", "box", "lr"):
                        writer.add_scalar(f"train/{k}", record[k], it)
            # Evaluated before the checkpoint of the same iteration, so that it holds the progress.
            stop = False
            if tc.eval_period and it % tc.eval_period == 0 and it < tc.max_iter and val_ds is not None:
                val_loader = val_loader or eval_loader(val_ds, cfg, device, persistent=True)
                last_eval = evaluate(model, val_ds, cfg, device, writer=writer, step=it, loader=val_loader)
                if is_main():
                    _log_eval(last_eval, it, writer, metrics_file)
                stop = after_evaluation(last_eval, it)
            if it % tc.checkpoint_period == 0 or it == end_iter or stop:
                checkpoint(it)
            if stop:
                break
    finally:
        bar.close()

    metrics = {}
    if progress.stopped_early:
        if is_main():
            save_final(out / "model_final.pth", model, cfg, train_ds)
        metrics = last_eval
    elif it >= tc.max_iter:
        if is_main():  # before the final evaluation: a failing evaluation loses no trained weights
            save_final(out / "model_final.pth", model, cfg, train_ds)
        if val_ds is not None:
            metrics = evaluate(model, val_ds, cfg, device, writer=writer, step=it, loader=val_loader)
            if is_main():
                _log_eval(metrics, it, writer, metrics_file, echo=print_final)
            after_evaluation(metrics, it, final=True)
    if is_main():
        metrics_file.close()
        writer.close()
    if replaced and is_main():
        log.warning("%d training samples could not be loaded and were replaced by the next image", replaced)
    return {
        "iteration": it,
        "metrics": metrics,
        "skipped": nonfinite.skipped,
        "replaced": replaced,
        "output_dir": str(out),
        "stopped_early": progress.stopped_early,
        "best": {"metric": progress.metric, "value": progress.best, "iteration": progress.best_iteration},
    }


def all_finite(loss: torch.Tensor, world: int) -> torch.Tensor:
    """Whether the loss is finite on every process: a 0-dim bool tensor on the loss's device (a
    MIN all-reduce of the flag under DDP), never read by the host here."""
    finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return finite[0] > 0


class NonFiniteCounts:
    """Skipped steps and the longest run of consecutive ones, counted on the device; `read`
    brings them to the host (one synchronisation) and starts a new longest run."""

    def __init__(self, device: torch.device):
        self._counts = torch.zeros(3, dtype=torch.int64, device=device)  # skipped, current run, longest run
        self.skipped = 0

    def add(self, ok: torch.Tensor) -> None:
        bad = (~ok).to(torch.int64)
        skipped, run, longest = self._counts.unbind()
        run = (run + 1) * bad
        self._counts = torch.stack((skipped + bad, run, torch.maximum(longest, run)))

    def read(self) -> tuple[int, int]:
        """-> (steps skipped since the last read, longest run of them in a row)."""
        skipped, run, longest = self._counts.tolist()
        new, self.skipped = skipped - self.skipped, skipped
        self._counts[2] = run
        return new, longest


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _log_eval(metrics: dict, it: int, writer, metrics_file, echo: bool = True) -> None:
    if echo:
        print(format_ap_table(metrics, title=f"COCO bbox AP at iteration {it}"), flush=True)
    rec = {"iter": it, **{k: v for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v)}}
    metrics_file.write(json.dumps({"eval": rec}) + "\n")
    metrics_file.flush()
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        if k in metrics and not math.isnan(metrics[k]):
            writer.add_scalar(f"eval/{k}", metrics[k], it)

"""Training and evaluation loops (§4 "Optimization"): one flat loop, no trainer hierarchy.

Distribution is torch.distributed's: run under `torchrun --nproc_per_node N -m retinanet train
...` and every process trains its share of the global batch inside DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..config import Config, config_to_dict, save_config, scaled_lr
from ..data.common import DatasetError, collate_fn
from ..data.samplers import aspect_groups
from .evaluation import CocoEvaluator, format_ap_table
from ..model.build import build_model
from ..model.retinanet import RetinaNet

log = logging.getLogger("retinanet.engine")


# ------------------------------------------------------------------ distributed helpers
def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initializes the default
    process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return rank, world, local_rank


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and dist.is_initialized():
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


# ------------------------------------------------------------------ data
class TrainingBatches(Sampler[list[int]]):
    """Endless batches for one process: each epoch a permutation seeded by (seed, epoch), split
    by aspect group (landscape / portrait, so that padding wastes little; detectron2's grouping)
    and cut into batches of `batch_size`; global batch b of an epoch is the b-th run of `world`
    consecutive per-process batches. Incomplete batches at an epoch's end are dropped.

    Batch i of the stream is a pure function of i, so a run resumed at iteration `start` sees
    exactly the images the interrupted one would have seen. Indices carry their epoch
    (index + epoch·size) for SeededSamples.
    """

    def __init__(self, groups: list[int], batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.groups = torch.tensor(groups)
        self.batch_size, self.seed, self.start, self.rank, self.world = batch_size, seed, start, rank, world
        counts = torch.bincount(self.groups, minlength=2)
        self.per_epoch = int(sum(c // (batch_size * world) for c in counts.tolist()))
        if self.per_epoch == 0:
            raise DatasetError(f"{len(groups)} training images cannot fill one batch of {batch_size * world} (per aspect group)")

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of an epoch, each a list of `world` per-process batches."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.groups), generator=g)
        n = self.batch_size * self.world
        batches = []
        for group in (0, 1):
            idx = perm[self.groups[perm] == group]
            for j in range(len(idx) // n):
                batches.append(idx[j * n : (j + 1) * n])
        order = torch.randperm(len(batches), generator=g)  # interleave the groups
        offset = epoch * len(self.groups)
        return [[(b[r * self.batch_size : (r + 1) * self.batch_size] + offset).tolist() for r in range(self.world)] for b in (batches[i] for i in order)]

    def __iter__(self):
        it = self.start
        epoch, batches = -1, None
        while True:
            e, i = divmod(it, self.per_epoch)
            if e != epoch:
                epoch, batches = e, self.epoch_batches(e)
            yield batches[i][self.rank]
            it += 1


class SeededSamples(Dataset):
    """Wraps a dataset so that the random transforms of stream position (index + epoch·size)
    draw from a generator seeded by that position: the same augmentation on resume, whatever
    the worker that loads it."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 7_919 + i)
            return self.dataset[i % len(self.dataset)]


def synthetic_root(path: str | None) -> Path:
    """The folder of the synthetic dataset for data.kind=synth: `path` (data.train_path) when it
    holds one already (any size), else generated there, or at the default location, once."""
    from ..data.synth import default_synth_dir, ensure_synthetic

    given = Path(path) if path else None
    if given is not None and (given / "annotations").is_dir():
        return given
    return Path(ensure_synthetic(given or default_synth_dir()))


def build_datasets(cfg: Config, train: bool = True):
    """(train dataset or None, val dataset) from cfg.data; "synth" generates the built-in
    synthetic dataset on first use."""
    from ..data import build_dataset
    from ..data.transforms import Compose, RandomHorizontalFlip

    d = cfg.data
    if d.kind == "synth":
        root = synthetic_root(d.train_path)
        kind, train_path, val_path = "coco", root / "annotations" / "instances_train.json", root / "annotations" / "instances_val.json"
        train_images, val_images = root / "train", root / "val"
    else:
        kind, train_path, val_path = d.kind, d.train_path, d.val_path
        train_images, val_images = d.train_images_dir, d.val_images_dir
    common = dict(class_map=d.class_map, on_bad=d.on_bad)
    train_ds = None
    if train:
        if train_path is None:
            raise ValueError("data.train_path is not set")
        flip = [RandomHorizontalFlip(d.hflip_prob)] if d.hflip_prob > 0 else []
        extra = {"split": d.train_split} if kind == "voc" else {}
        train_ds = build_dataset(kind, train_path, images_dir=train_images, transforms=Compose(flip), keep_empty=d.keep_empty, **extra, **common)
    val_ds = None
    if val_path is not None:
        extra = {"split": d.val_split} if kind == "voc" else {}
        val_ds = build_dataset(kind, val_path, images_dir=val_images, keep_empty=True, **extra, **common)
    return train_ds, val_ds


# ------------------------------------------------------------------ schedule and checkpoints
def lr_factor(it: int, warmup_iters: int, warmup_factor: float, steps: tuple[int, ...], gamma: float) -> float:
    """Linear warmup from warmup_factor to 1 over warmup_iters, then ×gamma at each step."""
    f = gamma ** sum(it >= s for s in steps)
    if it < warmup_iters:
        alpha = it / warmup_iters
        f *= warmup_factor * (1 - alpha) + alpha
    return f


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash mid-write never
    leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, loaded without executing code from it (weights_only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint, possibly truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a retinanet checkpoint (no 'model' entry)")
    return ckpt


def unwrap(model: nn.Module) -> RetinaNet:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ------------------------------------------------------------------ evaluation
# Evaluation shows this many validation images with their detections (score >= the threshold)
# and ground truth in TensorBoard, so that a run can be judged by eye as well as by AP.
EVAL_EXAMPLES = 4
EVAL_EXAMPLE_SCORE_THRESH = 0.3


@torch.no_grad()
def evaluate(model: nn.Module, dataset, cfg: Config, device: torch.device, max_images: int | None = None, results_path=None,
             writer=None, step: int = 0, num_examples: int = EVAL_EXAMPLES) -> dict:
    """COCO metrics of `model` on `dataset` (sharded over ranks, gathered on rank 0), and the
    COCO results JSON written to `results_path` when given. Returns the metrics dict on rank 0
    ({} elsewhere). With a TensorBoard `writer`, the first `num_examples` images of this rank's
    share are logged as pictures "eval/example_<k>" at `step`: ground truth in white, detections
    with score >= EVAL_EXAMPLE_SCORE_THRESH in their class colours."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    indices = list(range(rank, n, world))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=cfg.eval.batch_size, shuffle=False,
        num_workers=cfg.data.num_workers, collate_fn=collate_fn,
    )
    evaluator = CocoEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, backend=cfg.eval.backend)
    amp = _autocast(cfg.train.amp, device)
    examples = []
    for images, targets in tqdm(loader, desc="eval", disable=not is_main(), leave=False):
        with amp:
            dets = net([im.to(device) for im in images])
        dets = [{k: v.float().cpu() for k, v in d.items()} for d in dets]
        evaluator.update([int(t["image_id"]) for t in targets], dets)
        if writer is not None and len(examples) < num_examples:
            examples += list(zip(images, targets, dets))[: num_examples - len(examples)]
    if examples:
        _log_examples(writer, examples, dataset.class_names, step)
    results, ids = evaluator.results(), list(evaluator.image_ids)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (results, ids))
        if rank != 0:
            net.train(was_training)
            return {}
        evaluator.reset()
        for res, im_ids in gathered:
            evaluator.extend(res, im_ids)
    metrics = evaluator.evaluate()
    metrics["class_names"] = list(dataset.class_names)
    if results_path is not None:
        evaluator.write_results(results_path)
    net.train(was_training)
    return metrics


def _log_examples(writer, examples, class_names, step: int) -> None:
    """Pictures of (image, target, detections) triples to TensorBoard, as HWC uint8."""
    import numpy as np

    from ..utils.visualize import draw_detections, draw_ground_truth

    for k, (image, target, det) in enumerate(examples):
        keep = det["scores"] >= EVAL_EXAMPLE_SCORE_THRESH
        picture = draw_ground_truth(image, target["boxes"])
        picture = draw_detections(picture, det["boxes"][keep], det["labels"][keep].long(), det["scores"][keep], class_names)
        writer.add_image(f"eval/example_{k}", np.asarray(picture), step, dataformats="HWC")
    writer.flush()


def _autocast(amp: str, device: torch.device):
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------ training
class NonFiniteLossError(RuntimeError):
    pass


def train(cfg: Config, resume: bool = False, stop_after: int | None = None, on_step=None, print_final: bool = True) -> dict:
    """Train `cfg` to cfg.train.max_iter, with checkpoints, logs and evaluation under
    cfg.output_dir. `resume` continues from output_dir/last_checkpoint. `stop_after` ends the
    run (checkpointed) after that many iterations of this call (for tests and time budgets).
    `on_step(iteration, model)` is called after every optimizer step. `print_final` False: the
    final AP table is logged but not printed (the caller prints its own, e.g. the demo).
    Returns {"iteration", "metrics" (the final evaluation, rank 0)}."""
    rank, world, local_rank = init_distributed()
    tc = cfg.train
    device = resolve_device(tc.device, local_rank)
    out = Path(cfg.output_dir)
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

    model = build_model(cfg.model).to(device)
    if world > 1 and device.type == "cuda" and cfg.model.norm == "bn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = scaled_lr(tc)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, tc.warmup_iters, tc.warmup_factor, tuple(tc.lr_steps), tc.lr_gamma)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=tc.amp == "fp16" and device.type == "cuda")

    start_iter = 0
    last = out / "last_checkpoint.pth"
    if resume and last.exists():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_iter = int(ckpt["iteration"])
        torch.set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        log.info("resumed from %s at iteration %d", last, start_iter)
    elif resume:
        log.warning("--resume: no checkpoint at %s, starting from scratch", last)

    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    groups = aspect_groups(train_ds.aspect_ratios()) if cfg.data.aspect_ratio_grouping else [0] * len(train_ds)
    batches = TrainingBatches(groups, per_rank, cfg.seed, start=start_iter, rank=rank, world=world)
    loader = DataLoader(
        SeededSamples(train_ds, cfg.seed), batch_sampler=batches, num_workers=cfg.data.num_workers,
        collate_fn=collate_fn, pin_memory=device.type == "cuda", persistent_workers=False,
        # its own generator: creating the iterator must not draw from the global RNG, which a
        # resumed run restores from the checkpoint
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if is_main():
        save_config(cfg, out / "config.yaml")
    writer = _tensorboard(out) if is_main() else None
    metrics_file = open(out / "metrics.jsonl", "a") if is_main() else None

    end_iter = tc.max_iter if stop_after is None else min(tc.max_iter, start_iter + stop_after)
    amp = _autocast(tc.amp, device)
    nonfinite_in_a_row = skipped = 0
    model.train()
    bar = tqdm(total=tc.max_iter, initial=start_iter, desc="train", disable=not is_main(), dynamic_ncols=True)
    data_iter = iter(loader)
    t0 = time.perf_counter()
    it = start_iter
    try:
        while it < end_iter:
            images, targets = next(data_iter)
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            with amp:
                losses = ddp_model(images, targets)
            loss = losses["cls"] + losses["box"]
            if not torch.isfinite(loss):
                # Skip the step (no update), keep going; many in a row means divergence.
                nonfinite_in_a_row += 1
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("iteration %d: non-finite loss (cls %s, box %s), step skipped", it, losses["cls"].item(), losses["box"].item())
                if nonfinite_in_a_row >= tc.max_nonfinite:
                    _save(out / "last_checkpoint.pth", model, optimizer, scheduler, scaler, it, cfg, world, train_ds.class_names)
                    raise NonFiniteLossError(
                        f"{nonfinite_in_a_row} non-finite losses in a row at iteration {it}: training diverged "
                        f"(lr {scheduler.get_last_lr()[0]:.4g}); lower train.base_lr, raise train.warmup_iters or set "
                        f"train.clip_grad_norm. Checkpoint written to {out / 'last_checkpoint.pth'}"
                    )
                it += 1
                with warnings.catch_warnings():  # the schedule follows the iteration, stepped or not
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                bar.update(1)
                continue
            nonfinite_in_a_row = 0
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            it += 1
            bar.update(1)
            if on_step is not None:
                on_step(it, model)

            if it % tc.log_period == 0 or it == end_iter:
                record = {"iter": it, "loss": loss.item(), "cls": losses["cls"].item(), "box": losses["box"].item(),
                          "lr": scheduler.get_last_lr()[0], "skipped": skipped, "time": time.perf_counter() - t0}
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")
                if is_main():
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    for k in ("loss", "cls", "box", "lr"):
                        writer.add_scalar(f"train/{k}", record[k], it)
            if it % tc.checkpoint_period == 0 or it == end_iter:
                _save(out / "last_checkpoint.pth", model, optimizer, scheduler, scaler, it, cfg, world, train_ds.class_names)
            if tc.eval_period and it % tc.eval_period == 0 and it < tc.max_iter and val_ds is not None:
                m = evaluate(model, val_ds, cfg, device, writer=writer, step=it)
                if is_main():
                    _log_eval(m, it, writer, metrics_file)
    finally:
        bar.close()

    metrics = {}
    if it >= tc.max_iter and val_ds is not None:
        metrics = evaluate(model, val_ds, cfg, device, writer=writer, step=it)
        if is_main():
            _log_eval(metrics, it, writer, metrics_file, echo=print_final)
            atomic_save({"model": model.state_dict(), "config": config_to_dict(cfg), "class_names": list(train_ds.class_names)}, out / "model_final.pth")
    if is_main():
        metrics_file.close()
        writer.close()
    return {"iteration": it, "metrics": metrics, "skipped": skipped, "output_dir": str(out)}


def _save(path, model, optimizer, scheduler, scaler, it, cfg, world, class_names) -> None:
    rng = torch.get_rng_state()
    if world > 1:  # every rank's RNG, so that a resumed run draws as the interrupted one would
        states = [None] * world
        dist.all_gather_object(states, rng)
        rng_all = states
    else:
        rng_all = [rng]
    if is_main():
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "iteration": it,
                "rng": rng_all,
                "config": config_to_dict(cfg),
                "class_names": list(class_names),
            },
            path,
        )
        save_config(cfg, Path(path).parent / "config.yaml")


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

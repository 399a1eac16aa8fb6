"""The evaluation loop: a model over a dataset, sharded over processes, scored with COCO's
metrics (retinanet/engine/metrics.py) on the main process."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..config import Config
from ..data.common import DatasetError, collate_fn, worker_error_message
from .distributed import is_main, rank_and_world, unwrap
from .metrics import CocoEvaluator
from .tiling import TileSpec, predict_tiled


def resolve_amp(amp: str, device: torch.device) -> str:
    """`train.amp` on `device`: "auto" is "bf16" on a CUDA device that supports it, else "off"."""
    if amp != "auto":
        return amp
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"


def autocast(amp: str, device: torch.device):
    """The autocast context of `train.amp` ("off", "auto", "bf16", "fp16") on `device`."""
    amp = resolve_amp(amp, device)
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# Evaluation shows this many validation images with their detections (score >= the threshold)
# and ground truth in TensorBoard, so that a run can be judged by eye as well as by AP.
EVAL_EXAMPLES = 4
EVAL_EXAMPLE_SCORE_THRESH = 0.3


def eval_loader(
    dataset, cfg: Config, device: torch.device, max_images: int | None = None, persistent: bool = False
) -> DataLoader:
    """The loader of this rank's share of `dataset` (the first `max_images`), batches of
    cfg.eval.batch_size. Pinned on CUDA, so the non-blocking copies in `evaluate` overlap. With
    `persistent` and loader workers, the workers live as long as the loader: the trainer makes
    one for all its periodic evaluations instead of starting data.num_workers processes each
    time."""
    rank, world = rank_and_world()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    workers = cfg.data.num_workers
    return DataLoader(
        Subset(dataset, list(range(rank, n, world))),
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    cfg: Config,
    device: torch.device,
    max_images: int | None = None,
    results_path=None,
    writer=None,
    step: int = 0,
    num_examples: int = EVAL_EXAMPLES,
    tiling: TileSpec | None = None,
    loader: DataLoader | None = None,
) -> dict:
    """COCO metrics of `model` on `dataset` (sharded over ranks, gathered on rank 0), and the
    COCO results JSON written to `results_path` when given. Returns the metrics dict on rank 0
    ({} elsewhere). With a TensorBoard `writer`, the first `num_examples` images of this rank's
    share are logged as pictures "eval/example_<k>" at `step`: ground truth in white, detections
    with score >= EVAL_EXAMPLE_SCORE_THRESH in their class colours. `tiling`: each image predicted
    by tiles (engine/tiling.py), as `retinanet predict --tile` does. `loader`: an `eval_loader`
    of `dataset` to reuse (then `max_images` is the loader's)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    rank, world = rank_and_world()
    loader = eval_loader(dataset, cfg, device, max_images) if loader is None else loader
    evaluator = CocoEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, backend=cfg.eval.backend)
    amp = autocast(cfg.train.amp, device)
    examples = []
    try:
        for images, targets in tqdm(loader, desc="eval", disable=not is_main(), leave=False):
            with amp:
                if tiling is None:
                    dets = net([im.to(device, non_blocking=True) for im in images])
                else:  # the image stays on the CPU: only its tiles go to the device
                    dets = [predict_tiled(net, im, tiling, device) for im in images]
            dets = [{k: v.float().cpu() for k, v in d.items()} for d in dets]
            evaluator.update([int(t["image_id"]) for t in targets], dets)
            if writer is not None and len(examples) < num_examples:
                examples += list(zip(images, targets, dets))[: num_examples - len(examples)]
    except DatasetError as e:  # from a worker: its message carries the worker's traceback
        raise DatasetError(worker_error_message(e)) from None
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
        picture = draw_detections(
            picture, det["boxes"][keep], det["labels"][keep].long(), det["scores"][keep], class_names
        )
        writer.add_image(f"eval/example_{k}", np.asarray(picture), step, dataformats="HWC")
    writer.flush()


__all__ = ["EVAL_EXAMPLES", "autocast", "eval_loader", "evaluate"]

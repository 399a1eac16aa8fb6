"""The engine's training step on a CUDA device under `torch.cuda.set_sync_debug_mode("error")`:
any host-device synchronisation in a steady-state step (outside the log period) raises. Writes
a JSON file with the outcome and the step time. Run by benchmarks/gpu.sh."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from retinanet.config import load_config
from retinanet.data.synth import generate_synthetic
from retinanet.engine import train


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--amp", default="auto", help="train.amp (default auto: bf16 where supported)")
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="steps checked, after 3 warm-up steps")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp())
    generate_synthetic(work / "synth", seed=0, num_train=64, num_val=4)
    warm, total = 3, 3 + args.steps
    cfg = load_config(
        "configs/synth/retinanet_r18_synth.yaml",
        [
            f"data.train_path={work / 'synth'}",
            f"output_dir={work / 'run'}",
            "model.backbone=resnet50",
            "model.pretrained_backbone=false",
            f"model.min_size={args.size}",
            f"model.max_size={args.size}",
            f"train.batch_size={args.batch}",
            f"train.max_iter={total + 1}",
            "train.lr_steps=[]",
            "train.warmup_iters=0",
            f"train.log_period={total + 1}",  # no log step inside the checked window
            "train.eval_period=0",
            f"train.checkpoint_period={total + 1}",
            "train.device=cuda",
            f"train.amp={args.amp}",
            "data.num_workers=6",
            "data.val_path=null",
        ],
    )
    state: dict = {"error": None}

    def on_step(it: int, model) -> None:
        if it == warm:
            torch.cuda.synchronize()
            state["t0"] = time.perf_counter()
            torch.cuda.set_sync_debug_mode("error")
        elif it == total:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            state["t1"] = time.perf_counter()

    try:
        train(cfg, on_step=on_step)
    except RuntimeError as e:  # a synchronisation inside the checked steps
        torch.cuda.set_sync_debug_mode("default")
        state["error"] = str(e).splitlines()[0]
    result = {
        "device": torch.cuda.get_device_name(),
        "amp": args.amp,
        "size": args.size,
        "batch": args.batch,
        "steps_checked": args.steps,
        "synchronisations": "none" if state["error"] is None else state["error"],
    }
    if state["error"] is None:
        step_s = (state["t1"] - state["t0"]) / args.steps
        result.update(step_ms=round(1000 * step_s, 2), images_per_s=round(args.batch / step_s, 1))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if state["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the OHEM rows of Table 1(d) actually train on: positives and negatives per image in the
OHEM minibatch, at initialisation and for the trained model of each finished mini run, and how
many val images get a detection above the score threshold.

    python experiments/ohem_minibatch.py experiments/runs/ohem_mini/*/ [--images 16]

Each run folder needs its config.yaml and model_final.pth (git-ignored: rerun the table first).
The minibatch is the one `select_hard_examples` builds inside the criterion, recorded by wrapping
it; no optimizer step is taken. Used for the Table 1(d) discussion in experiments/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from retinanet import build_model, load_model
from retinanet.config import load_config
from retinanet.data.build import build_datasets
from retinanet.data.common import collate_fn
from retinanet.model import ohem


def minibatch_counts(model, images, targets) -> tuple[float, float]:
    """Mean kept positives and negatives per image for one batch (model in train mode)."""
    seen = []
    original = ohem.select_hard_examples

    def recording(scores, anchors, labels, *args, **kwargs):
        keep = original(scores, anchors, labels, *args, **kwargs)
        seen.append(((keep & (labels >= 0)).sum(1).float(), (keep & (labels < 0)).sum(1).float()))
        return keep

    ohem.select_hard_examples = recording
    try:
        with torch.no_grad():
            model(images, targets)
    finally:
        ohem.select_hard_examples = original
    pos, neg = seen[0]
    return pos.mean().item(), neg.mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--images", type=int, default=16)
    args = p.parse_args()
    print(
        "| run | batch | NMS | 1:3 | init: pos / neg kept per image | trained: pos / neg "
        "| val images with a detection | AP |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        if not (run / "config.yaml").is_file() or not (run / "model_final.pth").is_file():
            print(f"{run}: no config.yaml or model_final.pth (a reused run, or not trained here): skipped")
            continue
        cfg = load_config(run / "config.yaml")
        m = cfg.model
        if m.cls_loss != "ohem":
            print(f"{run}: not an OHEM run (model.cls_loss={m.cls_loss}): skipped")
            continue
        train_ds, val_ds = build_datasets(cfg)
        images, targets = collate_fn([train_ds[i] for i in range(args.images)])
        torch.manual_seed(cfg.seed)
        cells = []
        for weights in (None, run / "model_final.pth"):
            model = build_model(m) if weights is None else load_model(str(weights)).model
            model.train()
            pos, neg = minibatch_counts(model, images, targets)
            cells.append(f"{pos:.1f} / {neg:.1f}")
        model.eval()
        with torch.no_grad():
            val_images = [val_ds[i][0] for i in range(min(len(val_ds), 50))]
            with_det = sum(len(d["scores"]) > 0 for d in model(val_images))
        result = run / "result.json"
        ap = f"{json.loads(result.read_text())['metrics']['AP']:.1f}" if result.is_file() else "-"
        print(
            f"| {run.name} | {m.ohem_batch_size} | {m.ohem_nms_thresh} | {'yes' if m.ohem_pos_fraction else 'no'} | "
            f"{cells[0]} | {cells[1]} | {with_det} / {len(val_images)} | {ap} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Fine-tuning against training from scratch, offline, at mini scale.

    python experiments/transfer.py [--seeds 2] [--iters 120] [--train-images 40]

A source model is trained on half of the synthetic classes (circle, square, triangle; 600
images, the demo's recipe), then a model for the other half (ring, cross, star) is trained on a
few dozen images of them, once starting from the source model (model.weights, its class layer
re-initialised: no class name matches) and once from scratch, with the same iterations, each
with several seeds; a third row fine-tunes with data.augment. Every run is cached under
experiments/runs/transfer_mini/<config hash> (an interrupted script resumes, finished runs are not
trained again); the table goes to experiments/results/transfer_mini.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from retinanet.config import load_config
from retinanet.data.synth import default_synth_dir, ensure_synthetic
from retinanet.tools.experiments import RESULTS_DIR, RUNS_DIR, config_hash, run_one
from retinanet.utils.io import atomic_write
from retinanet.utils.machine import git_commit
from retinanet.utils.paths import project_path

SOURCE_CLASSES = ("circle", "square", "triangle")
TARGET_CLASSES = ("ring", "cross", "star")
BASE = "configs/synth/retinanet_r18_synth.yaml"
METRICS = ("AP", "AP50", "AP75")
# The augmentation row: colour, vertical flip and a mild large-scale jitter (the shapes keep
# their sizes' range; 40 images seen 24 times each need variety more than new scales).
AUGMENT = '[photometric,vflip,"lsj(min_scale=0.5,max_scale=1.5)"]'


def dataset(seed: int, classes, num_train: int, num_val: int = 100):
    root = default_synth_dir(seed).parent / f"synth-{'-'.join(classes)}-seed{seed}-{num_train}"
    return ensure_synthetic(root, seed=seed, num_train=num_train, num_val=num_val, classes=list(classes))


def run(overrides: list[str], runs_dir) -> tuple[dict, str]:
    cfg = load_config(project_path(BASE), overrides)
    run_dir = runs_dir / config_hash(cfg)
    print(f"[transfer] {' '.join(overrides)}: {run_dir}", flush=True)
    return run_one(dataclasses.replace(cfg, output_dir=str(run_dir)), run_dir), str(run_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iters", type=int, default=120, help="iterations of 8 images on the small split")
    p.add_argument("--train-images", type=int, default=40, help="training images of the target classes")
    args = p.parse_args(argv)
    runs_dir = RUNS_DIR / "transfer_mini"

    source_data = dataset(11, SOURCE_CLASSES, 600)
    source, source_dir = run([f"data.train_path={source_data}"], runs_dir)
    weights = Path(source_dir) / "model_final.pth"
    if not weights.is_file():  # only result.json is kept in git: train the source again here
        (Path(source_dir) / "result.json").unlink()
        source, source_dir = run([f"data.train_path={source_data}"], runs_dir)

    target_data = dataset(12, TARGET_CLASSES, args.train_images)
    steps = [round(args.iters * 2 / 3), round(args.iters * 8 / 9)]
    schedule = [f"train.max_iter={args.iters}", f"train.lr_steps=[{steps[0]},{steps[1]}]", "train.warmup_iters=30"]
    fine_tune = [f"model.weights={weights}", "model.weights_class_map=names"]
    rows = {
        "from scratch": [],
        "fine-tuned from the source model": fine_tune,
        f"fine-tuned, data.augment={AUGMENT}": [*fine_tune, f"data.augment={AUGMENT}"],
    }
    results = {}
    for name, extra in rows.items():
        results[name] = []
        for seed in range(args.seeds):
            overrides = [f"data.train_path={target_data}", *schedule, f"seed={seed}", *extra]
            result, run_dir = run(overrides, runs_dir)
            results[name].append({**result, "run": run_dir})

    def summary(runs):
        out = {}
        for m in METRICS:
            vals = [r["metrics"][m] for r in runs if r["metrics"].get(m) is not None]
            out[m] = round(statistics.fmean(vals), 1)
            out[m + "_spread"] = round(max(vals) - min(vals), 1)
        return out

    report = {
        "title": "Fine-tuned vs from scratch on a few dozen images of new classes (mini scale)",
        "commit": git_commit(),
        "source": {"classes": SOURCE_CLASSES, "images": 600, "metrics": source["metrics"], "run": source_dir},
        "target": {"classes": TARGET_CLASSES, "train_images": args.train_images, "val_images": 100},
        "iterations": args.iters,
        "seeds": args.seeds,
        "rows": {name: {"measured": summary(runs), "runs": runs} for name, runs in results.items()},
    }
    lines = [
        f"**{report['title']}**",
        "",
        f"Source: ResNet-18 RetinaNet (the demo's recipe) trained on {', '.join(SOURCE_CLASSES)} (600 images): "
        f"AP {source['metrics']['AP']:.1f} on their val split. Target: {', '.join(TARGET_CLASSES)}, "
        f"{args.train_images} training images, 100 val images; {args.iters} iterations of 8 images each; "
        f"mean over {args.seeds} seeds (spread = max - min).",
        "",
        "| start | " + " | ".join(METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for name, row in report["rows"].items():
        m = row["measured"]
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f} ± {m[k + '_spread']:.1f}" for k in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS_DIR / "transfer_mini.json", json.dumps(report, indent=1))
    atomic_write(RESULTS_DIR / "transfer_mini.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `retinanet` command (also `python -m retinanet`, which torchrun runs):

    retinanet demo                                      synthetic data -> train -> AP table -> detections.png
    retinanet train [CONFIG] [KEY=VALUE ...] [--resume]
    retinanet eval [CONFIG] --weights W [KEY=VALUE ...] [--results out.json] [--per-class]
    retinanet predict --weights W INPUT... --out DIR [--score-thresh 0.3]
    retinanet data synth --out DIR [--seed S --train N --val M]
    retinanet data check PATH [--images-dir D] [--class-map F] [--on-bad skip]

Overrides are dotted `key=value` strings (retinanet.config). Exit status: 0 success; 1 a run
that stopped (non-finite losses) or a dataset check that skipped entries; 2 bad usage, a config
error or a dataset / file error (a one-line message, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from .config import (
    Config,
    ConfigError,
    apply_overrides,
    diff_from_defaults,
    flatten,
    format_overrides,
    load_config,
)
from .data.common import DatasetError

# configs/ lives beside the package in a source checkout (and an editable install).
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
SYNTH_CONFIG = CONFIGS_DIR / "synth" / "retinanet_r18_synth.yaml"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
TORCHVISION_COCO = "torchvision-coco"
DEMO_IMAGES = 4
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A user error worth one line on stderr and exit status 2 (no traceback)."""


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def synth_config(overrides: Sequence[str] = ()) -> tuple[Config, str]:
    """(config, where it came from) of the synthetic-data recipe: the YAML when present."""
    if not SYNTH_CONFIG.is_file():
        raise CliError(f"{SYNTH_CONFIG} not found: the configs/ folder ships with the source checkout (pip install -e .)")
    return load_config(SYNTH_CONFIG, overrides), str(SYNTH_CONFIG)


def _split_positionals(items: Sequence[str], config_option: Optional[str] = None) -> tuple[Optional[str], list[str]]:
    """(CONFIG or None, KEY=VALUE overrides) from the positional words of train/eval/demo and
    the --config option (an alternative spelling)."""
    configs = [s for s in items if "=" not in s] + ([config_option] if config_option is not None else [])
    overrides = [s for s in items if "=" in s]
    if len(configs) > 1:
        raise CliError(f"expected one CONFIG file, got {configs} (overrides are KEY=VALUE)")
    return (configs[0] if configs else None), overrides


def _resolve_config(config: Optional[str], overrides: Sequence[str]) -> tuple[Config, str]:
    """CONFIG omitted: the synthetic recipe; "-": the paper's defaults; else the YAML file."""
    if config is None:
        return synth_config(overrides)
    if config == "-":
        return load_config(None, overrides), "defaults"
    return load_config(config, overrides), config


def _config_from_dict(tree: dict) -> Config:
    """The Config saved in a checkpoint (`config_to_dict` output)."""
    with warnings.catch_warnings():  # already warned about when that run was trained
        warnings.simplefilter("ignore")
        return apply_overrides(Config(), flatten(tree))


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _print_config(cfg: Config, source: str) -> None:
    diff = format_overrides(diff_from_defaults(cfg))
    print(f"config: {source}; differences from the paper's defaults:")
    print("\n".join(f"  {d}" for d in diff) if diff else "  (none)", flush=True)


# ---------------------------------------------------------------------------------------------
# Models from checkpoints
# ---------------------------------------------------------------------------------------------


def _infer_num_classes(state: dict, model_cfg) -> Optional[int]:
    w = state.get("head.cls_score.weight")
    if w is None:
        return None
    anchors = len(model_cfg.aspect_ratios) * model_cfg.scales_per_octave
    return int(w.shape[0]) // anchors


def _model_from_checkpoint(ckpt: dict, fallback_cfg: Optional[Config], model_overrides: Sequence[str] = ()):
    """(model, model config) holding the checkpoint's weights. The architecture comes from the
    checkpoint's saved config when it has one, else from `fallback_cfg` (num_classes read from
    the weights); `model_overrides` ("model.score_thresh=0.3", ...) apply last."""
    from .model.build import build_model

    if ckpt.get("config") is not None:
        model_cfg = _config_from_dict(ckpt["config"]).model
    elif fallback_cfg is not None:
        model_cfg = fallback_cfg.model
        n = _infer_num_classes(ckpt["model"], model_cfg)
        if n is not None and n != model_cfg.num_classes:
            model_cfg = model_cfg.replace(num_classes=n)
    else:
        raise CliError("the checkpoint has no saved config: give a CONFIG (--config) or --model NAME")
    model_cfg = apply_overrides(Config(model=model_cfg), list(model_overrides)).model
    # Every weight comes from the checkpoint: never fetch ImageNet weights first.
    model_cfg = model_cfg.replace(pretrained_backbone=False)
    model = build_model(model_cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CliError(f"the weights do not fit the model {model_cfg.backbone}/{model_cfg.num_classes} classes: "
                       f"{' '.join(first[:3])[:400]}") from None
    return model, model_cfg


def _checkpoint_class_names(ckpt: dict, num_classes: int) -> list[str]:
    """Class names saved with the checkpoint ("class_names"); the synthetic dataset's names for a
    model trained on it; else class_0, class_1, ..."""
    names = ckpt.get("class_names")
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    data = (ckpt.get("config") or {}).get("data", {})
    if data.get("kind") == "synth":
        from .data.synth import CLASSES

        if len(CLASSES) == num_classes:
            return list(CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def _load_checkpoint(path: str) -> dict:
    from .engine import load_checkpoint

    try:
        return load_checkpoint(path)
    except ValueError as e:  # corrupt, or not a checkpoint of ours
        raise CliError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def _check_data_paths(cfg: Config, train: bool) -> None:
    d = cfg.data
    if d.kind == "synth":
        return
    if train and d.train_path is None:
        raise CliError(f"data.kind={d.kind} needs data.train_path=... (and data.val_path=... to evaluate)")
    if not train and d.val_path is None:
        raise CliError(f"data.kind={d.kind} needs data.val_path=... to evaluate")


def _train(cfg: Config, source: str, resume: bool) -> Optional[dict]:
    """Print the config, check the data paths and train; None (after one line on stderr) when
    training stopped on non-finite losses."""
    from .engine import NonFiniteLossError, train

    if _is_rank0():
        _print_config(cfg, source)
    _check_data_paths(cfg, train=True)
    try:
        return train(cfg, resume=resume)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def cmd_train(args: argparse.Namespace) -> int:
    config, overrides = _split_positionals(args.args, args.config)
    cfg, source = _resolve_config(config, overrides)
    result = _train(cfg, source, args.resume)
    if result is None:
        return EXIT_FAILED
    if _is_rank0():
        final = Path(cfg.output_dir) / "model_final.pth"
        print(f"trained to iteration {result['iteration']}; outputs in {result['output_dir']}")
        if final.is_file():
            print(f"weights: {final}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine import build_datasets, evaluate, resolve_device
    from .evaluation import format_ap_table, format_per_class_table

    config, overrides = _split_positionals(args.args, args.config)
    ckpt = _load_checkpoint(args.weights)
    saved = ckpt.get("config")
    if config is None and saved is not None:
        # No CONFIG: evaluate as the checkpoint was trained (its data, its model).
        cfg, source = apply_overrides(_config_from_dict(saved), overrides), f"{args.weights} (saved config)"
    else:
        cfg, source = _resolve_config(config, overrides)
    model_overrides = [o for o in overrides if o.strip().startswith("model.")]
    model, model_cfg = _model_from_checkpoint(ckpt, cfg, model_overrides)
    cfg = replace(cfg, model=model_cfg)
    _print_config(cfg, source + (" (model from the checkpoint)" if saved is not None and config is not None else ""))
    _check_data_paths(cfg, train=False)
    _, val_ds = build_datasets(cfg, train=False)
    if val_ds is None:
        raise CliError(f"no validation set: set data.val_path (data.kind={cfg.data.kind})")
    if model.num_classes != val_ds.num_classes:
        raise CliError(
            f"the model predicts {model.num_classes} classes but the dataset {val_ds.source} has "
            f"{val_ds.num_classes} ({', '.join(val_ds.class_names[:8])}{', ...' if val_ds.num_classes > 8 else ''}): "
            "wrong checkpoint for this dataset?"
        )
    device = resolve_device(cfg.train.device)
    metrics = evaluate(model.to(device), val_ds, cfg, device, args.max_images, results_path=args.results)
    n = len(val_ds) if args.max_images is None else min(args.max_images, len(val_ds))
    print(format_ap_table(metrics, title=f"COCO bbox AP of {args.weights} on {val_ds.source} ({n} images)"))
    if args.per_class:
        print()
        print(format_per_class_table(metrics, title="AP per class"))
    if args.results:
        print(f"COCO results JSON: {args.results}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------


def find_images(inputs: Sequence[str], exclude: Optional[Path] = None) -> list[Path]:
    """Image files named in `inputs`, or found (recursively, sorted) in the folders named there;
    files under `exclude` (the output folder) are skipped."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if exclude is not None:
                files = [q for q in files if not q.resolve().is_relative_to(exclude.resolve())]
            found += files
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return list(dict.fromkeys(found))


def _output_stems(images: Sequence[Path]) -> list[str]:
    """One output name per image: its stem, with -2, -3, ... for repeated stems."""
    seen: dict[str, int] = {}
    stems = []
    for p in images:
        n = seen[p.stem] = seen.get(p.stem, 0) + 1
        stems.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return stems


def _coco_category_names() -> list[str]:
    import torchvision

    return list(torchvision.models.detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def _predictor(args: argparse.Namespace):
    """(model, class names) for `predict`."""
    from .zoo import get_model, model_config

    if args.weights == TORCHVISION_COCO:
        try:
            model = get_model(args.model or "retinanet_r50_fpn", weights=TORCHVISION_COCO)
        except (RuntimeError, KeyError) as e:  # offline without the cached file; not an R50
            raise CliError(str(e).strip("'\"")) from None
        return model, _coco_category_names()  # labels are COCO category ids, as in torchvision
    ckpt = _load_checkpoint(args.weights)
    fallback = None
    if args.config is not None:
        fallback = load_config(args.config)
    elif args.model is not None:
        try:
            fallback = Config(model=model_config(args.model))
        except KeyError as e:
            raise CliError(str(e).strip("'\"")) from None
    model, model_cfg = _model_from_checkpoint(ckpt, fallback)
    return model, _checkpoint_class_names(ckpt, model_cfg.num_classes)


def detection_records(det: dict, class_names: Sequence[str], score_thresh: float) -> list[dict]:
    """JSON-ready detections with score >= score_thresh: [{"box" xyxy, "score", "label", "class_name"}]."""
    keep = det["scores"] >= score_thresh
    out = []
    for box, score, label in zip(det["boxes"][keep].tolist(), det["scores"][keep].tolist(), det["labels"][keep].tolist()):
        name = class_names[label] if 0 <= label < len(class_names) else f"class_{label}"
        out.append({"box": [round(v, 2) for v in box], "score": round(score, 4), "label": int(label), "class_name": name})
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.common import load_image
    from .engine import resolve_device
    from .visualize import draw_detections

    out = Path(args.out)
    images = find_images(args.inputs, exclude=out)
    if not images:
        raise CliError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(args.inputs)}")
    stems = _output_stems(images)
    for p, stem in zip(images, stems):
        if (out / f"{stem}.png").resolve() == p.resolve():
            raise CliError(f"--out {out} would overwrite the input image {p}: choose another folder")
    model, class_names = _predictor(args)
    model.score_thresh = args.score_thresh  # postprocessing drops lower scores before NMS and top-k
    device = resolve_device(args.device)
    model.to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    with torch.no_grad():
        for path, stem in zip(tqdm(images, desc="predict", unit="img"), stems):
            image = load_image(path)
            det = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in model([image.to(device)])[0].items()}
            records = detection_records(det, class_names, args.score_thresh)
            total += len(records)
            height, width = image.shape[-2:]
            picture = draw_detections(image, [r["box"] for r in records], [r["label"] for r in records],
                                      [r["score"] for r in records], class_names)
            picture.save(out / f"{stem}.png")
            result = {"image": str(path), "width": int(width), "height": int(height), "detections": records}
            (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(f"{len(images)} images, {total} detections with score >= {args.score_thresh}: "
          f"pictures and JSON in {out}/")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# data synth / data check
# ---------------------------------------------------------------------------------------------


def cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import ensure_synthetic

    start = time.perf_counter()
    try:
        root = ensure_synthetic(args.out, seed=args.seed, workers=args.workers,
                                num_train=args.train, num_val=args.val, image_size=args.image_size)
    except ValueError as e:  # an existing dataset made with other parameters
        raise CliError(str(e)) from None
    print(f"synthetic dataset ({args.train} train + {args.val} val images, seed {args.seed}): {root} "
          f"({time.perf_counter() - start:.1f} s)")
    print(f"train on it: retinanet train data.train_path={root}")
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, format_summary

    try:
        summary = check_dataset(
            args.path, args.kind, split=args.split, images_dir=args.images_dir, class_map=args.class_map,
            verify_images=args.verify_images, on_bad=args.on_bad,
        )  # fmt: skip
    except TypeError as e:  # an option the dataset kind does not take (--class-map for COCO, ...)
        raise CliError(str(e)) from None
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return EXIT_FAILED if summary["skipped"] else EXIT_OK


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine import build_datasets, synthetic_root
    from .evaluation import format_ap_table, format_per_class_table

    config, overrides = _split_positionals(args.args)
    if config is not None:
        raise CliError(f"demo takes KEY=VALUE overrides only, not a config file ({config}); use `retinanet train`")
    cfg, source = synth_config(overrides)
    if cfg.data.kind == "synth":
        # (a) the dataset, made once (atomically) and then reused; the same folder engine would use
        root = synthetic_root(cfg.data.train_path)
        cfg = apply_overrides(cfg, {"data.train_path": str(root)})
        print(f"synthetic dataset: {root}")
    # (b) train
    result = _train(cfg, source, args.resume)
    if result is None:
        return EXIT_FAILED
    out = Path(cfg.output_dir)
    final = out / "model_final.pth"
    if not final.is_file():
        raise CliError(f"training ended at iteration {result['iteration']} without {final}")
    # (d) detections on a few validation images, with the saved weights
    ckpt = _load_checkpoint(str(final))
    model, model_cfg = _model_from_checkpoint(ckpt, None)
    _, val_ds = build_datasets(cfg, train=False)
    picture = _demo_picture(model, val_ds, out / "detections.png", args.score_thresh)
    # (c) the result
    metrics = result["metrics"]
    print()
    print(format_ap_table(metrics, title=f"COCO bbox AP, {cfg.model.backbone} RetinaNet on the synthetic val split "
                                         f"({len(val_ds)} images, {result['iteration']} iterations)"))
    print()
    print(format_per_class_table(metrics, title="AP per class"))
    print()
    print(f"detections (score >= {args.score_thresh}): {picture}")
    print(f"weights: {final}")
    print(f"config: {out / 'config.yaml'}; metrics: {out / 'metrics.jsonl'}; TensorBoard: {out / 'tb'}")
    return EXIT_OK


@torch.no_grad()
def _demo_picture(model, dataset, path: Path, score_thresh: float) -> Path:
    """A 2 x 2 grid of the first validation images with objects, detections drawn."""
    from .visualize import draw_detections, save_grid

    with_objects = [i for i, r in enumerate(dataset.records) if len(r.boxes)] or list(range(len(dataset)))
    indices = with_objects[:DEMO_IMAGES]
    model.eval()
    images = [dataset[i][0] for i in indices]
    pictures, titles = [], []
    for i, image, det in zip(indices, images, model(images)):
        keep = det["scores"] >= score_thresh
        pictures.append(draw_detections(image, det["boxes"][keep], det["labels"][keep], det["scores"][keep],
                                        dataset.class_names))
        titles.append(f"{Path(dataset.image_info(i)['file_name']).name}: {int(keep.sum())} detections")
    return save_grid(pictures, path, titles=titles)


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------

_FMT = argparse.RawDescriptionHelpFormatter


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)

_OVERRIDES_HELP = "dotted overrides of the config, e.g. train.max_iter=1000 model.focal_gamma=0 train.lr_steps=[600,800]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retinanet", formatter_class=_FMT,
        description=_wrap("RetinaNet and the focal loss (Lin et al., 2017): train, evaluate, predict."),
        epilog="examples:\n"
               "  retinanet demo                               # synthetic data, train on CPU, AP table, detections.png\n"
               "  retinanet train configs/coco/retinanet_r50_fpn_1x.yaml data.train_path=... data.val_path=...\n"
               "  torchrun --nproc_per_node 8 -m retinanet train configs/coco/retinanet_r50_fpn_1x.yaml ...\n"
               "  retinanet <command> --help",
    )
    parser.add_argument("--version", action="version", version=f"retinanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train", help="train a model from a config", formatter_class=_FMT,
        usage="retinanet train [-h] [--resume] [CONFIG | --config CONFIG] [KEY=VALUE ...]",
        description=_wrap("Train RetinaNet. Checkpoints, config.yaml, metrics.jsonl, TensorBoard logs and "
                    "model_final.pth go to output_dir; the COCO AP table is printed at the end."),
        epilog="examples:\n"
               "  retinanet train                                     # configs/synth/retinanet_r18_synth.yaml\n"
               "  retinanet train configs/synth/retinanet_r18_synth.yaml train.max_iter=600 model.focal_gamma=0\n"
               "  retinanet train configs/coco/retinanet_r50_fpn_1x.yaml data.train_path=coco/annotations/instances_train2017.json \\\n"
               "      data.val_path=coco/annotations/instances_val2017.json\n"
               "  retinanet train - data.kind=csv data.train_path=ann.csv data.class_map=classes.csv   # '-': paper defaults\n"
               "  retinanet train configs/synth/retinanet_r18_synth.yaml --resume   # continue from output_dir/last_checkpoint.pth\n"
               "  torchrun --nproc_per_node 2 -m retinanet train configs/synth/retinanet_r18_synth.yaml",
    )
    p.add_argument("args", nargs="*", metavar="CONFIG | KEY=VALUE",
                   help="CONFIG: a YAML file (default: configs/synth/retinanet_r18_synth.yaml; '-': the paper's "
                        "defaults); KEY=VALUE: " + _OVERRIDES_HELP)
    p.add_argument("--config", metavar="CONFIG", help="the YAML file, as an option (same as the positional CONFIG)")
    p.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint.pth")
    p.set_defaults(func=cmd_train, takes_overrides=True)

    p = sub.add_parser(
        "eval", help="COCO AP of a checkpoint on a validation set", formatter_class=_FMT,
        usage="retinanet eval [-h] --weights W [--results JSON] [--per-class] [--max-images N] [CONFIG | --config CONFIG] [KEY=VALUE ...]",
        description=_wrap("Evaluate a checkpoint on the validation set of CONFIG (default: the config saved in the "
                    "checkpoint). The model is built from the checkpoint's saved config when it has one "
                    "(model.* overrides still apply), else from CONFIG."),
        epilog="examples:\n"
               "  retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --per-class\n"
               "  retinanet eval configs/coco/retinanet_r50_fpn_1x.yaml --weights model_final.pth \\\n"
               "      data.val_path=coco/annotations/instances_val2017.json --results detections.json\n"
               "  retinanet eval --weights model_final.pth model.score_thresh=0.01 eval.backend=pycocotools",
    )
    p.add_argument("args", nargs="*", metavar="CONFIG | KEY=VALUE",
                   help="CONFIG: a YAML file ('-': the paper's defaults); KEY=VALUE: " + _OVERRIDES_HELP)
    p.add_argument("--weights", required=True, metavar="W", help="a checkpoint of this library (model_final.pth, ...)")
    p.add_argument("--results", metavar="JSON", help="also write the detections as a COCO results JSON file")
    p.add_argument("--per-class", action="store_true", help="also print the AP of each class")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--config", metavar="CONFIG", help="the YAML file, as an option (same as the positional CONFIG)")
    p.set_defaults(func=cmd_eval, takes_overrides=True)

    p = sub.add_parser(
        "predict", help="draw and save detections on image files", formatter_class=_FMT,
        description=_wrap("Detect objects in images: for each image, OUT/<stem>.png with the boxes drawn and "
                    "OUT/<stem>.json with {image, width, height, detections: [{box xyxy, score, label, class_name}]}."),
        epilog="examples:\n"
               "  retinanet predict --weights outputs/synth/retinanet_r18_synth/model_final.pth val/ --out preds\n"
               "  retinanet predict --weights torchvision-coco street.jpg photos/ --out preds --score-thresh 0.5\n"
               "  retinanet predict --weights state_dict.pth --model retinanet_r50_fpn a.jpg --out preds",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (.jpg .jpeg .png .bmp) or folders (searched recursively)")
    p.add_argument("--weights", required=True, metavar="W",
                   help=f"a checkpoint of this library, or '{TORCHVISION_COCO}' (torchvision's COCO R50 weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("--score-thresh", type=float, default=0.3, metavar="S", help="keep detections with score >= S (default 0.3)")
    p.add_argument("--config", metavar="CONFIG", help="the model config, for a checkpoint without a saved config")
    p.add_argument("--model", metavar="NAME", help="a named variant (retinanet_r50_fpn, ...), for a checkpoint without a saved config")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "data", help="make or check a dataset", formatter_class=_FMT,
        description=_wrap("Datasets: `data synth` writes the built-in synthetic dataset, `data check` describes one."),
        epilog="examples:\n  retinanet data synth --out data/synth\n  retinanet data check data/synth/annotations/instances_val.json",
    )
    data = p.add_subparsers(dest="data_command", metavar="{synth,check}", required=True)

    q = data.add_parser(
        "synth", help="write the synthetic shapes dataset (COCO format)", formatter_class=_FMT,
        description=_wrap("Write the synthetic dataset: DIR/train, DIR/val, DIR/annotations/instances_{train,val}.json. "
                    "An existing complete dataset with the same parameters is reused."),
        epilog="examples:\n  retinanet data synth --out data/synth\n"
               "  retinanet data synth --out /tmp/tiny --train 8 --val 4 --seed 1\n"
               "  retinanet train data.train_path=data/synth",
    )
    q.add_argument("--out", required=True, metavar="DIR", help="the dataset folder (created)")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    q.add_argument("--train", type=int, default=600, metavar="N", help="training images (default 600)")
    q.add_argument("--val", type=int, default=100, metavar="M", help="validation images (default 100)")
    q.add_argument("--image-size", type=int, default=320, metavar="PX", help="square image side (default 320)")
    q.add_argument("--workers", type=int, metavar="W", help="processes drawing images (default: the CPUs)")
    q.set_defaults(func=cmd_data_synth)

    q = data.add_parser(
        "check", help="load a dataset and describe it", formatter_class=_FMT,
        description=_wrap("Load a dataset (COCO JSON or folder, VOC folder, CSV file) and print images, boxes per "
                    "class, box sizes and any bad entries. Exit status 1 when entries were skipped, 2 when "
                    "the dataset cannot be loaded."),
        epilog="examples:\n"
               "  retinanet data check coco/annotations/instances_val2017.json --images-dir coco/val2017\n"
               "  retinanet data check VOCdevkit/VOC2007 --split test\n"
               "  retinanet data check annotations.csv --class-map classes.csv\n"
               "  retinanet data check data/synth --split val --on-bad error",
    )
    q.add_argument("path", metavar="PATH", help="a COCO .json or folder, a VOC folder, or a CSV annotations file")
    q.add_argument("--kind", choices=("coco", "voc", "csv"), help="default: detected from PATH")
    q.add_argument("--split", help="COCO folder: annotations/instances_<split>.json; VOC: ImageSets/Main/<split>.txt")
    q.add_argument("--images-dir", metavar="D", help="COCO: the image folder (default: inferred)")
    q.add_argument("--class-map", metavar="F", help="CSV: the class_name,id file")
    q.add_argument("--on-bad", choices=("skip", "error"), default="skip",
                   help="skip bad entries and count them (default), or stop at the first")
    q.add_argument("--verify-images", action="store_true", help="decode every image once")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_data_check)

    p = sub.add_parser(
        "demo", help="synthetic data -> train -> COCO AP table -> detections.png", formatter_class=_FMT,
        usage="retinanet demo [-h] [--resume] [--score-thresh S] [KEY=VALUE ...]",
        description=_wrap("The main job: make sure the synthetic dataset exists, train a ResNet-18 RetinaNet on it "
                    "with configs/synth/retinanet_r18_synth.yaml, print the COCO AP table of the validation "
                    "split and draw the detections on 4 validation images into output_dir/detections.png."),
        epilog="examples:\n"
               "  retinanet demo\n"
               "  retinanet demo train.max_iter=100 output_dir=outputs/quick\n"
               "  retinanet demo train.device=cuda",
    )
    p.add_argument("args", nargs="*", metavar="KEY=VALUE", help=_OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint.pth")
    p.add_argument("--score-thresh", type=float, default=0.3, metavar="S", help="draw detections with score >= S (default 0.3)")
    p.set_defaults(func=cmd_demo, takes_overrides=True)
    return parser


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("retinanet").setLevel(logging.INFO)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        # parse_known_args, so that KEY=VALUE may also follow options (`train cfg.yaml --resume a=b`)
        args, extra = parser.parse_known_args(argv)
        unknown = [s for s in extra if not (getattr(args, "takes_overrides", False) and "=" in s and not s.startswith("-"))]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if extra:
            args.args = list(args.args) + extra
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    _configure_logging()
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
    except (CliError, DatasetError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted" + ("; continue with --resume" if args.command in ("train", "demo") else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


__all__ = ["build_parser", "detection_records", "find_images", "main", "synth_config"]

if __name__ == "__main__":  # python -m retinanet.cli (python -m retinanet is the same)
    sys.exit(main())

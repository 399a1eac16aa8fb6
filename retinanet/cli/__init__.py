"""The `retinanet` command (also `python -m retinanet`, which torchrun runs):

    retinanet demo                                      synthetic data -> train -> AP table -> detections.png
    retinanet train [CONFIG] [KEY=VALUE ...] [--resume]
    retinanet eval [CONFIG] --weights W [KEY=VALUE ...] [--results out.json] [--per-class]
    retinanet predict --weights W INPUT... --out DIR [--score-thresh 0.3] [--coco F] [--save-video]
    retinanet export --weights W --format onnx|torchscript --out F
    retinanet data synth --out DIR [--seed S --train N --val M]
    retinanet data check PATH [--images-dir D] [--class-map F] [--on-bad skip]
    retinanet data show DATASET --out DIR [--config CONFIG] [KEY=VALUE ...]
    retinanet analyze anchors DATASET [--out PNG] [--config CONFIG] [KEY=VALUE ...]
    retinanet analyze loss-cdf --weights W [--out PNG]           Fig. 4
    retinanet experiment TABLE [--scale mini|paper] [KEY=VALUE ...]   Table 1 (a)-(e), experiments/README.md
    retinanet figure fig1|fig2 [--out PNG]
    retinanet benchmark [--quick] [--only SECTIONS] [--device cuda] [--out DIR]   (benchmarks/README.md)

Overrides are dotted `key=value` strings (retinanet.config). Exit status: 0 success; 1 a run
that stopped (non-finite losses), a dataset check that skipped entries or an export that differs
from the eager model; 2 bad usage, a config error or a dataset / file error (a one-line message,
no traceback); 130 interrupted.
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

from .. import __version__
from ..config import (
    Config,
    ConfigError,
    apply_overrides,
    diff_from_defaults,
    flatten,
    format_overrides,
    load_config,
)
from ..data.common import DatasetError

# configs/ lives beside the package in a source checkout (and an editable install).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
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
    from ..model.build import build_model

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
        from ..data.synth import CLASSES

        if len(CLASSES) == num_classes:
            return list(CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def _load_checkpoint(path: str) -> dict:
    from ..engine.trainer import load_checkpoint

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


def _train(cfg: Config, source: str, resume: bool, print_final: bool = True) -> Optional[dict]:
    """Print the config, check the data paths and train; None (after one line on stderr) when
    training stopped on non-finite losses. print_final False: the caller prints the final AP."""
    from ..engine.trainer import NonFiniteLossError, train

    if _is_rank0():
        _print_config(cfg, source)
    _check_data_paths(cfg, train=True)
    try:
        return train(cfg, resume=resume, print_final=print_final)
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
    from ..engine.trainer import build_datasets, evaluate, resolve_device
    from ..engine.evaluation import format_ap_table, format_per_class_table

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
    from ..weights.zoo import get_model, model_config

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


def _split_videos(inputs: Sequence[str]) -> tuple[list[str], list[Path]]:
    """(image files and folders, video files) of predict's INPUTs."""
    from ..inference.video import is_video

    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    return [p for p in inputs if Path(p) not in videos], videos


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.common import load_image
    from ..engine.trainer import resolve_device
    from ..inference.predict import CocoPredictions, batched, detect, predict_video
    from ..inference.video import VideoError, open_video
    from ..utils.visualize import draw_detections

    if args.batch_size < 1:
        raise CliError(f"--batch-size {args.batch_size}: expected >= 1")
    out = Path(args.out)
    image_inputs, videos = _split_videos(args.inputs)
    images = find_images(image_inputs, exclude=out) if image_inputs else []
    if not images and not videos:
        raise CliError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or videos in {' '.join(args.inputs)}")
    stems = _output_stems(images)
    for p, stem in zip(images, stems):
        if (out / f"{stem}.png").resolve() == p.resolve():
            raise CliError(f"--out {out} would overwrite the input image {p}: choose another folder")
    try:  # every video readable before any work starts
        sources = [open_video(v) for v in videos]
    except VideoError as e:
        raise CliError(str(e)) from None
    model, class_names = _predictor(args)
    model.score_thresh = args.score_thresh  # postprocessing drops lower scores before NMS and top-k
    device = resolve_device(args.device)
    model.to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    labels_are_ids = args.weights == TORCHVISION_COCO
    coco = CocoPredictions(class_names, labels_are_ids, {"description": "retinanet predict", "weights": args.weights,
                                                          "score_thresh": args.score_thresh}) if args.coco else None
    total = 0
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not images)
    for chunk in batched(zip(images, stems), args.batch_size):
        loaded = [load_image(path) for path, _ in chunk]
        for (path, stem), image, det in zip(chunk, loaded, detect(model, loaded, device)):
            records = detection_records(det, class_names, args.score_thresh)
            total += len(records)
            height, width = image.shape[-2:]
            if not args.no_pictures:
                picture = draw_detections(image, [r["box"] for r in records], [r["label"] for r in records],
                                          [r["score"] for r in records], class_names)
                picture.save(out / f"{stem}.png")
            result = {"image": str(path), "width": int(width), "height": int(height), "detections": records}
            (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
            if coco is not None:
                coco.add(str(path), width, height, records)
        bar.update(len(chunk))
    bar.close()
    if coco is not None:
        print(f"COCO-style JSON of the {len(images)} images: {coco.write(args.coco)}")
    if images:
        print(f"{len(images)} images, {total} detections with score >= {args.score_thresh}: "
              f"{'pictures and ' if not args.no_pictures else ''}JSON in {out}/")
    for source in sources:
        try:
            result = predict_video(model, device, source, out, class_names, args.score_thresh, detection_records,
                                   labels_are_ids, save_video=args.save_video, batch_size=args.batch_size)
        except VideoError as e:
            raise CliError(str(e)) from None
        print(f"{source.path}: {result['frames']} frames, {result['detections']} detections with score >= "
              f"{args.score_thresh}: {result['json']}" + (f", {result['video']}" if result["video"] else ""))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy.export import compare_detections, example_input, export_onnx, export_torchscript, run_onnx, onnx_session, unpad_detections

    model, _ = _predictor(args)
    model = model.cpu().eval()
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a folder: give the file to write (model.onnx, model.pt)")
    start = time.perf_counter()
    if args.format == "onnx":
        export_onnx(model, out, opset=args.opset, score_thresh=args.score_thresh, detections_per_img=args.detections_per_img)
    else:
        export_torchscript(model, out, score_thresh=args.score_thresh, detections_per_img=args.detections_per_img)
    score = model.score_thresh if args.score_thresh is None else args.score_thresh
    per_img = model.detections_per_img if args.detections_per_img is None else args.detections_per_img
    print(f"{args.format} model: {out} ({out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s); "
          f"input images (B, 3, H, W) float in [0, 1], any B, H, W; outputs boxes (B, {per_img}, 4), scores, "
          f"labels (-1: padding), num_detections; score_thresh {score:g}")
    if args.no_verify:
        return EXIT_OK
    # The exported graph against the eager model on two random images at the model's scale.
    images = example_input(model, batch=2, seed=1)
    saved = model.score_thresh, model.detections_per_img
    model.score_thresh, model.detections_per_img = score, per_img
    with torch.no_grad():
        eager = model(list(images))
    model.score_thresh, model.detections_per_img = saved
    if args.format == "onnx":
        got = run_onnx(onnx_session(out), images)
        runtime = "onnxruntime"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            traced = torch.jit.load(str(out))
        with torch.no_grad():
            got = unpad_detections(*traced(images))
        runtime = "torch.jit"
    c = compare_detections(eager, got)
    ok = c["same_counts"] and c["same_labels"] and c["max_box_diff"] <= 1e-2 and c["max_score_diff"] <= 1e-3
    print(f"check ({runtime} vs eager, 2 random {images.shape[2]}x{images.shape[3]} images): {c['detections']} detections, "
          f"same counts {c['same_counts']}, same labels {c['same_labels']}, max box diff {c['max_box_diff']:.2g} px, "
          f"max score diff {c['max_score_diff']:.2g}" + ("" if ok else "  MISMATCH"))
    return EXIT_OK if ok else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# data show / analyze anchors
# ---------------------------------------------------------------------------------------------


def _analysis_config(args: argparse.Namespace) -> Config:
    """The config whose model part (anchors, input scale, matcher) `data show` and `analyze
    anchors` use: --config (default: the paper's defaults) and KEY=VALUE overrides; a bare model
    option (anchor_sizes=[16,32,64,128,256]) means model.<option>."""
    from dataclasses import fields as dc_fields

    from ..model.config import ModelConfig

    model_keys = {f.name for f in dc_fields(ModelConfig)}
    overrides = []
    for item in args.args:
        if "=" not in item:
            raise CliError(f"unexpected argument {item!r}: expected KEY=VALUE overrides after the dataset")
        key = item.split("=", 1)[0].strip()
        overrides.append(f"model.{item.strip()}" if key in model_keys else item)
    return load_config(args.config, overrides)


def _analysis_dataset(args: argparse.Namespace):
    """The DATASET of `data show` / `analyze anchors`, bad entries skipped (and counted)."""
    from ..data import build_dataset
    from ..data.build import coco_splits

    split = args.split
    path = Path(args.dataset)
    if split is None and path.is_dir() and args.kind in (None, "coco"):
        splits = coco_splits(path)
        if len(splits) > 1 and "train" in splits:
            split = "train"  # the anchors are for training
    try:
        return build_dataset(args.kind, args.dataset, split=split, images_dir=args.images_dir, class_map=args.class_map, on_bad="skip")
    except TypeError as e:  # an option the dataset kind does not take
        raise CliError(str(e)) from None


def cmd_data_show(args: argparse.Namespace) -> int:
    from ..diagnostics.show import show_images

    cfg = _analysis_config(args)
    dataset = _analysis_dataset(args)
    if args.index:
        bad = [i for i in args.index if not 0 <= i < len(dataset)]
        if bad:
            raise CliError(f"--index {bad[0]}: the dataset has {len(dataset)} images (0..{len(dataset) - 1})")
        indices = list(dict.fromkeys(args.index))
    else:
        with_boxes = [i for i, r in enumerate(dataset.records) if len(r.boxes)]
        indices = with_boxes[: args.num]
    if not indices:
        raise CliError(f"no image with boxes in {dataset.source}")
    m = cfg.model
    print(f"{dataset.source}: {len(indices)} of {len(dataset)} images; anchors {tuple(m.anchor_sizes)} x "
          f"{m.scales_per_octave} scales x ratios {tuple(m.aspect_ratios)}, input {m.min_size}/{m.max_size}, "
          f"positive at IoU >= {m.fg_iou_thresh:g}" + (" (+ low-quality matches)" if m.allow_low_quality_matches else ""))
    results = show_images(dataset, m, args.out, indices)
    boxes = unreached = 0
    for r in results:
        boxes += r["boxes"]
        unreached += r["unreached"]
        print(f"  {r['file_name']}: {r['boxes']} boxes, positive anchors per box {r['positives']}"
              + (f", {r['unreached']} without an anchor at IoU >= {m.fg_iou_thresh:g}" if r["unreached"] else "")
              + f" -> {r['path']}")
    print(f"{boxes} boxes, {unreached} without an anchor at IoU >= {m.fg_iou_thresh:g} (red, crossed): pictures in {args.out}/")
    return EXIT_OK


def cmd_analyze_anchors(args: argparse.Namespace) -> int:
    from ..diagnostics.anchors import coverage_report, format_report, plot_report, public

    cfg = _analysis_config(args)
    dataset = _analysis_dataset(args)
    if not any(len(r.boxes) for r in dataset.records):
        raise CliError(f"no boxes in {dataset.source}")
    if args.sample < 1:
        raise CliError(f"--sample {args.sample}: expected >= 1")
    start = time.perf_counter()
    report = coverage_report(dataset, cfg.model, search=not args.no_search, sample=args.sample)
    print(format_report(report))
    plot = plot_report(report, args.out)
    print(f"plot: {plot}" + (f"; JSON: {args.json}" if args.json else "") + f" ({time.perf_counter() - start:.1f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(public(report), indent=1))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# experiment / figure / analyze loss-cdf
# ---------------------------------------------------------------------------------------------


def cmd_experiment(args: argparse.Namespace) -> int:
    from ..tools.experiments import run_table

    try:
        run_table(args.table, args.scale, args.args, dry_run=args.dry_run, retime=args.retime)
    except ConfigError as e:
        raise CliError(str(e)) from None
    return EXIT_OK


def cmd_figure(args: argparse.Namespace) -> int:
    from ..tools.experiments import RESULTS_DIR
    from ..tools.figures import plot_fig1, plot_fig2

    if args.figure == "fig1":
        out = plot_fig1(args.out or "experiments/figures/fig1_focal_loss.png")
    else:
        results = Path(args.results or RESULTS_DIR / "speed_mini.json")
        if not results.is_file():
            raise CliError(f"{results}: no speed table results; run `retinanet experiment speed --scale mini` first")
        try:
            out = plot_fig2(results, args.out or "experiments/figures/fig2_speed_accuracy.png")
        except ValueError as e:
            raise CliError(str(e)) from None
    print(f"figure: {out}")
    return EXIT_OK


def cmd_analyze_loss_cdf(args: argparse.Namespace) -> int:
    from ..engine.trainer import build_datasets, resolve_device
    from ..tools.figures import collect_pt, plot_fig4

    ckpt = _load_checkpoint(args.weights)
    saved = ckpt.get("config")
    if saved is None:
        raise CliError(f"{args.weights} holds no config: use a checkpoint written by `retinanet train`")
    cfg = apply_overrides(_config_from_dict(saved), args.args)
    model, model_cfg = _model_from_checkpoint(ckpt, cfg, [])
    cfg = replace(cfg, model=model_cfg)
    _, val_ds = build_datasets(cfg, train=False)
    if val_ds is None:
        raise CliError(f"no validation set: set data.val_path (data.kind={cfg.data.kind})")
    device = resolve_device(cfg.train.device)
    pos, neg = collect_pt(model.to(device), val_ds, device, max_images=args.max_images)
    gammas = tuple(float(g) for g in args.gammas.split(","))
    out, summary = plot_fig4(pos, neg, args.out, gammas)
    print(f"{len(pos):,} positive and {len(neg):,} negative samples from {min(len(val_ds), args.max_images)} images of {val_ds.source}")
    print("| γ | share of the negatives' loss in their hardest 1% | share of the positives' loss in their hardest 20% |")
    print("|---|---|---|")
    for g, s in summary.items():
        print(f"| {g} | {s['negatives_hardest_1pct_share']:.3f} | {s['positives_hardest_20pct_share']:.3f} |")
    print(f"figure: {out}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"positives": len(pos), "negatives": len(neg), "gammas": summary}, indent=1))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# data synth / data check
# ---------------------------------------------------------------------------------------------


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ..data.synth import ensure_synthetic

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
    from ..data.check import check_dataset, format_summary

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
    from ..engine.trainer import build_datasets, synthetic_root
    from ..engine.evaluation import format_ap_table, format_per_class_table

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
    result = _train(cfg, source, args.resume, print_final=False)
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
    from ..utils.visualize import draw_detections, save_grid

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


def _dataset_options(q: argparse.ArgumentParser) -> None:
    """The dataset options of `data show` and `analyze anchors` (as `data check`), and --config."""
    q.add_argument("--config", metavar="CONFIG", help="the YAML config whose model options apply (default: the paper's defaults)")
    q.add_argument("--kind", choices=("coco", "voc", "csv"), help="default: detected from DATASET")
    q.add_argument("--split", help="COCO folder: annotations/instances_<split>.json (default train when there are several); "
                                   "VOC: ImageSets/Main/<split>.txt")
    q.add_argument("--images-dir", metavar="D", help="COCO: the image folder (default: inferred)")
    q.add_argument("--class-map", metavar="F", help="CSV: the class_name,id file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retinanet", formatter_class=_FMT,
        description=_wrap("RetinaNet and the focal loss (Lin et al., 2017): train, evaluate, predict, export, analyse."),
        epilog="examples:\n"
               "  retinanet demo                               # synthetic data, train on CPU, AP table, detections.png\n"
               "  retinanet train configs/coco/retinanet_r50_fpn_1x.yaml data.train_path=... data.val_path=...\n"
               "  torchrun --nproc_per_node 8 -m retinanet train configs/coco/retinanet_r50_fpn_1x.yaml ...\n"
               "  retinanet export --weights model_final.pth --format onnx --out retinanet.onnx\n"
               "  retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml\n"
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
        "predict", help="detect objects in images, folders and videos", formatter_class=_FMT,
        description=_wrap("Detect objects in images, folders of images (searched recursively) and video files, with a "
                    "progress bar. For each image, OUT/<stem>.png with the boxes, class names and scores drawn and "
                    "OUT/<stem>.json with {image, width, height, detections: [{box xyxy, score, label, class_name}]}; "
                    "--coco FILE also writes all of them as one COCO-style JSON (annotations with a score). For "
                    "each video, OUT/<stem>_detections.json (COCO-style, one image per frame with its frame_index "
                    "and timestamp) and, with --save-video, the annotated video. Animated .gif/.webp are read with "
                    "Pillow; .mp4 .avi .mov .mkv .webm .m4v with PyAV."),
        epilog="examples:\n"
               "  retinanet predict --weights outputs/synth/retinanet_r18_synth/model_final.pth val/ --out preds\n"
               "  retinanet predict --weights torchvision-coco street.jpg photos/ --out preds --score-thresh 0.5\n"
               "  retinanet predict --weights model_final.pth photos/ --out preds --coco preds/detections.json --no-pictures\n"
               "  retinanet predict --weights model_final.pth clip.mp4 --out preds --save-video --batch-size 4\n"
               "  retinanet predict --weights state_dict.pth --model retinanet_r50_fpn a.jpg --out preds",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (.jpg .jpeg .png .bmp), folders of them (searched recursively) or video files "
                        "(.gif .webp .mp4 .avi .mov .mkv .webm .m4v)")
    p.add_argument("--weights", required=True, metavar="W",
                   help=f"a checkpoint of this library, or '{TORCHVISION_COCO}' (torchvision's COCO R50 weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    p.add_argument("--score-thresh", type=float, default=0.3, metavar="S", help="keep detections with score >= S (default 0.3)")
    p.add_argument("--config", metavar="CONFIG", help="the model config, for a checkpoint without a saved config")
    p.add_argument("--model", metavar="NAME", help="a named variant (retinanet_r50_fpn, ...), for a checkpoint without a saved config")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images or frames per forward pass (default 1)")
    p.add_argument("--coco", metavar="FILE", help="also write the image detections as one COCO-style JSON file")
    p.add_argument("--no-pictures", action="store_true", help="write no annotated PNG per image (JSON only)")
    p.add_argument("--save-video", action="store_true",
                   help="also write each video annotated: OUT/<stem>_detections.mp4 (.gif/.webp for those inputs)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="export a model to ONNX or TorchScript, NMS included", formatter_class=_FMT,
        description=_wrap("Export a model as one graph from an image batch to detections: preprocessing (resize, "
                    "normalisation, padding), backbone, FPN, head, anchors, box decoding and class-wise NMS, all "
                    "inside (standard ONNX operators; NonMaxSuppression for NMS), with dynamic batch size and image "
                    "size. Input `images` (B, 3, H, W) float32 RGB in [0, 1]; outputs `boxes` (B, D, 4) xyxy in "
                    "input pixels, `scores` (B, D), `labels` (B, D) int64 with -1 for padding, `num_detections` "
                    "(B,), D = detections per image. The export is then checked against the eager model "
                    "(onnxruntime or torch.jit) on two random images; exit status 1 if they differ."),
        epilog="examples:\n"
               "  retinanet export --weights outputs/synth/retinanet_r18_synth/model_final.pth --format onnx --out retinanet.onnx\n"
               "  retinanet export --weights torchvision-coco --format onnx --out retinanet_r50_coco.onnx --score-thresh 0.3\n"
               "  retinanet export --weights model_final.pth --format torchscript --out retinanet.pt",
    )
    p.add_argument("--weights", required=True, metavar="W",
                   help=f"a checkpoint of this library, or '{TORCHVISION_COCO}' (torchvision's COCO R50 weights)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx (.onnx) or torchscript (traced, .pt)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--score-thresh", type=float, metavar="S", help="the graph's score threshold (default: the model's)")
    p.add_argument("--detections-per-img", type=int, metavar="D", help="the outputs' second dimension (default: the model's)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    p.add_argument("--config", metavar="CONFIG", help="the model config, for a checkpoint without a saved config")
    p.add_argument("--model", metavar="NAME", help="a named variant (retinanet_r50_fpn, ...), for a checkpoint without a saved config")
    p.add_argument("--no-verify", action="store_true", help="skip the check against the eager model")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "data", help="make, check or show a dataset", formatter_class=_FMT,
        description=_wrap("Datasets: `data synth` writes the built-in synthetic dataset, `data check` describes one, "
                    "`data show` draws its ground truth with the anchors training would assign."),
        epilog="examples:\n  retinanet data synth --out data/synth\n  retinanet data check data/synth/annotations/instances_val.json\n"
               "  retinanet data show data/synth --out show/",
    )
    data = p.add_subparsers(dest="data_command", metavar="{synth,check,show}", required=True)

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

    q = data.add_parser(
        "show", help="draw ground truth with the anchors that would be its positives", formatter_class=_FMT,
        usage="retinanet data show [-h] DATASET --out DIR [--num N | --index I ...] [--config CONFIG] [KEY=VALUE ...]",
        description=_wrap("Draw images of a dataset with their ground-truth boxes and, for each box, the anchors that "
                    "training would make its positives (the model's resize, anchors and matcher: IoU >= "
                    "model.fg_iou_thresh, thin outlines; low-quality matches dotted). Boxes that no anchor reaches at "
                    "that IoU are drawn red and crossed, with their best IoU. One PNG per image in DIR. The anchors "
                    "and input scale come from --config (default: the paper's) and KEY=VALUE overrides."),
        epilog="examples:\n"
               "  retinanet data show data/synth --config configs/synth/retinanet_r18_synth.yaml --out show/\n"
               "  retinanet data show coco/annotations/instances_val2017.json --out show/ --num 4 anchor_sizes=[16,32,64,128,256]\n"
               "  retinanet data show VOCdevkit/VOC2007 --split test --index 0 --index 7 --out show/",
    )
    q.add_argument("dataset", metavar="DATASET", help="a COCO .json or folder, a VOC folder, or a CSV annotations file")
    q.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="config overrides; a bare model option means model.<option> (anchor_sizes=[16,32,64,128,256])")
    q.add_argument("--out", required=True, metavar="DIR", help="the folder of the pictures (created)")
    q.add_argument("--num", type=int, default=8, metavar="N", help="the first N images with boxes (default 8)")
    q.add_argument("--index", type=int, action="append", metavar="I", help="draw image I (0-based; repeatable) instead")
    _dataset_options(q)
    q.set_defaults(func=cmd_data_show, takes_overrides=True)

    p = sub.add_parser(
        "analyze", help="anchor coverage of a dataset; the loss distribution of a trained model (Fig. 4)", formatter_class=_FMT,
        description=_wrap("Analyses: `analyze anchors` measures how many ground-truth boxes the anchors can reach; "
                    "`analyze loss-cdf` draws the paper's Fig. 4 for a trained model."),
        epilog="examples:\n  retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml",
    )
    analyze = p.add_subparsers(dest="analyze_command", metavar="{anchors,loss-cdf}", required=True)
    q = analyze.add_parser(
        "anchors", help="anchor coverage by box size and aspect ratio, and better anchors", formatter_class=_FMT,
        usage="retinanet analyze anchors [-h] DATASET [--out PNG] [--json FILE] [--no-search] [--config CONFIG] [KEY=VALUE ...]",
        description=_wrap("For the configured anchors (--config, default the paper's, and KEY=VALUE overrides), the share "
                    "of the dataset's ground-truth boxes that have at least one anchor at IoU >= model.fg_iou_thresh "
                    "(0.5), i.e. at least one real positive in training, at the model's input scale: overall, by "
                    "COCO size bucket (small < 32², medium, large > 96², original pixels) and by aspect ratio h/w. "
                    "Then a grid search over anchor sizes (the P3 size, doubling per level), scales per octave and "
                    "aspect ratios proposes the setting with the highest coverage and prints its overrides. Writes "
                    "a plot (PNG) of both."),
        epilog="examples:\n"
               "  retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml --out coverage.png\n"
               "  retinanet analyze anchors coco/annotations/instances_train2017.json --json coverage.json\n"
               "  retinanet analyze anchors data/synth model.min_size=320 model.max_size=320 anchor_sizes=[16,32,64,128,256]",
    )
    q.add_argument("dataset", metavar="DATASET", help="a COCO .json or folder, a VOC folder, or a CSV annotations file")
    q.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="config overrides; a bare model option means model.<option> (anchor_sizes=[16,32,64,128,256])")
    q.add_argument("--out", default="anchor_coverage.png", metavar="PNG", help="the plot (default anchor_coverage.png)")
    q.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    q.add_argument("--no-search", action="store_true", help="measure the configured anchors only")
    q.add_argument("--sample", type=int, default=5000, metavar="N",
                   help="boxes each search candidate is scored on (default 5000; the proposal is then measured on all)")
    _dataset_options(q)
    q.set_defaults(func=cmd_analyze_anchors, takes_overrides=True)

    q = analyze.add_parser(
        "loss-cdf", help="Fig. 4: the CDF of the normalized loss of a trained model", formatter_class=_FMT,
        usage="retinanet analyze loss-cdf [-h] --weights W [--out PNG] [--gammas G,...] [--max-images N] [KEY=VALUE ...]",
        description=_wrap("The paper's Fig. 4 (§5.1, analysis of the focal loss): run a trained model (its saved config "
                    "says which data) on validation images, take p_t of the positive samples (the ground-truth class "
                    "output of each foreground anchor) and of the negative samples (every class output of each "
                    "background anchor), compute the focal loss of each for several γ, normalize it to sum to one, "
                    "and plot its cumulative distribution from the lowest loss to the highest."),
        epilog="examples:\n  retinanet analyze loss-cdf --weights outputs/synth/retinanet_r18_synth/model_final.pth --out fig4.png",
    )
    q.add_argument("args", nargs="*", metavar="KEY=VALUE", help="overrides of the checkpoint's saved config, e.g. data.val_path=...")
    q.add_argument("--weights", required=True, metavar="W", help="a checkpoint written by `retinanet train`")
    q.add_argument("--out", default="experiments/figures/fig4_loss_cdf.png", metavar="PNG", help="the figure")
    q.add_argument("--gammas", default="0,0.5,1,2", metavar="G,...", help="the γ values (default 0,0.5,1,2)")
    q.add_argument("--max-images", type=int, default=100, metavar="N", help="validation images to sample (default 100)")
    q.add_argument("--json", metavar="FILE", help="also write the loss shares as JSON")
    q.set_defaults(func=cmd_analyze_loss_cdf, takes_overrides=True)

    p = sub.add_parser(
        "experiment", help="reproduce a table of the paper (Table 1 (a)-(e))", formatter_class=_FMT,
        usage="retinanet experiment [-h] TABLE [--scale mini|paper] [--dry-run] [KEY=VALUE ...]",
        description=_wrap("Train and evaluate every row of one of the paper's ablation tables (experiments/tables/"
                    "TABLE.yaml: alpha = 1(a), gamma = 1(b), anchors = 1(c), ohem = 1(d), speed = 1(e)) and write "
                    "experiments/results/TABLE_SCALE.md and .json with the measured numbers beside the paper's. "
                    "Finished runs are cached by the hash of their resolved config (experiments/runs/): an "
                    "interrupted table resumes, and finished rows are not trained again. --scale paper uses the "
                    "paper's exact settings (COCO, 90k iterations of 16 images: run it under torchrun on GPUs)."),
        epilog="examples:\n"
               "  retinanet experiment gamma --scale mini\n"
               "  retinanet experiment alpha --scale mini data.train_path=my_coco_folder\n"
               "  torchrun --nproc_per_node 8 -m retinanet experiment anchors --scale paper\n"
               "  retinanet experiment ohem --scale paper --dry-run    # list the runs and their config hashes",
    )
    p.add_argument("table", metavar="TABLE",
                   help="alpha, gamma, anchors, ohem or speed (Table 1 (a)-(e)), or any other experiments/tables/TABLE.yaml")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE", help="overrides applied to every row, e.g. train.device=cuda")
    p.add_argument("--scale", choices=("mini", "paper"), default="mini", help="mini (synthetic data, CPU minutes) or paper")
    p.add_argument("--dry-run", action="store_true", help="list the runs without training")
    p.add_argument("--retime", action="store_true",
                   help="speed table: measure every row's ms/image again (all rows back to back; run it on a quiet machine)")
    p.set_defaults(func=cmd_experiment, takes_overrides=True)

    p = sub.add_parser(
        "figure", help="draw the paper's Fig. 1 or Fig. 2", formatter_class=_FMT,
        usage="retinanet figure [-h] {fig1,fig2} [--results JSON] [--out PNG]",
        description=_wrap("fig1: the focal loss against p_t for γ in {0, .5, 1, 2, 5}. fig2: AP against ms per image "
                    "from the speed table's results (default experiments/results/speed_mini.json). Fig. 4 needs a "
                    "trained model: `retinanet analyze loss-cdf`."),
        epilog="examples:\n  retinanet figure fig1\n  retinanet figure fig2 --results experiments/results/speed_mini.json --out fig2.png",
    )
    p.add_argument("figure", choices=("fig1", "fig2"))
    p.add_argument("--results", metavar="JSON", help="fig2: the speed table's results JSON")
    p.add_argument("--out", metavar="PNG", help="default experiments/figures/fig1_focal_loss.png or fig2_speed_accuracy.png")
    p.set_defaults(func=cmd_figure)

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

    # Listed here for `retinanet --help`; main() hands every word after "benchmark" to
    # retinanet.benchmark.main, which has its own parser (`retinanet benchmark --help`).
    sub.add_parser("benchmark", add_help=False, help="speed against torchvision's RetinaNet (benchmarks/README.md)")
    return parser


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("retinanet").setLevel(logging.INFO)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["benchmark"]:
        from ..tools.benchmark import main as benchmark_main

        return benchmark_main(argv[1:])
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

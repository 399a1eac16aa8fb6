"""`retinanet train`, `eval` and `demo`: a config in, a trained or evaluated model out."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

from ..config import Config, apply_overrides
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    FMT,
    OVERRIDES_HELP,
    CliError,
    add_fast_option,
    add_tile_options,
    check_data_paths,
    fast_model,
    load,
    print_config,
    read_checkpoint,
    resolve_config,
    split_positionals,
    synth_config,
    tile_spec,
    wrap,
)

DEMO_IMAGES = 4


def _train(cfg: Config, source: str, resume: bool, print_final: bool = True, overwrite: bool = False) -> Optional[dict]:
    """Print the config, check the data paths and train; None (after one line on stderr) when
    training stopped on non-finite losses. print_final False: the caller prints the final AP."""
    from ..engine import NonFiniteLossError, train

    print_config(cfg, source)
    check_data_paths(cfg, train=True)
    try:
        return train(cfg, resume=resume, print_final=print_final, overwrite=overwrite)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def cmd_train(args: argparse.Namespace) -> int:
    from ..engine import is_main

    config, overrides = split_positionals(args.args, args.config)
    cfg, source = resolve_config(config, overrides)
    result = _train(cfg, source, args.resume, overwrite=args.overwrite)
    if result is None:
        return EXIT_FAILED
    if is_main():
        final = Path(cfg.output_dir) / "model_final.pth"
        print(f"trained to iteration {result['iteration']}; outputs in {result['output_dir']}")
        if final.is_file():
            print(f"weights: {final}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data.build import build_datasets
    from ..engine import evaluate, format_ap_table, format_per_class_table, is_main, resolve_device

    config, overrides = split_positionals(args.args, args.config)
    _check_report_options(args)
    tiles = tile_spec(args)  # checked before the (long) loading
    ckpt = read_checkpoint(args.weights)
    saved = ckpt.get("config") is not None
    if config is None and saved:
        # No CONFIG: evaluate as the checkpoint was trained (its data, its model).
        loaded = load(ckpt, overrides=overrides)
        cfg, source = loaded.config, f"{args.weights} (saved config)"
    else:
        cfg, source = resolve_config(config, overrides)
        loaded = load(ckpt, config=cfg, overrides=[o for o in overrides if o.strip().startswith("model.")])
        cfg = dataclasses.replace(cfg, model=loaded.config.model)
        if saved:
            source += " (model from the checkpoint)"
    model = loaded.model
    print_config(cfg, source)
    check_data_paths(cfg, train=False)
    # The checkpoint's class list is the run's: the dataset must have it (or takes it, VOC / CSV).
    saved_names = ckpt.get("class_names")
    if not (isinstance(saved_names, list) and len(saved_names) == model.num_classes):
        saved_names = None
    _, val_ds = build_datasets(cfg, train=False, class_names=saved_names)
    if val_ds is None:
        raise CliError(f"no validation set: set data.val_path (data.kind={cfg.data.kind})")
    if model.num_classes != val_ds.num_classes:
        names = ", ".join(val_ds.class_names[:8]) + (", ..." if val_ds.num_classes > 8 else "")
        raise CliError(
            f"the model predicts {model.num_classes} classes but the dataset {val_ds.source} has "
            f"{val_ds.num_classes} ({names}): wrong checkpoint for this dataset?"
        )
    device = resolve_device(cfg.train.device)
    # The report is built from the results file: with --report and no --results it goes in DIR.
    results_path = args.results or (str(Path(args.report) / "detections.json") if args.report else None)
    metrics = evaluate(
        fast_model(model.to(device), args),
        val_ds,
        cfg,
        device,
        args.max_images,
        results_path=results_path,
        tiling=tiles,
    )
    n = len(val_ds) if args.max_images is None else min(args.max_images, len(val_ds))
    if tiles is not None:
        print(
            f"tiled: {tiles.size} px tiles at native scale, overlap {tiles.overlap:g}"
            + (", plus the full image" if tiles.full_image else "")
        )
    print(format_ap_table(metrics, title=f"COCO bbox AP of {args.weights} on {val_ds.source} ({n} images)"))
    if args.per_class:
        print()
        print(format_per_class_table(metrics, title="AP per class"))
    if args.results:
        print(f"COCO results JSON: {args.results}")
    if args.report and is_main():
        _eval_report(args, cfg, val_ds, n, results_path)
    return EXIT_OK


def _check_report_options(args: argparse.Namespace) -> None:
    """eval's --report / --score-thresh, checked before the (long) evaluation."""
    if args.score_thresh is not None and not args.report:
        raise CliError("--score-thresh sets the report's threshold: give --report DIR too")
    if args.score_thresh is not None and not 0.0 <= args.score_thresh <= 1.0:
        raise CliError(f"--score-thresh {args.score_thresh}: expected a score in [0, 1]")
    if args.report and Path(args.report).exists() and not Path(args.report).is_dir():
        raise CliError(f"--report {args.report} is a file: give a folder")


def _eval_report(args: argparse.Namespace, cfg: Config, val_ds, num_images: int, results_path: str) -> None:
    """The evaluation report of the results just written (retinanet/engine/report.py)."""
    import json

    from ..diagnostics.eval_report import write_report
    from ..engine.report import DEFAULT_SCORE_THRESH, build_report

    thresh = DEFAULT_SCORE_THRESH if args.score_thresh is None else args.score_thresh
    floor = cfg.model.score_thresh
    info = {"weights": args.weights, "dataset": str(val_ds.source), "model_score_thresh": floor}
    results = json.loads(Path(results_path).read_text())
    report = build_report(val_ds.coco_gt(), results, val_ds.image_ids[:num_images], thresh, info)
    written = write_report(report, args.report)
    at, best = report["overall"]["at_thresh"], report["overall"]["best"]
    print(
        f"\nat score >= {thresh:g} (IoU 0.5, all classes): precision {_num(at['precision'])}, recall "
        f"{_num(at['recall'])}, F1 {_num(at['f1'])}"
    )
    if best["score_thresh"] is not None:
        f1 = f"F1 {best['f1']:.3f}, precision {_num(best['precision'])}, recall {_num(best['recall'])}"
        print(f"F1-optimal score threshold {best['score_thresh']:.4f}: {f1} (predict --score-thresh best:DIR)")
    if thresh < floor:
        print(f"note: the model dropped scores below model.score_thresh={floor:g}: the report sees none of them")
    print(f"evaluation report: {written['index']} ({written['html'].name}, {written['report'].name}, pictures)")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cmd_demo(args: argparse.Namespace) -> int:
    from ..data.build import build_datasets, synthetic_root
    from ..engine import format_ap_table, format_per_class_table
    from ..inference.predict import detections_grid

    config, overrides = split_positionals(args.args)
    if config is not None:
        raise CliError(f"demo takes KEY=VALUE overrides only, not a config file ({config}); use `retinanet train`")
    cfg, source = synth_config(overrides)
    if cfg.data.kind == "synth":
        # (a) the dataset, made once (atomically) and then reused; the same folder training would use
        root = synthetic_root(cfg.data.train_path, cfg.data.synth_preset)
        cfg = apply_overrides(cfg, {"data.train_path": str(root)})
        print(f"synthetic dataset: {root}")
    # (b) train
    # The demo starts afresh each time (--resume continues an interrupted one).
    result = _train(cfg, source, args.resume, print_final=False, overwrite=not args.resume)
    if result is None:
        return EXIT_FAILED
    out = Path(cfg.output_dir)
    final = out / "model_final.pth"
    if not final.is_file():
        raise CliError(f"training ended at iteration {result['iteration']} without {final}")
    # (d) detections on a few validation images, with the saved weights
    model = load(str(final)).model
    _, val_ds = build_datasets(cfg, train=False)
    picture = detections_grid(model, val_ds, out / "detections.png", args.score_thresh, DEMO_IMAGES)
    # (c) the result
    metrics = result["metrics"]
    print()
    title = (
        f"COCO bbox AP, {cfg.model.backbone} RetinaNet on the synthetic val split "
        f"({len(val_ds)} images, {result['iteration']} iterations)"
    )
    print(format_ap_table(metrics, title=title))
    print()
    print(format_per_class_table(metrics, title="AP per class"))
    print()
    print(f"detections (score >= {args.score_thresh}): {picture}")
    print(f"weights: {final}")
    print(f"config: {out / 'config.yaml'}; metrics: {out / 'metrics.jsonl'}; TensorBoard: {out / 'tb'}")
    return EXIT_OK


def add_parsers(sub) -> None:
    """The parsers of train, eval and demo."""
    p = sub.add_parser(
        "train",
        help="train a model from a config",
        formatter_class=FMT,
        usage="retinanet train [-h] [--resume | --overwrite] [CONFIG | --config CONFIG] [KEY=VALUE ...]",
        description=wrap(
            "Train RetinaNet. Checkpoints, config.yaml, metrics.jsonl, TensorBoard logs and "
            "model_final.pth go to output_dir; the COCO AP table is printed at the end. An output_dir that "
            "holds another run is refused: continue it with --resume or start again with --overwrite."
        ),
        epilog="examples:\n"
        "  retinanet train                                     # configs/synth/retinanet_r18_synth.yaml\n"
        "  retinanet train configs/synth/retinanet_r18_synth.yaml train.max_iter=600 model.focal_gamma=0\n"
        "  retinanet train configs/coco/retinanet_r50_fpn_1x.yaml \\\n"
        "      data.train_path=coco/annotations/instances_train2017.json data.train_images_dir=coco/train2017 \\\n"
        "      data.val_path=coco/annotations/instances_val2017.json data.val_images_dir=coco/val2017\n"
        "  retinanet train - data.kind=csv data.train_path=ann.csv data.class_map=classes.csv   # '-': paper defaults\n"
        "  retinanet train configs/finetune/retinanet_r50_fpn_coco.yaml \\\n"
        "      data.train_path=mine/train.csv data.val_path=mine/val.csv data.class_map=mine/classes.csv\n"
        "  retinanet train configs/synth/retinanet_r18_synth.yaml --resume   # from output_dir/last_checkpoint.pth\n"
        "  torchrun --nproc_per_node 2 -m retinanet train configs/synth/retinanet_r18_synth.yaml",
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG | KEY=VALUE",
        help="CONFIG: a YAML file (default: configs/synth/retinanet_r18_synth.yaml; '-': the paper's "
        "defaults); KEY=VALUE: " + OVERRIDES_HELP,
    )
    p.add_argument("--config", metavar="CONFIG", help="the YAML file, as an option (same as the positional CONFIG)")
    p.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint.pth")
    p.add_argument(
        "--overwrite", action="store_true", help="start again in an output_dir that holds a run (its files are removed)"
    )
    p.set_defaults(func=cmd_train, takes_overrides=True)

    p = sub.add_parser(
        "eval",
        help="COCO AP of a checkpoint on a validation set",
        formatter_class=FMT,
        usage="retinanet eval [-h] --weights W [--results JSON] [--per-class] [--max-images N] "
        "[--report DIR [--score-thresh S]] [--tile SIZE [--tile-overlap F] [--tile-full-image]] "
        "[CONFIG | --config CONFIG] [KEY=VALUE ...]",
        description=wrap(
            "Evaluate a checkpoint on the validation set of CONFIG (default: the config saved in the "
            "checkpoint). The model is built from the checkpoint's saved config when it has one "
            "(model.* overrides still apply), else from CONFIG."
        ),
        epilog="examples:\n"
        "  retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --per-class\n"
        "  retinanet eval configs/coco/retinanet_r50_fpn_1x.yaml --weights model_final.pth \\\n"
        "      data.val_path=coco/annotations/instances_val2017.json data.val_images_dir=coco/val2017 \\\n"
        "      --results detections.json\n"
        "  retinanet eval --weights model_final.pth model.score_thresh=0.01 eval.backend=pycocotools\n"
        "  retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --max-images 8 \\\n"
        "      --tile 256 --tile-overlap 0.25\n"
        "  retinanet eval --weights outputs/synth/retinanet_r18_synth/model_final.pth --report report   # index.md",
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG | KEY=VALUE",
        help="CONFIG: a YAML file ('-': the paper's defaults); KEY=VALUE: " + OVERRIDES_HELP,
    )
    p.add_argument("--weights", required=True, metavar="W", help="a checkpoint of this library (model_final.pth, ...)")
    p.add_argument("--results", metavar="JSON", help="also write the detections as a COCO results JSON file")
    p.add_argument("--per-class", action="store_true", help="also print the AP of each class")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N images only")
    add_tile_options(p)
    p.add_argument(
        "--report",
        metavar="DIR",
        help="also write the evaluation report to DIR: index.md / index.html, report.json, precision-recall "
        "curves, confusion matrix, P/R/F1 per class, F1-optimal thresholds, AP by size (pycocotools' matching); "
        "DIR/detections.json unless --results",
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        metavar="S",
        help="the report's threshold for P/R/F1 and the confusion matrix (default 0.3, predict's default)",
    )
    add_fast_option(p)
    p.add_argument("--config", metavar="CONFIG", help="the YAML file, as an option (same as the positional CONFIG)")
    p.set_defaults(func=cmd_eval, takes_overrides=True)

    p = sub.add_parser(
        "demo",
        help="synthetic data -> train -> COCO AP table -> detections.png",
        formatter_class=FMT,
        usage="retinanet demo [-h] [--resume] [--score-thresh S] [KEY=VALUE ...]",
        description=wrap(
            "The main job: make sure the synthetic dataset exists, train a ResNet-18 RetinaNet on it "
            "with configs/synth/retinanet_r18_synth.yaml, print the COCO AP table of the validation "
            "split and draw the detections on 4 validation images into output_dir/detections.png."
        ),
        epilog="examples:\n"
        "  retinanet demo\n"
        "  retinanet demo train.max_iter=100 output_dir=outputs/quick\n"
        "  retinanet demo train.device=cuda",
    )
    p.add_argument("args", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint.pth")
    p.add_argument(
        "--score-thresh", type=float, default=0.3, metavar="S", help="draw detections with score >= S (default 0.3)"
    )
    p.set_defaults(func=cmd_demo, takes_overrides=True)

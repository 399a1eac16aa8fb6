"""`retinanet data` (synth, check, show) and `analyze` (anchors, loss-cdf): datasets made,
described and drawn; a model's anchors and losses measured."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config import Config, load_config
from ..data.build import KINDS
from ..data.synth_presets import PRESETS
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    FMT,
    CliError,
    add_source_options,
    config_file,
    dataset_options,
    load,
    read_checkpoint,
    wrap,
)


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
    return load_config(config_file(args.config) if args.config else None, overrides)


def _analysis_dataset(args: argparse.Namespace):
    """The DATASET of `data show` / `analyze anchors`, bad entries skipped (and counted)."""
    from ..data.build import build_dataset, coco_splits
    from ..data.yolo import yolo_splits

    split = args.split
    path = Path(args.dataset)
    if split is None and path.is_dir() and args.kind in (None, "coco", "yolo"):
        splits = coco_splits(path) or yolo_splits(path)
        if len(splits) > 1 and "train" in splits:
            split = "train"  # the anchors are for training
    try:
        return build_dataset(
            args.kind, args.dataset, split=split, images_dir=args.images_dir, class_map=args.class_map, on_bad="skip"
        )
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
    print(
        f"{dataset.source}: {len(indices)} of {len(dataset)} images; anchors {tuple(m.anchor_sizes)} x "
        f"{m.scales_per_octave} scales x ratios {tuple(m.aspect_ratios)}, input {m.min_size}/{m.max_size}, "
        f"positive at IoU >= {m.fg_iou_thresh:g}" + (" (+ low-quality matches)" if m.allow_low_quality_matches else "")
    )
    if args.augmented:
        from ..data.build import train_transforms

        if not cfg.data.augment and not cfg.data.hflip_prob:
            raise CliError("--augmented: no augmentation configured (set data.augment=[...] or data.hflip_prob)")
        dataset.transforms = train_transforms(cfg.data)
        print(f"augmented {args.augmented} times each: flip p={cfg.data.hflip_prob:g}, {list(cfg.data.augment)}")
    results = show_images(dataset, m, args.out, indices, draws=args.augmented)
    boxes = unreached = 0
    for r in results:
        boxes += r["boxes"]
        unreached += r["unreached"]
        print(
            f"  {r['file_name']}: {r['boxes']} boxes, positive anchors per box {r['positives']}"
            + (f", {r['unreached']} without an anchor at IoU >= {m.fg_iou_thresh:g}" if r["unreached"] else "")
            + f" -> {r['path']}"
        )
    print(
        f"{boxes} boxes, {unreached} without an anchor at IoU >= {m.fg_iou_thresh:g} (red, crossed): "
        f"pictures in {args.out}/"
    )
    return EXIT_OK


def cmd_analyze_anchors(args: argparse.Namespace) -> int:
    from ..diagnostics.anchor_report import format_report, plot_report, public
    from ..diagnostics.anchors import coverage_report

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


def cmd_analyze_loss_cdf(args: argparse.Namespace) -> int:
    from ..data.build import build_datasets
    from ..diagnostics.loss_cdf import collect_pt, plot_fig4, score_summary
    from ..engine import resolve_device

    ckpt = read_checkpoint(args.weights)
    if ckpt.get("config") is None:
        raise CliError(f"{args.weights} holds no config: use a checkpoint written by `retinanet train`")
    loaded = load(ckpt, overrides=args.args)
    model, cfg = loaded.model, loaded.config
    _, val_ds = build_datasets(cfg, train=False)
    if val_ds is None:
        raise CliError(f"no validation set: set data.val_path (data.kind={cfg.data.kind})")
    device = resolve_device(cfg.train.device)
    pos, neg = collect_pt(model.to(device), val_ds, device, max_images=args.max_images)
    gammas = tuple(float(g) for g in args.gammas.split(","))
    out, summary = plot_fig4(pos, neg, args.out, gammas)
    print(
        f"{len(pos):,} positive and {len(neg):,} negative samples from {min(len(val_ds), args.max_images)} "
        f"images of {val_ds.source}"
    )
    print(
        "| γ | share of the negatives' loss in their hardest 1% | share of the positives' loss in their hardest 20% |"
    )
    print("|---|---|---|")
    for g, s in summary.items():
        print(f"| {g} | {s['negatives_hardest_1pct_share']:.3f} | {s['positives_hardest_20pct_share']:.3f} |")
    scores = score_summary(pos, neg, cfg.model.score_thresh)
    print(
        f"class scores: positives' ground-truth probability {scores['positives_p_q10']:.4f} / "
        f"{scores['positives_p_median']:.4f} / {scores['positives_p_q90']:.4f} (10 / 50 / 90 %), "
        f"{scores['positives_above_thresh']:.1%} of them above the score threshold {scores['score_thresh']:g}; "
        f"highest background score {scores['negatives_max_p']:.4f} (the prior π = {cfg.model.prior_prob:g}), "
        f"{scores['negatives_above_thresh_per_positive']:.2f} background outputs above the threshold per positive"
    )
    print(f"figure: {out}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"positives": len(pos), "negatives": len(neg), "gammas": summary, "scores": scores}, indent=1)
        )
    return EXIT_OK


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ..data.synth import ensure_synthetic, synth_params

    start = time.perf_counter()
    kw = dict(num_train=args.train, num_val=args.val, image_size=args.image_size)
    kw = {k: v for k, v in kw.items() if v is not None}  # the rest: the defaults (the preset's)
    if args.preset is not None:
        kw["preset"] = args.preset
    if args.classes:
        kw["classes"] = args.classes.split(",")
    try:
        params = synth_params(args.seed, **kw)
        root = ensure_synthetic(args.out, seed=args.seed, workers=args.workers, **kw)
    except ValueError as e:  # an existing dataset made with other parameters, unknown classes or preset
        raise CliError(str(e)) from None
    preset = f", preset {args.preset}" if args.preset else ""
    print(
        f"synthetic dataset ({params['num_train']} train + {params['num_val']} val images, seed {args.seed}"
        f"{preset}): {root} ({time.perf_counter() - start:.1f} s)"
    )
    also = f" data.synth_preset={args.preset}" if args.preset else ""
    print(f"train on it: retinanet train data.train_path={root}{also}")
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset, format_summary

    try:
        summary = check_dataset(
            args.path,
            args.kind,
            split=args.split,
            images_dir=args.images_dir,
            class_map=args.class_map,
            verify_images=args.verify_images,
            on_bad=args.on_bad,
        )
    except TypeError as e:  # an option the dataset kind does not take (--class-map for COCO, ...)
        raise CliError(str(e)) from None
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return EXIT_FAILED if summary["skipped"] else EXIT_OK


def cmd_data_convert(args: argparse.Namespace) -> int:
    from ..data.convert import convert_dataset, format_report

    start = time.perf_counter()
    try:
        report = convert_dataset(
            args.src,
            args.to,
            args.out,
            kind=args.kind,
            splits=args.split,
            images_dir=args.images_dir,
            class_map=args.class_map,
            link_images=args.link_images,
            overwrite=args.overwrite,
            on_bad=args.on_bad,
        )
    except TypeError as e:  # an option the source kind does not take (--class-map for COCO, ...)
        raise CliError(str(e)) from None
    print(format_report(report))
    print(f"done in {time.perf_counter() - start:.1f} s; {Path(args.out) / 'CONVERTED.json'} records it")
    return EXIT_OK


def cmd_data_tile(args: argparse.Namespace) -> int:
    from ..data.build import build_dataset
    from ..data.tile import check_tile_args, tile_dataset

    try:  # the sizes first: a bad one should not wait for a large dataset to load
        check_tile_args(args.size, args.overlap)
    except ValueError as e:
        raise CliError(str(e)) from None
    start = time.perf_counter()
    try:
        dataset = build_dataset(
            args.kind, args.dataset, split=args.split, images_dir=args.images_dir, class_map=args.class_map
        )
        s = tile_dataset(
            dataset,
            args.out,
            args.size,
            args.overlap,
            split=args.split,
            min_visible=args.min_visible,
            empty_ratio=args.empty_ratio,
            seed=args.seed,
        )
    except (TypeError, ValueError) as e:  # an option the kind does not take; a bad value; DatasetError
        raise CliError(str(e)) from None
    print(
        f"{s['tiles']} tiles of {args.size} px from {s['source_images']} images ({s['tiles_with_boxes']} with boxes, "
        f"{s['negatives']} of {s['negatives_available']} empty ones as negatives): {s['json']}, {s['images_dir']}/ "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(
        f"{s['boxes']} boxes, {s['crowd']} crowd regions (less than {args.min_visible:g} in view); "
        f"{s['source_boxes_lost']} of {s['source_boxes']} source boxes are a box of no tile"
    )
    print(
        f"train on it at native scale: retinanet train data.train_path={s['json']} "
        f"model.min_size={args.size} model.max_size={args.size}"
    )
    return EXIT_OK


def add_parsers(sub) -> None:
    """The parsers of data (synth, check, show, convert, tile) and analyze (anchors, loss-cdf)."""
    p = sub.add_parser(
        "data",
        help="make, check or show a dataset",
        formatter_class=FMT,
        description=wrap(
            "Datasets: `data synth` writes the built-in synthetic dataset, `data check` describes one, "
            "`data show` draws its ground truth with the anchors training would assign, `data convert` writes "
            "it in another format, `data tile` cuts its large images into tiles."
        ),
        epilog="examples:\n  retinanet data synth --out data/synth\n"
        "  retinanet data check data/synth/annotations/instances_val.json\n"
        "  retinanet data show data/synth --out show/",
    )
    data = p.add_subparsers(dest="data_command", metavar="{synth,check,show,convert,tile}", required=True)

    q = data.add_parser(
        "synth",
        help="write the synthetic shapes dataset (COCO format)",
        formatter_class=FMT,
        description=wrap(
            "Write the synthetic dataset: DIR/train, DIR/val, DIR/annotations/instances_{train,val}.json. "
            "An existing complete dataset with the same parameters is reused."
        ),
        epilog="examples:\n  retinanet data synth --out data/synth\n"
        "  retinanet data synth --out /tmp/tiny --train 8 --val 4 --seed 1\n"
        "  retinanet data synth --out data/synth_rcs --train 40 --classes ring,cross,star --seed 7\n"
        "  retinanet train data.train_path=data/synth",
    )
    q.add_argument("--out", required=True, metavar="DIR", help="the dataset folder (created)")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    q.add_argument("--train", type=int, metavar="N", help="training images (default 600, or the preset's)")
    q.add_argument("--val", type=int, metavar="M", help="validation images (default 100, or the preset's)")
    q.add_argument("--image-size", type=int, metavar="PX", help="square image side (default 320, or the preset's)")
    q.add_argument("--workers", type=int, metavar="W", help="processes drawing images (default: the CPUs)")
    q.add_argument(
        "--classes",
        metavar="A,B,...",
        help="draw only these shapes (of circle,square,triangle,ring,cross,star; default all): e.g. one half "
        "to pretrain on, the other to fine-tune on (with --preset: of the preset's classes)",
    )
    q.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named preset of the dataset (retinanet/data/synth_presets.py; default none: the demo's dataset): "
        "focal = a COCO-like class imbalance (48 classes, few small objects) for the focal loss's experiments "
        "(configs/synth/retinanet_r18_focal.yaml, which sets data.synth_preset=focal)",
    )
    q.set_defaults(func=cmd_data_synth)

    q = data.add_parser(
        "check",
        help="load a dataset and describe it",
        formatter_class=FMT,
        description=wrap(
            "Load a dataset (COCO JSON or folder, VOC folder, CSV file, YOLO data.yaml) and print images, boxes per "
            "class, box sizes and any bad entries. Exit status 1 when entries were skipped, 2 when "
            "the dataset cannot be loaded."
        ),
        epilog="examples:\n"
        "  retinanet data check coco/annotations/instances_val2017.json --images-dir coco/val2017\n"
        "  retinanet data check VOCdevkit/VOC2007 --split test\n"
        "  retinanet data check annotations.csv --class-map classes.csv\n"
        "  retinanet data check yolo/data.yaml --split val\n"
        "  retinanet data check data/synth --split val --on-bad error",
    )
    q.add_argument(
        "path", metavar="PATH", help="a COCO .json or folder, a VOC folder, a CSV annotations file, or a YOLO data.yaml"
    )
    add_source_options(
        q,
        "COCO folder: annotations/instances_<split>.json; VOC: ImageSets/Main/<split>.txt; YOLO: a split of data.yaml",
        what="PATH",
    )
    q.add_argument(
        "--on-bad",
        choices=("skip", "error"),
        default="skip",
        help="skip bad entries and count them (default), or stop at the first",
    )
    q.add_argument("--verify-images", action="store_true", help="decode every image once")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_data_check)

    q = data.add_parser(
        "tile",
        help="cut a dataset's large images into overlapping tiles with their boxes (COCO)",
        formatter_class=FMT,
        description=wrap(
            "Cut every image of DATASET (any kind `data check` reads) into overlapping SIZE px tiles, the last "
            "of a row or column aligned to the border, and write them with their boxes as a COCO dataset: "
            "OUT/annotations/instances_<split>.json and OUT/<split>/. A box is a box of a tile when at least "
            "--min-visible of it is inside (of its area, or for a box larger than a tile of the most a tile "
            "can hold), clipped to the tile; a box less in view becomes a crowd region (not a training "
            "target, ignored by evaluation). Tiles without boxes are kept as negatives, at most "
            "--empty-ratio times as many as the tiles with boxes, drawn with --seed. Train on the tiles at "
            "their native scale (model.min_size = model.max_size = SIZE) and predict with --tile SIZE."
        ),
        epilog="examples:\n"
        "  retinanet data tile data/synth --split val --size 160 --overlap 0.25 --out data/synth_tiles \\\n"
        "      --min-visible 0.6 --empty-ratio 0.5",
    )
    q.add_argument(
        "dataset",
        metavar="DATASET",
        help="a COCO .json or folder, a VOC folder, a CSV annotations file, a YOLO data.yaml",
    )
    q.add_argument("--size", required=True, type=int, metavar="S", help="the tile side in pixels")
    q.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="overlap of neighbouring tiles as a fraction of S, in [0, 1) (default 0.25)",
    )
    q.add_argument("--out", required=True, metavar="DIR", help="the folder of the tiled dataset")
    q.add_argument(
        "--min-visible",
        type=float,
        default=0.5,
        metavar="V",
        help="keep a box in a tile when at least this share of it is inside (default 0.5)",
    )
    q.add_argument(
        "--empty-ratio",
        type=float,
        default=1.0,
        metavar="R",
        help="tiles without boxes kept: at most R per tile with boxes (default 1; 0: none)",
    )
    q.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the choice of negatives (default 0)")
    add_source_options(
        q,
        "COCO folder: annotations/instances_<split>.json; VOC: ImageSets/Main/<split>.txt; YOLO: the "
        "data.yaml key; also the output split (default: the COCO file's, else train)",
    )
    q.set_defaults(func=cmd_data_tile)

    q = data.add_parser(
        "convert",
        help="write a dataset in another format (COCO, VOC, CSV, YOLO)",
        formatter_class=FMT,
        description=wrap(
            "Read SRC (any format `data check` reads) and write it as --to coco|voc|csv|yolo in DIR, every split "
            "of SRC (or those of --split), in the layout this package's reader of that format reads. Class "
            "names and order, image file names, boxes (to the pixel) and crowd / difficult flags are kept where "
            "the target can hold them, COCO and YOLO keep category and image ids too; what could not be kept is "
            "counted in the output. Images are copied, or linked with --link-images; never re-encoded. "
            "retinanet/data/convert.py describes each layout."
        ),
        epilog="examples:\n"
        "  retinanet data convert data/synth --to yolo --out data/synth_yolo\n"
        "  retinanet data convert yolo --to coco --out coco_again --link-images\n"
        "  retinanet data convert VOCdevkit/VOC2007 --to csv --out voc_csv --split test=val",
    )
    q.add_argument("src", metavar="SRC", help="a COCO .json or folder, a VOC folder, a CSV file, or a YOLO data.yaml")
    q.add_argument("--to", required=True, choices=KINDS, help="the format written")
    q.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder (created)")
    add_source_options(
        q,
        "convert split S of SRC (repeatable; default all), written as NEW; for a source without splits (a "
        "CSV or COCO JSON file, a plain VOC folder) the name it is written as (default: its file or folder name)",
        what="SRC",
        action="append",
        metavar="S[=NEW]",
    )
    images = q.add_mutually_exclusive_group()
    images.add_argument("--copy-images", action="store_true", help="copy the image files (the default)")
    images.add_argument(
        "--link-images", action="store_true", help="hard-link them instead (symbolic links across file systems)"
    )
    q.add_argument("--overwrite", action="store_true", help="replace a previous conversion in DIR")
    q.add_argument(
        "--on-bad",
        choices=("error", "skip"),
        default="error",
        help="stop at the first bad entry of SRC (default), or skip it and count it",
    )
    q.set_defaults(func=cmd_data_convert)

    q = data.add_parser(
        "show",
        help="draw ground truth with the anchors that would be its positives",
        formatter_class=FMT,
        usage="retinanet data show [-h] DATASET --out DIR [--num N | --index I ...] [--augmented K] [--config CONFIG] "
        "[KEY=VALUE ...]",
        description=wrap(
            "Draw images of a dataset with their ground-truth boxes and, for each box, the anchors that "
            "training would make its positives (the model's resize, anchors and matcher: IoU >= "
            "model.fg_iou_thresh, thin outlines; low-quality matches dotted). Boxes that no anchor reaches at "
            "that IoU are drawn red and crossed, with their best IoU. One PNG per image in DIR. The anchors "
            "and input scale come from --config (default: the paper's) and KEY=VALUE overrides. --augmented K "
            "draws K augmented versions of each image instead (the training transforms: data.hflip_prob and "
            "data.augment), with their boxes as training sees them."
        ),
        epilog="examples:\n"
        "  retinanet data show data/synth --config configs/synth/retinanet_r18_synth.yaml --out show/\n"
        "  retinanet data show coco/annotations/instances_val2017.json --out show/ --num 4 \\\n"
        "      anchor_sizes=[16,32,64,128,256]\n"
        "  retinanet data show VOCdevkit/VOC2007 --split test --index 0 --index 7 --out show/\n"
        "  retinanet data show data/synth --num 2 --augmented 4 --out show/ 'data.augment=[photometric,lsj,rot90]'",
    )
    q.add_argument("--out", required=True, metavar="DIR", help="the folder of the pictures (created)")
    q.add_argument("--num", type=int, default=8, metavar="N", help="the first N images with boxes (default 8)")
    q.add_argument("--index", type=int, action="append", metavar="I", help="draw image I (0-based; repeatable) instead")
    q.add_argument(
        "--augmented", type=int, default=0, metavar="K", help="K augmented versions of each image (data.augment)"
    )
    dataset_options(q)
    q.set_defaults(func=cmd_data_show, takes_overrides=True)

    p = sub.add_parser(
        "analyze",
        help="anchor coverage of a dataset; the loss distribution of a trained model (Fig. 4)",
        formatter_class=FMT,
        description=wrap(
            "Analyses: `analyze anchors` measures how many ground-truth boxes the anchors can reach; "
            "`analyze loss-cdf` draws the paper's Fig. 4 for a trained model."
        ),
        epilog="examples:\n  retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml",
    )
    analyze = p.add_subparsers(dest="analyze_command", metavar="{anchors,loss-cdf}", required=True)
    q = analyze.add_parser(
        "anchors",
        help="anchor coverage by box size and aspect ratio, and better anchors",
        formatter_class=FMT,
        usage="retinanet analyze anchors [-h] DATASET [--out PNG] [--json FILE] [--no-search] [--config CONFIG] "
        "[KEY=VALUE ...]",
        description=wrap(
            "For the configured anchors (--config, default the paper's, and KEY=VALUE overrides), the share "
            "of the dataset's ground-truth boxes that have at least one anchor at IoU >= model.fg_iou_thresh "
            "(0.5), i.e. at least one real positive in training, at the model's input scale: overall, by "
            "COCO size bucket (small < 32², medium, large > 96², original pixels) and by aspect ratio h/w. "
            "Then a grid search over anchor sizes (the P3 size, doubling per level), scales per octave and "
            "aspect ratios proposes the setting with the highest coverage and prints its overrides. Writes "
            "a plot (PNG) of both."
        ),
        epilog="examples:\n"
        "  retinanet analyze anchors data/synth --config configs/synth/retinanet_r18_synth.yaml --out coverage.png\n"
        "  retinanet analyze anchors coco/annotations/instances_train2017.json --json coverage.json\n"
        "  retinanet analyze anchors data/synth model.min_size=320 model.max_size=320 anchor_sizes=[16,32,64,128,256]",
    )
    q.add_argument("--out", default="anchor_coverage.png", metavar="PNG", help="the plot (default anchor_coverage.png)")
    q.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    q.add_argument("--no-search", action="store_true", help="measure the configured anchors only")
    q.add_argument(
        "--sample",
        type=int,
        default=5000,
        metavar="N",
        help="boxes each search candidate is scored on (default 5000; the proposal is then measured on all)",
    )
    dataset_options(q)
    q.set_defaults(func=cmd_analyze_anchors, takes_overrides=True)

    q = analyze.add_parser(
        "loss-cdf",
        help="Fig. 4: the CDF of the normalized loss of a trained model",
        formatter_class=FMT,
        usage="retinanet analyze loss-cdf [-h] --weights W [--out PNG] [--gammas G,...] [--max-images N] "
        "[KEY=VALUE ...]",
        description=wrap(
            "The paper's Fig. 4 (§5.1, analysis of the focal loss): run a trained model (its saved config "
            "says which data) on validation images, take p_t of the positive samples (the ground-truth class "
            "output of each foreground anchor) and of the negative samples (every class output of each "
            "background anchor), compute the focal loss of each for several γ, normalize it to sum to one, "
            "and plot its cumulative distribution from the lowest loss to the highest."
        ),
        epilog="examples:\n"
        "  retinanet analyze loss-cdf --weights outputs/synth/retinanet_r18_synth/model_final.pth --out fig4.png",
    )
    q.add_argument(
        "args",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides of the checkpoint's saved config, e.g. data.val_path=...",
    )
    q.add_argument("--weights", required=True, metavar="W", help="a checkpoint written by `retinanet train`")
    q.add_argument("--out", default="experiments/figures/fig4_loss_cdf.png", metavar="PNG", help="the figure")
    q.add_argument("--gammas", default="0,0.5,1,2", metavar="G,...", help="the γ values (default 0,0.5,1,2)")
    q.add_argument("--max-images", type=int, default=100, metavar="N", help="validation images to sample (default 100)")
    q.add_argument("--json", metavar="FILE", help="also write the loss shares as JSON")
    q.set_defaults(func=cmd_analyze_loss_cdf, takes_overrides=True)

"""`retinanet predict` and `export`: a trained model applied to images and videos, or written
as one ONNX / TorchScript graph."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from ..weights.zoo import TORCHVISION_COCO
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    FMT,
    CliError,
    add_fast_option,
    add_model_source_options,
    add_tile_options,
    fast_model,
    load_for_command,
    tile_spec,
    wrap,
)


def _split_videos(inputs: list[str]) -> tuple[list[str], list[Path]]:
    """(image files and folders, video files) of predict's INPUTs."""
    from ..inference.video import is_video

    videos = [Path(p) for p in inputs if Path(p).is_file() and is_video(p)]
    return [p for p in inputs if Path(p) not in videos], videos


def score_thresh_arg(text: str) -> float | str:
    """predict's --score-thresh: a number, or best:DIR (read in cmd_predict, not at parsing)."""
    if text.startswith("best"):
        if not text.startswith("best:") or text == "best:":
            raise argparse.ArgumentTypeError(f"{text!r}: the report folder goes after a colon: best:DIR")
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number or best:DIR") from None


def _resolve_score_thresh(value: float | str) -> float:
    """--score-thresh as a number: best:DIR is the overall F1-optimal threshold of DIR's report."""
    if not isinstance(value, str):
        return value
    from ..engine.report import ReportError, best_threshold

    try:
        thresh, best, file = best_threshold(value.removeprefix("best:"))
    except ReportError as e:
        raise CliError(f"--score-thresh {value}: {e}") from None
    print(
        f"score threshold {thresh:.4f}: the F1-optimal one of {file} (F1 {best['f1']:.3f}, precision "
        f"{best['precision']:.3f}, recall {best['recall']:.3f} at IoU 0.5 on the evaluated images)"
    )
    return thresh


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data.common import IMAGE_SUFFIXES
    from ..engine import resolve_device
    from ..inference.predict import CocoPredictions, find_images, predict_images, predict_video
    from ..inference.video import VideoError, open_video
    from ..utils.paths import unique_stems

    if args.batch_size < 1:
        raise CliError(f"--batch-size {args.batch_size}: expected >= 1")
    args.score_thresh = _resolve_score_thresh(args.score_thresh)
    out = Path(args.out)
    image_inputs, videos = _split_videos(args.inputs)
    tiles = tile_spec(args, batch_size=args.batch_size)
    if tiles is not None and videos:
        raise CliError(f"--tile: images only, not videos ({videos[0]})")
    images = find_images(image_inputs, exclude=out) if image_inputs else []
    if not images and not videos:
        raise CliError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or videos in {' '.join(args.inputs)}")
    for p, stem in zip(images, unique_stems(images)):
        if (out / f"{stem}.png").resolve() == p.resolve():
            raise CliError(f"--out {out} would overwrite the input image {p}: choose another folder")
    try:  # every video readable before any work starts
        sources = [open_video(v) for v in videos]
    except VideoError as e:
        raise CliError(str(e)) from None
    # Postprocessing drops lower scores before NMS and top-k: the threshold is the model's own.
    loaded = load_for_command(args, score_thresh=args.score_thresh)
    model, class_names = loaded.model, loaded.class_names
    device = resolve_device(args.device)
    model = fast_model(model.to(device), args)
    out.mkdir(parents=True, exist_ok=True)
    coco = None
    if args.coco:
        info = {"description": "retinanet predict", "weights": args.weights, "score_thresh": args.score_thresh}
        coco = CocoPredictions(class_names, loaded.category_ids, info)
    if tiles is not None:
        from ..inference.tiling import predict_images_tiled

        total, failed = predict_images_tiled(
            model, device, images, out, class_names, args.score_thresh, tiles, not args.no_pictures, coco
        )
    else:
        total, failed = predict_images(
            model, device, images, out, class_names, args.score_thresh, args.batch_size, not args.no_pictures, coco
        )
    done = len(images) - len(failed)
    if coco is not None:
        print(f"COCO-style JSON of the {done} images: {coco.write(args.coco)}")
    if images:
        print(
            f"{done} images, {total} detections with score >= {args.score_thresh}: "
            f"{'pictures and ' if not args.no_pictures else ''}JSON in {out}/"
        )
    if failed:
        print(f"{len(failed)} of {len(images)} images could not be read and were skipped:", file=sys.stderr)
        for message in failed:
            print(f"  {message}", file=sys.stderr)
    for source in sources:
        try:
            result = predict_video(
                model,
                device,
                source,
                out,
                class_names,
                args.score_thresh,
                loaded.category_ids,
                save_video=args.save_video,
                batch_size=args.batch_size,
            )
        except VideoError as e:
            raise CliError(str(e)) from None
        video = f", {result['video']}" if result["video"] else ""
        print(
            f"{source.path}: {result['frames']} frames, {result['detections']} detections with score >= "
            f"{args.score_thresh}: {result['json']}{video}"
        )
    return EXIT_FAILED if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy.export import (
        compare_detections,
        example_input,
        export_onnx,
        export_torchscript,
        onnx_session,
        run_onnx,
        unpad_detections,
    )

    overrides = {}
    if args.score_thresh is not None:
        overrides["score_thresh"] = args.score_thresh
    if args.detections_per_img is not None:
        overrides["detections_per_img"] = args.detections_per_img
    # BatchNorm folded (a smaller, faster graph); channels_last is a runtime layout, not exported.
    model = fast_model(load_for_command(args, **overrides).model.cpu(), args, channels_last=False)
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a folder: give the file to write (model.onnx, model.pt)")
    start = time.perf_counter()
    if args.format == "onnx":
        export_onnx(model, out, opset=args.opset)
    else:
        export_torchscript(model, out)
    score, per_img = model.score_thresh, model.detections_per_img
    print(
        f"{args.format} model: {out} ({out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s); "
        f"input images (B, 3, H, W) float in [0, 1], any B, H, W; outputs boxes (B, {per_img}, 4), scores, "
        f"labels (-1: padding), num_detections; score_thresh {score:g}"
    )
    if args.no_verify:
        return EXIT_OK
    # The exported graph against the eager model on two random images at the model's scale.
    images = example_input(model, batch=2, seed=1)
    with torch.no_grad():
        eager = model(list(images))
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
    print(
        f"check ({runtime} vs eager, 2 random {images.shape[2]}x{images.shape[3]} images): {c['detections']} "
        f"detections, same counts {c['same_counts']}, same labels {c['same_labels']}, max box diff "
        f"{c['max_box_diff']:.2g} px, max score diff {c['max_score_diff']:.2g}" + ("" if ok else "  MISMATCH")
    )
    return EXIT_OK if ok else EXIT_FAILED


def add_parsers(sub) -> None:
    """The parsers of predict and export."""
    p = sub.add_parser(
        "predict",
        help="detect objects in images, folders and videos",
        formatter_class=FMT,
        description=wrap(
            "Detect objects in images, folders of images (searched recursively) and video files, with a "
            "progress bar. For each image, OUT/<stem>.png with the boxes, class names and scores drawn and "
            "OUT/<stem>.json with {image, width, height, detections: [{box xyxy, score, label, class_name}]}; "
            "--coco FILE also writes all of them as one COCO-style JSON (annotations with a score). For "
            "each video, OUT/<stem>_detections.json (COCO-style, one image per frame with its frame_index "
            "and timestamp) and, with --save-video, the annotated video. Animated .gif/.webp are read with "
            "Pillow; .mp4 .avi .mov .mkv .webm .m4v with PyAV. --tile SIZE: large images are cut into "
            "overlapping tiles, each run at its native scale, and the detections merged (an object cut by a "
            "tile border is reported once, whole)."
        ),
        epilog="examples:\n"
        "  retinanet predict --weights outputs/synth/retinanet_r18_synth/model_final.pth val/ --out preds\n"
        "  retinanet predict --weights torchvision-coco street.jpg photos/ --out preds --score-thresh 0.5\n"
        "  retinanet predict --weights model_final.pth photos/ --out preds --coco preds/detections.json --no-pictures\n"
        "  retinanet predict --weights model_final.pth clip.mp4 --out preds --save-video --batch-size 4\n"
        "  retinanet predict --weights state_dict.pth --model retinanet_r50_fpn a.jpg --out preds\n"
        "  retinanet predict --weights model_final.pth a.jpg --out preds --tile 256 --tile-overlap 0.25",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (.jpg .jpeg .png .bmp), folders of them (searched recursively) or video files "
        "(.gif .webp .mp4 .avi .mov .mkv .webm .m4v)",
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="W",
        help=f"a checkpoint of this library, or '{TORCHVISION_COCO}' (torchvision's COCO R50 weights)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the output folder")
    p.add_argument(
        "--score-thresh",
        type=score_thresh_arg,
        default=0.3,
        metavar="S",
        help="keep detections with score >= S (default 0.3); best:DIR: the overall F1-optimal threshold of the "
        "report that `retinanet eval --report DIR` wrote",
    )
    add_model_source_options(p)
    add_fast_option(p)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images, frames or tiles per forward pass (default 1)"
    )
    p.add_argument("--coco", metavar="FILE", help="also write the image detections as one COCO-style JSON file")
    p.add_argument("--no-pictures", action="store_true", help="write no annotated PNG per image (JSON only)")
    p.add_argument(
        "--save-video",
        action="store_true",
        help="also write each video annotated: OUT/<stem>_detections.mp4 (.gif/.webp for those inputs)",
    )
    add_tile_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript, NMS included",
        formatter_class=FMT,
        description=wrap(
            "Export a model as one graph from an image batch to detections: preprocessing (resize, "
            "normalisation, padding), backbone, FPN, head, anchors, box decoding and class-wise NMS, all "
            "inside (standard ONNX operators; NonMaxSuppression for NMS), with dynamic batch size and image "
            "size. Input `images` (B, 3, H, W) float32 RGB in [0, 1]; outputs `boxes` (B, D, 4) xyxy in "
            "input pixels, `scores` (B, D), `labels` (B, D) int64 with -1 for padding, `num_detections` "
            "(B,), D = detections per image. The export is then checked against the eager model "
            "(onnxruntime or torch.jit) on two random images; exit status 1 if they differ."
        ),
        epilog="examples:\n"
        "  retinanet export --weights outputs/synth/retinanet_r18_synth/model_final.pth --format onnx \\\n"
        "      --out retinanet.onnx\n"
        "  retinanet export --weights torchvision-coco --format onnx --out retinanet_r50_coco.onnx --score-thresh 0.3\n"
        "  retinanet export --weights model_final.pth --format torchscript --out retinanet.pt",
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="W",
        help=f"a checkpoint of this library, or '{TORCHVISION_COCO}' (torchvision's COCO R50 weights)",
    )
    p.add_argument(
        "--format", required=True, choices=("onnx", "torchscript"), help="onnx (.onnx) or torchscript (traced, .pt)"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--score-thresh", type=float, metavar="S", help="the graph's score threshold (default: the model's)")
    p.add_argument(
        "--detections-per-img", type=int, metavar="D", help="the outputs' second dimension (default: the model's)"
    )
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    add_model_source_options(p)
    add_fast_option(p)
    p.add_argument("--no-verify", action="store_true", help="skip the check against the eager model")
    p.set_defaults(func=cmd_export)

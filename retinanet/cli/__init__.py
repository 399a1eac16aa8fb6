"""The `retinanet` command (also `python -m retinanet`, which torchrun runs):

    retinanet demo                                      synthetic data -> train -> AP table -> detections.png
    retinanet train [CONFIG] [KEY=VALUE ...] [--resume]
    retinanet eval [CONFIG] --weights W [KEY=VALUE ...] [--results out.json] [--per-class]
    retinanet predict --weights W INPUT... --out DIR [--score-thresh 0.3] [--coco F] [--save-video]
                      [--tile SIZE [--tile-overlap F] [--tile-full-image]]     large images by tiles
    retinanet export --weights W --format onnx|torchscript --out F
    retinanet data synth --out DIR [--seed S --train N --val M]
    retinanet data check PATH [--images-dir D] [--class-map F] [--on-bad skip]
    retinanet data tile DATASET --size S --out DIR [--overlap F] [--min-visible V] [--empty-ratio R]
    retinanet data show DATASET --out DIR [--config CONFIG] [KEY=VALUE ...]
    retinanet data convert SRC --to coco|voc|csv|yolo --out DIR [--split S[=NEW]] [--link-images]
    retinanet analyze anchors DATASET [--out PNG] [--config CONFIG] [KEY=VALUE ...]
    retinanet analyze loss-cdf --weights W [--out PNG]           Fig. 4
    retinanet experiment TABLE [--scale mini|paper] [KEY=VALUE ...]   Table 1 (a)-(e), experiments/README.md
    retinanet figure fig1|fig2 [--out PNG]
    retinanet benchmark [--quick] [--only SECTIONS] [--device cuda] [--out DIR]   (benchmarks/README.md)

Overrides are dotted `key=value` strings (retinanet.config). Exit status: 0 success; 1 a run
that stopped (non-finite losses, a checkpoint that could not be written), a dataset check that
skipped entries, a predict that skipped unreadable images, or an export that differs from the
eager model; 2 bad usage, a config error or a dataset / file error (a one-line message,
no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from .. import __version__
from ..config import ConfigError
from ..data.common import DatasetError
from ..engine.checkpoint import CheckpointWriteError, ResumeError
from ..engine.distributed import DeviceError
from ..weights.loader import WeightsError
from . import data, experiment, predict, train
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, FMT, CliError, wrap

# The command modules, in the order of `retinanet --help`: each adds its parsers, beside their handlers.
COMMANDS = (train, predict, data, experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retinanet",
        formatter_class=FMT,
        description=wrap("RetinaNet and the focal loss (Lin et al., 2017): train, evaluate, predict, export, analyse."),
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

    for module in COMMANDS:
        module.add_parsers(sub)
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
        unknown = [
            s for s in extra if not (getattr(args, "takes_overrides", False) and "=" in s and not s.startswith("-"))
        ]
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
    except (CliError, DatasetError, DeviceError, ResumeError, WeightsError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
    except (PermissionError, NotADirectoryError, IsADirectoryError) as e:  # an output path that cannot be written
        print(f"error: {e}", file=sys.stderr)
    except CheckpointWriteError as e:  # a run that stopped: its last checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "interrupted" + ("; continue with --resume" if args.command in ("train", "demo") else ""), file=sys.stderr
        )
        return EXIT_INTERRUPTED
    return EXIT_USAGE


__all__ = ["build_parser", "main"]

if __name__ == "__main__":  # python -m retinanet.cli (python -m retinanet is the same)
    sys.exit(main())

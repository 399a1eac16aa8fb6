"""What the command modules share: exit statuses, the one-line user error, config resolution,
model loading with one-line errors, and help formatting."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..config import Config, ConfigError, diff_from_defaults, format_overrides, load_config
from ..engine.distributed import is_main
from ..utils.paths import project_path
from ..weights.loader import LoadedModel, WeightsError, load_checkpoint, load_model

SYNTH_CONFIG = project_path("configs/synth/retinanet_r18_synth.yaml")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

FMT = argparse.RawDescriptionHelpFormatter
OVERRIDES_HELP = "dotted overrides of the config, e.g. train.max_iter=1000 model.focal_gamma=0 train.lr_steps=[600,800]"


class CliError(Exception):
    """A user error worth one line on stderr and exit status 2 (no traceback)."""


def wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def synth_config(overrides: Sequence[str] = ()) -> tuple[Config, str]:
    """(config, where it came from) of the synthetic-data recipe: the YAML when present."""
    if not SYNTH_CONFIG.is_file():
        raise CliError(
            f"{SYNTH_CONFIG} not found: the configs/ folder ships with the source checkout (pip install -e .)"
        )
    return load_config(SYNTH_CONFIG, overrides), str(SYNTH_CONFIG)


def split_positionals(items: Sequence[str], config_option: Optional[str] = None) -> tuple[Optional[str], list[str]]:
    """(CONFIG or None, KEY=VALUE overrides) from the positional words of train/eval/demo and
    the --config option (an alternative spelling)."""
    configs = [s for s in items if "=" not in s] + ([config_option] if config_option is not None else [])
    overrides = [s for s in items if "=" in s]
    if len(configs) > 1:
        raise CliError(f"expected one CONFIG file, got {configs} (overrides are KEY=VALUE)")
    return (configs[0] if configs else None), overrides


def config_file(path: str) -> str:
    """A CONFIG path as given, or, for a relative one that is not under the current folder but is
    in the project (the checkout's configs/), the project's: the documented examples
    ("configs/synth/retinanet_r18_synth.yaml") then work from any folder."""
    if not Path(path).is_absolute() and not Path(path).exists() and project_path(path).is_file():
        return str(project_path(path))
    return path


def resolve_config(config: Optional[str], overrides: Sequence[str]) -> tuple[Config, str]:
    """CONFIG omitted: the synthetic recipe; "-": the paper's defaults; else the YAML file."""
    if config is None:
        return synth_config(overrides)
    if config == "-":
        return load_config(None, overrides), "defaults"
    config = config_file(config)
    return load_config(config, overrides), config


def print_config(cfg: Config, source: str) -> None:
    """The config's differences from the paper's defaults, once (on the main process)."""
    if not is_main():
        return
    diff = format_overrides(diff_from_defaults(cfg))
    print(f"config: {source}; differences from the paper's defaults:")
    print("\n".join(f"  {d}" for d in diff) if diff else "  (none)", flush=True)


def check_data_paths(cfg: Config, train: bool) -> None:
    d = cfg.data
    if d.kind == "synth":
        return
    if train and d.train_path is None:
        raise CliError(f"data.kind={d.kind} needs data.train_path=... (and data.val_path=... to evaluate)")
    if not train and d.val_path is None:
        raise CliError(f"data.kind={d.kind} needs data.val_path=... to evaluate")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def read_checkpoint(path: str) -> dict:
    """`load_checkpoint(path)` with a corrupt or foreign file as a one-line CliError."""
    try:
        return load_checkpoint(path)
    except ValueError as e:
        raise CliError(str(e)) from None


def load(weights, **kwargs) -> LoadedModel:
    """`load_model(weights, **kwargs)` with its errors as one-line CliErrors."""
    try:
        return load_model(weights, **kwargs)
    except ConfigError:
        raise
    except (WeightsError, ValueError, RuntimeError) as e:  # bad file, no saved config, offline download
        raise CliError(str(e)) from None


def load_for_command(args: argparse.Namespace, **model_overrides) -> LoadedModel:
    """The model of `predict` / `export`: --weights, with --config or --model for a checkpoint
    that has no saved config; `model_overrides` are ModelConfig fields (score_thresh=...)."""
    return load(args.weights, name=args.model, config=args.config, **model_overrides)


def fast_model(model, args: argparse.Namespace, channels_last: bool = True):
    """`model` in eval mode, with the inference fast paths (BatchNorm folded into the convolutions,
    channels_last; the same detections, tests/cli/test_cli.py) unless --no-fast."""
    if getattr(args, "no_fast", False):
        return model.eval()
    from ..deploy.optimize import optimize_for_inference

    return optimize_for_inference(model, channels_last=channels_last, inplace=True)


def add_fast_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-fast",
        action="store_true",
        help="the plain model: no BatchNorm folding or channels_last (the default applies both; same detections)",
    )


def add_model_source_options(p: argparse.ArgumentParser) -> None:
    """--config and --model: the architecture of a checkpoint without a saved config."""
    p.add_argument("--config", metavar="CONFIG", help="the model config, for a checkpoint without a saved config")
    p.add_argument(
        "--model",
        metavar="NAME",
        help="a named variant (retinanet_r50_fpn, ...), for a checkpoint without a saved config",
    )


def dataset_options(q: argparse.ArgumentParser) -> None:
    """DATASET, the KEY=VALUE overrides, the dataset options (as `data check`) and --config of
    `data show` and `analyze anchors`."""
    q.add_argument("dataset", metavar="DATASET", help="a COCO .json or folder, a VOC folder, or a CSV annotations file")
    q.add_argument(
        "args",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides; a bare model option means model.<option> (anchor_sizes=[16,32,64,128,256])",
    )
    q.add_argument(
        "--config", metavar="CONFIG", help="the YAML config whose model options apply (default: the paper's defaults)"
    )
    add_source_options(
        q,
        "COCO folder: annotations/instances_<split>.json, YOLO: a data.yaml split (default train when there "
        "are several); VOC: ImageSets/Main/<split>.txt",
    )


def add_source_options(q: argparse.ArgumentParser, split_help: str, what: str = "DATASET", **split_kwargs) -> None:
    """--kind, --split, --images-dir and --class-map: how a dataset argument is read, for every
    command that reads one (`data check / show / tile / convert`, `analyze anchors`)."""
    from ..data.build import KINDS

    if what == "SRC":  # convert: "auto" spelled out, as its report names the kind it detected
        q.add_argument("--kind", choices=("auto", *KINDS), default="auto", help="of SRC (default auto)")
    else:
        q.add_argument("--kind", choices=KINDS, help=f"default: detected from {what}")
    q.add_argument("--split", help=split_help, **split_kwargs)
    q.add_argument("--images-dir", metavar="D", help="COCO: the image folder (default: inferred)")
    q.add_argument("--class-map", metavar="F", help="CSV: the class_name,id file")


# ---------------------------------------------------------------------------------------------
# Tiled prediction (predict --tile, eval --tile)
# ---------------------------------------------------------------------------------------------

TILE_OVERLAP = 0.25


def add_tile_options(p: argparse.ArgumentParser) -> None:
    """--tile SIZE, --tile-overlap F, --tile-full-image, --tile-iou T (retinanet/engine/tiling.py)."""
    g = p.add_argument_group("tiles (large images with small objects)")
    g.add_argument(
        "--tile",
        type=int,
        metavar="SIZE",
        help="cut each image into overlapping SIZE px tiles, each run at its native scale (not resized to "
        "the model's input), and merge their detections",
    )
    g.add_argument(
        "--tile-overlap",
        type=float,
        metavar="F",
        help=f"overlap of neighbouring tiles as a fraction of SIZE, in [0, 1) (default {TILE_OVERLAP}): an "
        "object up to about F x SIZE px is seen whole by some tile",
    )
    g.add_argument(
        "--tile-full-image",
        action="store_true",
        help="also run the whole image at the model's scale, for objects larger than the tiles",
    )
    g.add_argument(
        "--tile-iou", type=float, metavar="T", help="IoU threshold of the merge's class-wise NMS (default: the model's)"
    )


def tile_spec(args: argparse.Namespace, batch_size: int = 4):
    """The TileSpec of --tile ... (None without --tile); a bad value is a one-line CliError."""
    from ..engine.tiling import TileSpec

    if args.tile is None:
        given = [o for o, v in (("--tile-overlap", args.tile_overlap), ("--tile-iou", args.tile_iou)) if v is not None]
        if args.tile_full_image:
            given.append("--tile-full-image")
        if given:
            raise CliError(f"{', '.join(given)}: only with --tile SIZE")
        return None
    overlap = TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    try:
        return TileSpec(args.tile, overlap, args.tile_full_image, args.tile_iou, batch_size=batch_size)
    except ValueError as e:
        raise CliError(str(e)) from None

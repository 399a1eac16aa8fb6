"""`retinanet experiment`, `figure` and `benchmark`: the paper's tables and figures, and the
speed comparison with torchvision."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError
from .common import EXIT_OK, FMT, CliError, wrap


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


def add_parsers(sub) -> None:
    """The parsers of experiment, figure and benchmark."""
    p = sub.add_parser(
        "experiment",
        help="reproduce a table of the paper (Table 1 (a)-(e))",
        formatter_class=FMT,
        usage="retinanet experiment [-h] TABLE [--scale mini|paper] [--dry-run] [KEY=VALUE ...]",
        description=wrap(
            "Train and evaluate every row of one of the paper's ablation tables (experiments/tables/"
            "TABLE.yaml: alpha = 1(a), gamma = 1(b), anchors = 1(c), ohem = 1(d), speed = 1(e); focal_power = "
            "FL against the best α-balanced CE and each γ, paired over seeds with 95 % intervals, its mini scale "
            "a setting with COCO's imbalance) and write "
            "experiments/results/TABLE_SCALE.md and .json with the measured numbers beside the paper's. "
            "Finished runs are cached by the hash of their resolved config (experiments/runs/): an "
            "interrupted table resumes, and finished rows are not trained again. Several processes may "
            "work on one table at once (one per GPU, or two with OMP_NUM_THREADS=1 on a small CPU): each "
            "run is trained by the one holding its folder's lock, the others go on to the next run and wait "
            "for the rest at the end; all write the same report. --scale paper uses the "
            "paper's exact settings (COCO, 90k iterations of 16 images: run it under torchrun on GPUs)."
        ),
        epilog="examples:\n"
        "  retinanet experiment gamma --scale mini\n"
        "  retinanet experiment alpha --scale mini data.train_path=my_coco_folder\n"
        "  torchrun --nproc_per_node 8 -m retinanet experiment anchors --scale paper\n"
        "  retinanet experiment ohem --scale paper --dry-run    # list the runs and their config hashes",
    )
    p.add_argument(
        "table",
        metavar="TABLE",
        help="alpha, gamma, anchors, ohem or speed (Table 1 (a)-(e)), focal_power, or any other "
        "experiments/tables/TABLE.yaml",
    )
    p.add_argument(
        "args", nargs="*", metavar="KEY=VALUE", help="overrides applied to every row, e.g. train.device=cuda"
    )
    p.add_argument(
        "--scale", choices=("mini", "paper"), default="mini", help="mini (synthetic data, CPU minutes) or paper"
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs without training")
    p.add_argument(
        "--retime",
        action="store_true",
        help="speed table: measure every row's ms/image again (all rows back to back; run it on a quiet machine)",
    )
    p.set_defaults(func=cmd_experiment, takes_overrides=True)

    p = sub.add_parser(
        "figure",
        help="draw the paper's Fig. 1 or Fig. 2",
        formatter_class=FMT,
        usage="retinanet figure [-h] {fig1,fig2} [--results JSON] [--out PNG]",
        description=wrap(
            "fig1: the focal loss against p_t for γ in {0, .5, 1, 2, 5}. fig2: AP against ms per image "
            "from the speed table's results (default experiments/results/speed_mini.json). Fig. 4 needs a "
            "trained model: `retinanet analyze loss-cdf`."
        ),
        epilog="examples:\n  retinanet figure fig1\n"
        "  retinanet figure fig2 --results experiments/results/speed_mini.json --out fig2.png",
    )
    p.add_argument("figure", choices=("fig1", "fig2"))
    p.add_argument("--results", metavar="JSON", help="fig2: the speed table's results JSON")
    p.add_argument(
        "--out", metavar="PNG", help="default experiments/figures/fig1_focal_loss.png or fig2_speed_accuracy.png"
    )
    p.set_defaults(func=cmd_figure)

    # Listed here for `retinanet --help`; main() hands every word after "benchmark" to
    # retinanet.tools.benchmark.main, which has its own parser (`retinanet benchmark --help`).
    sub.add_parser("benchmark", add_help=False, help="speed against torchvision's RetinaNet (benchmarks/README.md)")

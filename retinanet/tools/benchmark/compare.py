"""What the commands run, before and after a change, from two `retinanet benchmark` results
files (e.g. one made at an older commit, one at the current one, on the same machine):

    python -m retinanet.tools.benchmark.compare BEFORE.json AFTER.json

prints a markdown table (benchmarks/RESULTS.md, "The commands' own paths, before and after").
Each time is the median of its own run; torchvision's model is timed in both runs, so each side
has its own ratio to it, and the ratios are what carry across runs.

Rows:
- predict / eval / export: the model the commands run, at the ablation's size, batch 1: before,
  the plain model (what they ran until they used `retinanet.optimize_for_inference`, and what
  --no-fast runs now); after, BatchNorm folded + channels_last. Both from the after run's
  ablation, side by side in one process (the model code itself did not change).
- the training step as `retinanet train` runs it (the "ours plain" row of the train section):
  the before run's against the after run's.
- one loader worker's decode (after run only: its "before" case is the previous decode).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRAIN_ROW = "training step fp32, ours plain (as retinanet train)"
PLAIN, FAST = "plain", "fold_bn+channels_last"


def _ablation(results: dict, variant: str) -> tuple[float, float]:
    """(ms of the variant, torchvision's ms) of a results file's ablation section."""
    ab = results["ablation"]
    row = next(r for r in ab["rows"] if r["variant"] == variant)
    return row["ms"], ab["torchvision_ms"]


def _row(results: dict, prefix: str) -> dict:
    return next(r for r in results["rows"] if r["name"].startswith(prefix))


def compare_lines(before: dict, after: dict) -> list[str]:
    """The markdown table of the three paths (see the module docstring)."""
    size = after["ablation"]["size"]
    lines = [
        "| path | before (ms) | after (ms) | torchvision (ms), before / after run | before / torchvision | "
        "after / torchvision | after / before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def line(name: str, b: float, a: float, tv_b: float, tv_a: float) -> str:
        return (
            f"| {name} | {b:,.0f} | {a:,.0f} | {tv_b:,.0f} / {tv_a:,.0f} | {b / tv_b:.3f} | {a / tv_a:.3f} | "
            f"{(a / tv_a) / (b / tv_b):.3f} |"
        )

    b, tv = _ablation(after, PLAIN)
    a, _ = _ablation(after, FAST)
    lines.append(line(f"predict / eval / export (--no-fast against the default), {size} px, batch 1", b, a, tv, tv))
    tb, ta = _row(before, TRAIN_ROW), _row(after, TRAIN_ROW)
    size_batch = ta["name"].split("), ")[-1]  # "512 px, batch 2"
    name = f"training step fp32 as retinanet train runs it, {size_batch}"
    lines.append(line(name, tb["ours_ms"], ta["ours_ms"], tb["torchvision_ms"], ta["torchvision_ms"]))
    loader_lines = [
        "",
        "| one loader worker, JPEG | before (images/s) | after (images/s) | after / before "
        "| torchvision.io (images/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in after["rows"]:
        if r["section"] != "loader":
            continue
        rate = r["details"]["images_per_s"]
        size_name = r["name"].split(",")[0].replace("JPEG decode ", "")
        loader_lines.append(
            f"| {size_name} | {rate['before']:.0f} | {rate['ours']:.0f} | {rate['ours'] / rate['before']:.2f} | "
            f"{rate['torchvision']:.0f} |"
        )
    return lines + (loader_lines if len(loader_lines) > 3 else [])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m retinanet.tools.benchmark.compare BEFORE.json AFTER.json", file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in args)
    print("\n".join(compare_lines(before, after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

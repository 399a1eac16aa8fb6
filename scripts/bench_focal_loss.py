"""Benchmark: fused focal loss (forward + backward) against torchvision's, on a CPU.

Usage: python scripts/bench_focal_loss.py [--rows 200000] [--classes 80] [--repeats 7]

Times forward+backward of ``reduction="sum"`` on (rows, classes) float32 logits with ~0.1 %
positive targets (a RetinaNet-like image: ~200k anchors x 80 COCO classes). Repeats are
interleaved (ours, eager, torchvision, ...) so that load from other processes hits all alike;
the median is reported. Also times the "recompute in backward" alternative of the fused path
and the label-based path (``focal_loss_from_labels``, same logits as 2 images of 100k anchors).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from retinanet.model import losses
from retinanet.model.assignment import BACKGROUND, IGNORE


def fwd_bwd(fn, x: torch.Tensor) -> float:
    xx = x.detach().requires_grad_()
    t0 = time.perf_counter()
    fn(xx).sum().backward()
    return time.perf_counter() - t0


def eager(fn):
    def run(xx):
        os.environ[losses.NO_COMPILE_ENV] = "1"
        try:
            return fn(xx)
        finally:
            os.environ.pop(losses.NO_COMPILE_ENV, None)

    return run


def recompute(fn):
    """The alternative design: forward saves only the inputs, backward recomputes."""

    def run(xx):
        saved = losses._precompute_grad
        losses._precompute_grad = lambda logits: False
        try:
            return fn(xx)
        finally:
            losses._precompute_grad = saved

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    os.environ.pop(losses.NO_COMPILE_ENV, None)

    g = torch.Generator().manual_seed(0)
    n, k = args.rows, args.classes
    x = torch.randn(n, k, generator=g) * 3.0
    t = (torch.rand(n, k, generator=g) < 1e-3).float()
    # The same positives as per-anchor labels, split into two "images"; ~10 % of anchors ignored.
    b = 2
    labels = torch.full((n,), BACKGROUND, dtype=torch.int64)
    fg = torch.randperm(n, generator=g)[: max(1, int(n * k * 1e-3))]
    labels[fg] = torch.randint(0, k, (fg.numel(),), generator=g)
    ign = torch.rand(n, generator=g) < 0.1
    labels[ign & (labels == BACKGROUND)] = IGNORE
    labels = labels.view(b, n // b)
    xl = x.view(b, n // b, k)

    def ours(xx):
        return losses.sigmoid_focal_loss(xx, t, reduction="sum")

    cases = {
        "ours (compiled)": ours,
        "ours (compiled, recompute bwd)": recompute(ours),
        "ours (eager fallback)": eager(ours),
        "torchvision": lambda xx: torchvision.ops.sigmoid_focal_loss(xx, t, reduction="sum"),
        "ours from labels (compiled)": lambda xx: losses.focal_loss_from_labels(xx.view_as(xl), labels),
        "ours from labels (eager)": eager(lambda xx: losses.focal_loss_from_labels(xx.view_as(xl), labels)),
    }
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        for fn in cases.values():
            fwd_bwd(fn, x)
    print(f"warm-up (incl. compilation): {time.perf_counter() - t0:.1f} s")
    if losses._compile_failed:
        print("WARNING: torch.compile failed; 'compiled' rows are the eager fallback")

    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(fwd_bwd(fn, x))

    print(
        f"forward+backward, reduction=sum, {n} x {k} float32, {int(t.sum())} positives, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}:"
    )
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, m in med.items():
        print(f"  {name:32s} {m * 1e3:8.1f} ms   (min {min(times[name]) * 1e3:.1f})")
    tv = med["torchvision"]
    print(
        f"  speed-up vs torchvision: compiled {tv / med['ours (compiled)']:.1f}x, "
        f"eager fallback {tv / med['ours (eager fallback)']:.2f}x"
    )
    print(f"  labels path / dense compiled path: {med['ours from labels (compiled)'] / med['ours (compiled)']:.2f}")


if __name__ == "__main__":
    main()

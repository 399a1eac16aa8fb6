"""Convolution FLOPs of the R50-FPN RetinaNet and this machine's convolution throughput: the
estimates that skip hopeless cases, and the floors of the breakdown."""

from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from ...deploy import optimize as fast
from .timing import timed


def conv_flops(model: nn.Module, batch: int, size: int, training: bool = False) -> float:
    """FLOPs (2 per multiply-add) of the convolutions of one of our models' backbone + FPN +
    head (torchvision's R50-FPN RetinaNet has the same) for a (batch, 3, size, size) input; with
    `training`, plus their backward (input gradient where an upstream tensor needs one, weight
    gradient where the weight is trainable). Counted on the meta device: shapes, no arithmetic."""
    parts = {p: copy.deepcopy(getattr(model, p)).to("meta") for p in fast.NETWORK_PARTS}
    total = [0.0]

    def hook(conv: nn.Conv2d, inputs, output):
        x = inputs[0]
        f = 2.0 * output.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
        total[0] += f
        if training:
            total[0] += f * (x.requires_grad + conv.weight.requires_grad)

    handles = [m.register_forward_hook(hook) for p in parts.values() for m in p.modules() if isinstance(m, nn.Conv2d)]
    with torch.set_grad_enabled(training):
        x = torch.zeros(batch, 3, size, size, device="meta")
        parts["head"](parts["fpn"](parts["backbone"](x)))
    for h in handles:
        h.remove()
    return total[0]


def conv_throughput(device: torch.device, dtype: torch.dtype, channels_last: bool, hw: int, repeats: int = 5) -> dict:
    """GFLOP/s of a representative convolution: 3x3, 256 -> 256 channels (the subnets' and the
    FPN outputs' convolutions, about half of R50-FPN RetinaNet's FLOPs), batch 1, hw x hw (the P3
    map of the benchmark size). Slow paths (emulated low precision) are measured on a smaller map, so that this
    stays within seconds; `hw` in the result says which."""

    def run(side: int) -> float:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 256, side, side, generator=g).to(device, dtype)
        w = (torch.randn(256, 256, 3, 3, generator=g) * 0.02).to(device, dtype)
        if channels_last:
            x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        fn = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
        timed(fn, device)
        ts = [timed(fn, device)[0] for _ in range(repeats)]
        return 2.0 * side * side * 256 * 256 * 9 / statistics.median(ts) / 1e9

    side = min(16, hw)
    gflops = run(side)
    full_s = 2.0 * hw * hw * 256 * 256 * 9 / (gflops * 1e9)
    if full_s * repeats < 10 and hw > side:  # fast enough to measure at the real size
        side, gflops = hw, run(hw)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "channels_last": channels_last,
        "hw": side,
        "gflops_per_s": gflops,
    }


def throughput_table(device: torch.device, lowp: torch.dtype, hw: int) -> list[dict]:
    rows = []
    for dtype in (torch.float32, lowp):
        for cl in (False, True):
            rows.append(conv_throughput(device, dtype, cl, hw))
    return rows


def best_gflops(table: list[dict], dtype: torch.dtype, channels_last: bool | None = None) -> float:
    name = str(dtype).replace("torch.", "")
    vals = [
        r["gflops_per_s"]
        for r in table
        if r["dtype"] == name and (channels_last is None or r["channels_last"] == channels_last)
    ]
    return max(vals) if vals else float("nan")


def best_layout_is_channels_last(table: list[dict]) -> bool:
    """Whether the fastest float32 convolution of the throughput table is channels_last."""
    fp32 = [t for t in table if t["dtype"] == "float32"]
    return max(fp32, key=lambda t: t["gflops_per_s"])["channels_last"] if fp32 else False

"""What the sections of one `retinanet benchmark` run share: its arguments, the results and
summary rows they add to, the two inference models, the conv throughput table and the fast
inference mode (picked by the ablation, or resolved on first use)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from torch import nn

from ...deploy import optimize as fast
from ...weights.torchvision import from_torchvision
from .common import DTYPES
from .flops import best_gflops, throughput_table
from .models import torchvision_model


class Context:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.lowp = DTYPES[args.dtype]
        self.rows: list[dict] = []
        self.results: dict[str, Any] = {}
        self.fast_mode: dict[str, Any] | None = None
        self._tv: nn.Module | None = None
        self._ours: nn.Module | None = None
        self._throughput: list[dict] | None = None

    def models(self) -> tuple[nn.Module, nn.Module]:
        """(torchvision, ours): eval-mode inference models with the same weights."""
        if self._tv is None:
            tv = torchvision_model(self.args.seed)
            ours = from_torchvision(tv.state_dict())
            self._tv, self._ours = tv.to(self.device).eval(), ours.to(self.device).eval()
        return self._tv, self._ours

    def throughput(self) -> list[dict]:
        if self._throughput is None:
            hw = max(self.args.sizes) // 8
            self._throughput = throughput_table(self.device, self.lowp, hw)
            self.results["conv_throughput"] = self._throughput
        return self._throughput

    def estimate_s(self, flops: Callable[[], float], dtype: torch.dtype | None, channels_last: bool) -> float | None:
        """Seconds at least for convolutions of `flops()` FLOPs in `dtype`, from the measured conv
        throughput; for low precision on a CPU only (where it may be emulated and very slow)."""
        if self.device.type != "cpu" or dtype is None or dtype == torch.float32:
            return None
        return flops() / (best_gflops(self.throughput(), dtype, channels_last) * 1e9)

    def fast_model(self, ours: nn.Module, mode: dict) -> nn.Module:
        return fast.optimize_for_inference(
            ours,
            fold_bn=mode["fold_bn"],
            channels_last=mode["channels_last"],
            dtype=mode["dtype"],
            compile=self.compile_arg(mode),
        )

    def compile_arg(self, mode: dict):
        if not mode.get("compile"):
            return False
        # Freezing (CPU inference): inductor treats the weights as constants, prepacks them for
        # oneDNN and fuses conv + bias + ReLU (+ add); measured ~5 % over eager fold+channels_last.
        # dynamic=False: one static graph per input shape (a handful here) rather than a
        # dynamic-shape graph after the second shape.
        if self.device.type == "cpu":
            return {"options": {"freezing": True}, "dynamic": False}
        return {"dynamic": False}  # (max-autotune would add minutes of tuning per input shape)

    def resolve_fast_mode(self) -> dict:
        """--fast-mode, or (auto, without an ablation) low precision only where its measured conv
        throughput beats float32's, compile only with --compile."""
        if self.fast_mode is not None:
            return self.fast_mode
        a = self.args
        if a.fast_mode != "auto":
            dtype = DTYPES[a.fast_mode]
        else:
            table = self.throughput()
            faster = best_gflops(table, self.lowp, True) > 1.2 * best_gflops(table, torch.float32)
            dtype = self.lowp if faster else torch.float32
        short = {v: k for k, v in DTYPES.items()}[dtype]
        name = (
            "fold_bn+channels_last"
            + ("" if dtype == torch.float32 else f"+{short}")
            + ("+compile" if a.compile else "")
        )
        self.fast_mode = {
            "name": name,
            "fold_bn": True,
            "channels_last": True,
            "dtype": None if dtype == torch.float32 else dtype,
            "compile": a.compile,
            "chosen_by": "--fast-mode" if a.fast_mode != "auto" else "conv throughput",
        }
        return self.fast_mode

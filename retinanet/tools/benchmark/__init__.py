"""`retinanet benchmark`: this library against torchvision's ``retinanet_resnet50_fpn``.

Both models hold the same weights (random, made to produce many detections, as in
tests/test_torchvision_parity.py) and see the same inputs in the same process. Within each
repeat the cases of a benchmark run one after the other, in alternating order from repeat to
repeat, so that load from other processes and clock changes hit both alike; warm-up runs are
excluded and medians reported, as ratios ours / torchvision. Sections (``--only``):

- ``ablation``: each inference optimization of retinanet.fast, before and after (one size,
  batch 1), with the change in detections; it also picks the fast inference mode.
- ``inference``: R50-FPN latency per size and batch size, fp32 and the fast mode, with the
  change in detections against torchvision (matched at IoU > 0.9 with the same label, score
  difference).
- ``train``: one SGD training step (forward, backward, step), fp32 and low precision (autocast),
  with peak memory (CPU: peak RSS of a separate process per variant; CUDA: peak allocation).
- ``focal``: the focal loss, forward + backward, on 200,000 x 80 logits.
- ``assign``: anchor assignment + losses (+ backward) for 8 images of 20 boxes.
- ``postprocess``: top-k, decoding and NMS for 8 images.
- ``breakdown``: what bounds the ratios: the share of time in convolutions (torch.profiler),
  the convolution FLOPs, and this machine's convolution throughput per dtype and layout.
- ``ap``: COCO AP on the synthetic val split, fp32 against the fast mode (needs trained weights,
  e.g. from ``retinanet demo``).

Results go to OUT/results.json and OUT/results.md (self-contained: machine, command, tables,
bounds), and the summary table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from ...deploy import optimize as fast
from ...model import losses
from ...model.assignment import BACKGROUND, IGNORE
from ...weights.torchvision import from_torchvision
from ...model.backbone import freeze_batchnorm
from ...model.postprocess import postprocess_detections

SECTIONS = ("ablation", "inference", "train", "focal", "assign", "postprocess", "breakdown", "ap")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 91  # torchvision's COCO head: 90 category ids + its unused 0

# Targets of the issue, as ratios ours / torchvision (same run).
TARGETS = {
    "inference_fp32": 0.85,  # at 800 px, identical detections
    "inference_fast": 0.45,  # >= 99 % of detections matched, AP within 0.5
    "fast_matched": 0.99,
    "ap_delta": 0.5,
    "train_fp32": 0.85,
    "train_lowp": 0.55,
    "focal": 0.15,
    "assign": 0.30,
    "postprocess": 0.50,
}
MATCH_IOU = 0.9
DEFAULT_AP_WEIGHTS = "outputs/synth/retinanet_r18_synth/model_final.pth"


# =============================================================================================
# Machine
# =============================================================================================
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                info.setdefault(key, value)  # the first processor's entry
    return info


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx_vnni") if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    info = {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_family_model": f"family {cpu['cpu family']} model {cpu['model']}" if "cpu family" in cpu else None,
        "cpu_isa": isa,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
    return info


# =============================================================================================
# Models and inputs
# =============================================================================================
def torchvision_model(seed: int = 0, size: int = 800) -> nn.Module:
    """torchvision's retinanet_resnet50_fpn with random weights made to behave like a trained
    model at inference: FrozenBatchNorm2d with non-trivial statistics (as its published model),
    stem + layer1 frozen (its trainable_backbone_layers=3), class logits of about N(-3, 1) from
    128 to 800 px (every level fills its 1000 candidates above the 0.05 score threshold, NMS has
    work, the best scores stay unsaturated, ~0.6-0.9) and box deltas of std ~0.2 (sane boxes).

    Why not the parity tests' recipe (cls bias ~N(-1, 1), box weights x3): it is made for
    bit-identical paths. Its 300 best scores of a 128-px image are all above 0.9996, ties in
    fp32, and its box deltas (std ~6-9) make most boxes degenerate (zero area after clipping:
    IoU 0/0 with everything, so NMS keeps them in arbitrary numbers). Two paths that differ by
    float rounding (BN folding, another conv algorithm) then disagree through tie-breaking and
    NaN IoUs, not through their numerics: measured 58 % of detections matched at 512 px, against
    100 % (boxes within 4e-4 px) with this recipe."""
    torch.manual_seed(seed)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=size, max_size=size
    )
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        head = tv.head.classification_head.cls_logits
        head.weight.mul_(0.25)  # the feature term: std ~2-3.5 -> ~0.5-0.9 (measured, 128-512 px)
        head.bias.copy_(torch.randn_like(head.bias) * 0.5 - 3)
        tv.head.regression_head.bbox_reg.weight.mul_(0.08)  # deltas: std ~6-9 -> ~0.15-0.3 (measured)
    tv = freeze_batchnorm(tv)
    for name, p in tv.backbone.body.named_parameters():
        if name.startswith(("conv1.", "bn1.", "layer1.")):
            p.requires_grad_(False)
    return tv


def set_input_size(model: nn.Module, size: int) -> None:
    """Square `size` inputs go through both models unresized (scale 1)."""
    if hasattr(model, "transform"):  # torchvision
        model.transform.min_size = (size,)
        model.transform.max_size = size
    else:
        model.min_size = model.max_size = size


def random_images(n: int, size: int, device: torch.device, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g).to(device) for _ in range(n)]


def random_targets(n: int, boxes: int, size: int, device: torch.device, seed: int, num_classes: int = NUM_CLASSES) -> list[dict]:
    """`boxes` boxes per image, sides log-uniform in [16, size/2], inside the image; labels in
    1..num_classes-1 (torchvision's COCO ids)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        wh = torch.exp(torch.empty(boxes, 2).uniform_(math.log(16), math.log(size / 2), generator=g))
        xy = torch.rand(boxes, 2, generator=g) * (size - wh)
        out.append({
            "boxes": torch.cat([xy, xy + wh], 1).to(device),
            "labels": torch.randint(1, num_classes, (boxes,), generator=g).to(device),
        })  # fmt: skip
    return out


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# =============================================================================================
# Timing
# =============================================================================================
@dataclasses.dataclass
class Case:
    name: str
    fn: Callable[[], Any]
    # A lower bound of one run's seconds (conv FLOPs / measured conv throughput): a case that
    # cannot finish within --max-run-seconds is reported as not run, with the estimate.
    estimate_s: float | None = None
    extra_warmup: int = 0  # e.g. torch.compile: the first call compiles


@dataclasses.dataclass
class Measurement:
    times: dict[str, list[float]]
    outputs: dict[str, Any]
    first_s: dict[str, float]
    skipped: dict[str, str]

    def median_ms(self, name: str) -> float | None:
        t = self.times.get(name)
        return statistics.median(t) * 1e3 if t else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def measure(cases: Sequence[Case], args: argparse.Namespace, device: torch.device) -> Measurement:
    """Warm-up runs (excluded), then `args.repeats` rounds in which every case runs once, the
    order reversed every other round. A case whose last warm-up took longer than
    --slow-seconds is timed at most twice (its median is then of 1-2 runs; the JSON keeps all)."""
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    outputs, first, skipped, last_warm = {}, {}, {}, {}
    active = []
    for c in cases:
        if c.estimate_s is not None and c.estimate_s > args.max_run_seconds:
            skipped[c.name] = (
                f"not run: at least {c.estimate_s:.0f} s per run (its conv FLOPs at this machine's measured "
                f"conv throughput), over --max-run-seconds {args.max_run_seconds:g}"
            )
            times.pop(c.name)
            continue
        active.append(c)
    for c in active:
        for i in range(max(1, args.warmup) + c.extra_warmup):
            t, out = _timed(c.fn, device)
            if i == 0:
                first[c.name] = t
            last_warm[c.name] = t
        outputs[c.name] = out
    for r in range(args.repeats):
        for c in active if r % 2 == 0 else active[::-1]:
            if last_warm[c.name] > args.slow_seconds and len(times[c.name]) >= 2:
                continue
            times[c.name].append(_timed(c.fn, device)[0])
    return Measurement(times, outputs, first, skipped)


def _row(section: str, name: str, m: Measurement | None, ours: str | None, theirs: str | None, target: float | None = None,
         extra_ok: bool | None = None, notes: str = "", ours_ms: float | None = None, tv_ms: float | None = None, **details) -> dict:
    """A summary row: medians, ratio ours/torchvision, target and whether it is met (and
    `extra_ok`, e.g. the detection agreement, when given)."""
    if m is not None:
        ours_ms = m.median_ms(ours) if ours else None
        tv_ms = m.median_ms(theirs) if theirs else None
        for case in (ours, theirs):
            if case in m.skipped:
                notes = "; ".join(filter(None, [notes, f"{case}: {m.skipped[case]}"]))
    ratio = ours_ms / tv_ms if ours_ms and tv_ms else None
    met = None
    if target is not None and ratio is not None:
        met = ratio <= target and (extra_ok is None or extra_ok)
    return {
        "section": section, "name": name, "ours_case": ours, "torchvision_case": theirs,
        "ours_ms": ours_ms, "torchvision_ms": tv_ms, "ratio": ratio, "target": target, "met": met,
        "notes": notes, "details": details,
    }  # fmt: skip


# =============================================================================================
# Detection agreement
# =============================================================================================
def match_detections(ref: list[dict], new: list[dict], iou_thresh: float = MATCH_IOU) -> dict[str, Any]:
    """One-to-one matching of `new` detections to `ref` ones, per image: in decreasing reference
    score, each reference detection takes the unmatched new detection of the same label with the
    highest IoU > iou_thresh (identical boxes count as IoU 1). Returns the matched share (matched
    / the larger of the two counts, so that missing and extra detections both count), the
    largest score difference and the largest box difference (px) among matched pairs."""
    matched = total = 0
    max_score = max_box = 0.0
    for a, b in zip(ref, new):
        na, nb = len(a["scores"]), len(b["scores"])
        total += max(na, nb)
        if not na or not nb:
            continue
        ba, bb = a["boxes"].float().cpu(), b["boxes"].float().cpu()
        box_diff = (ba[:, None, :] - bb[None, :, :]).abs().amax(-1)
        # Boxes clipped to zero width or height at the image border have IoU 0 (or 0/0) even
        # with themselves: the same box (within 1e-3 px) counts as a match whatever its area.
        iou = torch.where(box_diff <= 1e-3, torch.ones(()), torchvision.ops.box_iou(ba, bb).nan_to_num(0.0))
        ok = (iou > iou_thresh) & (a["labels"].cpu()[:, None] == b["labels"].cpu()[None, :])
        sa, sb = a["scores"].float().cpu(), b["scores"].float().cpu()
        score_diff = (sa[:, None] - sb[None, :]).abs()
        # Highest IoU first (to 1e-3), then the closest score (identical boxes): one sort key.
        key = torch.where(ok, iou * 1e3 - score_diff, torch.full_like(iou, -torch.inf)).numpy()
        box_diff, score_diff = box_diff.numpy(), score_diff.numpy()
        free = np.ones(nb, dtype=bool)
        # Greedy one-to-one assignment is sequential by nature: one vectorised step per
        # reference detection (a few hundred per image), off the timed path.
        for i in sa.argsort(descending=True).tolist():
            cand = np.where(free, key[i], -np.inf)
            j = int(cand.argmax())
            if cand[j] == -np.inf:
                continue
            free[j] = False
            matched += 1
            max_score = max(max_score, float(score_diff[i, j]))
            max_box = max(max_box, float(box_diff[i, j]))
    return {"matched": matched, "total": total, "matched_share": matched / total if total else 1.0,
            "max_score_diff": max_score, "max_box_diff_px": max_box}  # fmt: skip


# =============================================================================================
# Convolution FLOPs and throughput (for estimates and the breakdown)
# =============================================================================================
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
        _timed(fn, device)
        ts = [_timed(fn, device)[0] for _ in range(repeats)]
        return 2.0 * side * side * 256 * 256 * 9 / statistics.median(ts) / 1e9

    side = min(16, hw)
    gflops = run(side)
    full_s = 2.0 * hw * hw * 256 * 256 * 9 / (gflops * 1e9)
    if full_s * repeats < 10 and hw > side:  # fast enough to measure at the real size
        side, gflops = hw, run(hw)
    return {"dtype": str(dtype).replace("torch.", ""), "channels_last": channels_last, "hw": side, "gflops_per_s": gflops}


def throughput_table(device: torch.device, lowp: torch.dtype, hw: int) -> list[dict]:
    rows = []
    for dtype in (torch.float32, lowp):
        for cl in (False, True):
            rows.append(conv_throughput(device, dtype, cl, hw))
    return rows


def _best_gflops(table: list[dict], dtype: torch.dtype, channels_last: bool | None = None) -> float:
    name = str(dtype).replace("torch.", "")
    vals = [r["gflops_per_s"] for r in table if r["dtype"] == name and (channels_last is None or r["channels_last"] == channels_last)]
    return max(vals) if vals else float("nan")


# =============================================================================================
# Sections
# =============================================================================================
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.lowp = DTYPES[args.dtype]
        self.rows: list[dict] = []
        self.results: dict[str, Any] = {}
        self._tv: nn.Module | None = None
        self._ours: nn.Module | None = None
        self._throughput: list[dict] | None = None
        self.fast_mode: dict[str, Any] | None = None

    # ------------------------------------------------------------------ shared models
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
        return flops() / (_best_gflops(self.throughput(), dtype, channels_last) * 1e9)

    def fast_model(self, ours: nn.Module, mode: dict) -> nn.Module:
        return fast.optimize_for_inference(
            ours, fold_bn=mode["fold_bn"], channels_last=mode["channels_last"], dtype=mode["dtype"], compile=self._compile_arg(mode)
        )

    def _compile_arg(self, mode: dict):
        if not mode.get("compile"):
            return False
        # Freezing (CPU inference): inductor treats the weights as constants, prepacks them for
        # oneDNN and fuses conv + bias + ReLU (+ add); measured ~5 % over eager fold+channels_last.
        # dynamic=False: one static graph per input shape (a handful here) rather than a
        # dynamic-shape graph after the second shape.
        if self.device.type == "cpu":
            return {"options": {"freezing": True}, "dynamic": False}
        return {"dynamic": False}  # (max-autotune would add minutes of tuning per input shape)

    # ------------------------------------------------------------------ ablation
    def ablation(self) -> None:
        a = self.args
        tv, ours = self.models()
        size = a.ablation_size or a.sizes[0]
        for m in (tv, ours):
            set_input_size(m, size)
        images = random_images(1, size, self.device, a.seed + 1)
        lowp = self.lowp
        variants = {
            "plain": None,
            "channels_last": dict(fold_bn=False, channels_last=True),
            "fold_bn": dict(fold_bn=True, channels_last=False),
            "fold_bn+channels_last": dict(fold_bn=True, channels_last=True),
            f"fold_bn+channels_last+{a.dtype}": dict(fold_bn=True, channels_last=True, dtype=lowp),
        }
        if self.device.type == "cuda":
            # On CPU, NCHW low precision is the slowest path by far (the conv throughput table
            # shows it; 65x fp32 measured at 256 px): not worth minutes of a run.
            variants[f"fold_bn+{a.dtype}"] = dict(fold_bn=True, channels_last=False, dtype=lowp)
        if a.compile:
            variants["fold_bn+channels_last+compile"] = dict(fold_bn=True, channels_last=True, compile=self._compile_arg({"compile": True}))
        models = {name: (ours if kw is None else fast.optimize_for_inference(ours, **kw)) for name, kw in variants.items()}
        cases = [Case("torchvision", lambda: _infer(tv, images))]
        for name, model in models.items():
            kw = variants[name] or {}
            est = self.estimate_s(lambda: conv_flops(ours, 1, size), kw.get("dtype"), kw.get("channels_last", False))
            cases.append(Case(name, (lambda m=model: _infer(m, images)), est, extra_warmup=1 if kw.get("compile") else 0))
        m = measure(cases, a, self.device)
        ref = m.outputs["torchvision"]
        plain_ms = m.median_ms("plain")
        tv_ms = m.median_ms("torchvision")
        rows = []
        for name in models:
            ms = m.median_ms(name)
            agree = match_detections(ref, m.outputs[name]) if name in m.outputs else None
            rows.append({
                "variant": name, "ms": ms, "vs_plain": ms / plain_ms if ms and plain_ms else None,
                "vs_torchvision": ms / tv_ms if ms and tv_ms else None, "first_run_s": m.first_s.get(name),
                "agreement_vs_torchvision": agree, "skipped": m.skipped.get(name), "runs": len(m.times.get(name, [])),
                "compiled": fast.is_compiled(models[name]) if (variants[name] or {}).get("compile") else None,
            })  # fmt: skip
        # Cached anchors: the generator's cache against computing them each call.
        gen = ours.anchor_generator
        shapes = [(size // s, size // s) for s in (8, 16, 32, 64, 128)]

        def uncached():
            gen._cache.clear()
            return gen(shapes, (size, size), self.device)

        cached = Case("anchors_cached", lambda: gen(shapes, (size, size), self.device))
        am = measure([Case("anchors_uncached", uncached), cached], a, self.device)
        # The fast mode: the fastest variant that keeps >= 99 % of the detections.
        ok = [r for r in rows if r["ms"] and r["variant"] != "plain"
              and r["agreement_vs_torchvision"]["matched_share"] >= TARGETS["fast_matched"]]
        best = min(ok, key=lambda r: r["ms"]) if ok else None
        if best is not None and a.fast_mode == "auto":
            kw = variants[best["variant"]]
            self.fast_mode = {"name": best["variant"], "fold_bn": kw["fold_bn"], "channels_last": kw["channels_last"],
                              "dtype": kw.get("dtype"), "compile": bool(kw.get("compile")), "chosen_by": f"ablation at {size} px"}
        self.results["ablation"] = {
            "size": size, "batch": 1, "torchvision_ms": tv_ms, "rows": rows,
            "anchors": {"uncached_ms": am.median_ms("anchors_uncached"), "cached_ms": am.median_ms("anchors_cached")},
            "fast_mode": self.fast_mode,
        }  # fmt: skip

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
            dtype = self.lowp if _best_gflops(table, self.lowp, True) > 1.2 * _best_gflops(table, torch.float32) else torch.float32
        short = {v: k for k, v in DTYPES.items()}[dtype]
        name = "fold_bn+channels_last" + ("" if dtype == torch.float32 else f"+{short}") + ("+compile" if a.compile else "")
        self.fast_mode = {"name": name, "fold_bn": True, "channels_last": True, "dtype": None if dtype == torch.float32 else dtype,
                          "compile": a.compile, "chosen_by": "--fast-mode" if a.fast_mode != "auto" else "conv throughput"}  # fmt: skip
        return self.fast_mode

    # ------------------------------------------------------------------ inference
    def inference(self) -> None:
        a = self.args
        tv, ours = self.models()
        mode = self.resolve_fast_mode()
        ours_fp32 = fast.optimize_for_inference(ours, fold_bn=True, channels_last=True)
        # Unless the fast mode is this same model, a separate one (compiled per input shape).
        same = mode["dtype"] is None and not mode["compile"] and mode["channels_last"] and mode["fold_bn"]
        ours_fast = ours_fp32 if same else self.fast_model(ours, mode)
        out = []
        for size in a.sizes:
            for m in (tv, ours, ours_fp32, ours_fast):
                set_input_size(m, size)
            for batch in a.batch_sizes:
                images = random_images(batch, size, self.device, a.seed + 100 * size + batch)
                cases = [Case("torchvision fp32", lambda: _infer(tv, images)), Case("ours fp32", lambda: _infer(ours_fp32, images))]
                if not same:
                    est = self.estimate_s(lambda: conv_flops(ours, batch, size), mode["dtype"], mode["channels_last"])
                    cases.append(Case("ours fast", lambda: _infer(ours_fast, images), est, extra_warmup=int(mode["compile"])))
                m = measure(cases, a, self.device)
                ref = m.outputs["torchvision fp32"]
                agree32 = match_detections(ref, m.outputs["ours fp32"])
                fast_case = "ours fp32" if same else "ours fast"
                agree_fast = match_detections(ref, m.outputs[fast_case]) if fast_case in m.outputs else None
                tag = f"{size} px, batch {batch}"
                self.rows.append(_row(
                    "inference", f"inference fp32, {tag}", m, "ours fp32", "torchvision fp32",
                    TARGETS["inference_fp32"] if size == 800 else None, extra_ok=agree32["matched_share"] == 1.0,
                    notes=f"ours: BN folded + channels_last; detections matched {_pct(agree32['matched_share'])}, "
                          f"max score diff {agree32['max_score_diff']:.1e}", agreement=agree32, runs=_runs(m), size=size, batch=batch,
                ))  # fmt: skip
                self.rows.append(_row(
                    "inference", f"inference fast mode, {tag}", m, fast_case, "torchvision fp32", TARGETS["inference_fast"],
                    extra_ok=agree_fast is not None and agree_fast["matched_share"] >= TARGETS["fast_matched"],
                    notes=f"ours: {mode['name']}" + (f"; detections matched {_pct(agree_fast['matched_share'])}, max score diff "
                                                      f"{agree_fast['max_score_diff']:.1e}" if agree_fast else ""),
                    agreement=agree_fast, runs=_runs(m), first_run_s=m.first_s, size=size, batch=batch,
                ))  # fmt: skip
                out.append({"size": size, "batch": batch, "times_s": m.times, "first_run_s": m.first_s, "skipped": m.skipped,
                            "agreement_fp32": agree32, "agreement_fast": agree_fast})  # fmt: skip
        self.results["inference"] = {"fast_mode": {**mode, "dtype": _dtype_name(mode["dtype"])}, "runs": out,
                                     "fast_compiled": fast.is_compiled(ours_fast) if mode["compile"] else None}  # fmt: skip

    # ------------------------------------------------------------------ training
    def training_variants(self) -> dict[str, tuple[str, dict | None, torch.dtype | None]]:
        """name -> (model kind, optimize_for_training options or None, autocast dtype)."""
        lp = self.args.dtype
        return {
            "torchvision fp32": ("torchvision", None, None),
            "ours fp32 plain": ("ours", None, None),  # as `retinanet train` runs it
            # channels_last None: the device's default (on for CUDA, off for CPU training)
            "ours fp32 optimized": ("ours", {"absorb_bn": True, "channels_last": None}, None),
            f"torchvision {lp}": ("torchvision", None, self.lowp),
            # low precision always channels_last: NCHW bf16/fp16 is oneDNN's slowest CPU path
            f"ours {lp}": ("ours", {"absorb_bn": True, "channels_last": True}, self.lowp),
        }

    def train(self) -> None:
        a = self.args
        size, batch = a.train_size, a.train_batch
        variants = self.training_variants()
        images = random_images(batch, size, self.device, a.seed + 7)
        targets = random_targets(batch, 5, size, self.device, a.seed + 8)
        steps, warm_losses = {}, {}
        state = torchvision_model(a.seed, size).state_dict()
        cases, estimates, flops = [], {}, []

        def train_flops() -> float:  # the same convolutions in both models; counted once
            if not flops:
                flops.append(conv_flops(from_torchvision(state, min_size=size, max_size=size).train(), batch, size, training=True))
            return flops[0]

        for name, (kind, options, dtype) in variants.items():
            model, opt, scaler = _training_setup(kind, options, state, size, self.device, dtype)
            step = functools.partial(_train_step, model, opt, images, targets, self.device, dtype, scaler)
            steps[name] = step
            estimates[name] = self.estimate_s(train_flops, dtype, channels_last=bool(options and options["channels_last"]))
            cases.append(Case(name, step, estimates[name]))
        m = measure(cases, a, self.device)
        for name, out in m.outputs.items():  # the losses of each variant's (last) warm-up step
            warm_losses[name] = {k: float(v) for k, v in out.items()}
        lp = a.dtype
        mem = self.training_memory(variants, estimates) if not a.no_memory else {}
        tag = f"{size} px, batch {batch}"

        def notes(*names, extra=()):
            parts = [f"{n}: {mem[n]['step_peak_mb']:.0f} MB" for n in names if n in mem and (mem[n] or {}).get("step_peak_mb") is not None]
            return "; ".join(filter(None, [*extra, ("peak memory of the step " + ", ".join(parts)) if parts else ""]))

        # The target row: the library's faster fp32 configuration in this run (both are shown).
        plain_ms, opt_ms = m.median_ms("ours fp32 plain"), m.median_ms("ours fp32 optimized")
        best = "ours fp32 optimized" if opt_ms and (not plain_ms or opt_ms < plain_ms) else "ours fp32 plain"
        parity = _loss_parity(warm_losses.get("torchvision fp32"), warm_losses.get(best))
        self.rows.append(_row("train", f"training step fp32, {tag}", m, best, "torchvision fp32", TARGETS["train_fp32"],
                              notes=notes(best, "torchvision fp32", extra=[f"ours: {best.split()[-1]} (the faster of the two rows below)",
                                                                           f"losses equal to {parity}"]),
                              memory={k: mem.get(k) for k in (best, "torchvision fp32")}, runs=_runs(m)))  # fmt: skip
        self.rows.append(_row("train", f"training step fp32, ours plain (as retinanet train), {tag}", m, "ours fp32 plain",
                              "torchvision fp32", notes=notes("ours fp32 plain"), runs=_runs(m)))  # fmt: skip
        opt_desc = "frozen BN in the convs" + (" + channels_last" if self.device.type == "cuda" else "")
        self.rows.append(_row("train", f"training step fp32, ours optimize_for_training ({opt_desc}), {tag}", m,
                              "ours fp32 optimized", "torchvision fp32", notes=notes("ours fp32 optimized"), runs=_runs(m)))  # fmt: skip
        self.rows.append(_row("train", f"training step {lp} autocast, {tag}", m, f"ours {lp}", f"torchvision {lp}", TARGETS["train_lowp"],
                              notes=notes(f"ours {lp}", f"torchvision {lp}", extra=["ratio to torchvision in the same precision; "
                                                                                     "ours: frozen BN in the convs + channels_last"]),
                              memory={k: mem.get(k) for k in (f"ours {lp}", f"torchvision {lp}")}, runs=_runs(m)))  # fmt: skip
        self.rows.append(_row("train", f"training step ours {lp} vs torchvision fp32, {tag}", m, f"ours {lp}", "torchvision fp32",
                              notes="what low precision buys against the fp32 baseline", runs=_runs(m)))  # fmt: skip
        self.results["train"] = {"size": size, "batch": batch, "times_s": m.times, "first_run_s": m.first_s, "skipped": m.skipped,
                                 "warmup_losses": warm_losses, "memory": mem, "fp32_target_case": best}  # fmt: skip
        if self.device.type == "cuda":
            names = ("ours fp32 plain", "ours fp32 optimized", f"ours {lp}", "torchvision fp32")
            self.results["sync_check"] = {name: _sync_points(steps[name]) for name in names}

    def training_memory(self, variants: dict, estimates: dict[str, float | None]) -> dict[str, dict]:
        """Peak memory of one training step per variant. CUDA: peak allocation in this process.
        CPU: a fresh process per variant runs two steps and reports its peak RSS (ru_maxrss),
        and the peak over its RSS before the first step (the step's own memory)."""
        a = self.args
        out = {}
        for name, (kind, options, dtype) in variants.items():
            spec = {"kind": kind, "options": options, "dtype": _dtype_name(dtype), "size": a.train_size, "batch": a.train_batch,
                    "device": a.device, "seed": a.seed, "threads": torch.get_num_threads()}  # fmt: skip
            est = estimates.get(name)
            if est is not None and 2 * est > a.max_run_seconds:
                out[name] = {"skipped": f"not run: two steps take at least {2 * est:.0f} s"}
                continue
            if self.device.type == "cuda":
                out[name] = _memory_child(spec)
                continue
            proc = subprocess.run([sys.executable, "-m", "retinanet.benchmark", "--memory-child", json.dumps(spec)],
                                  capture_output=True, text=True, timeout=max(600, 10 * a.max_run_seconds))  # fmt: skip
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]  # the exception line
            out[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": f"exit {proc.returncode}: {last[:300]}"}
        return out

    # ------------------------------------------------------------------ focal loss
    def focal(self) -> None:
        a = self.args
        n, k = a.focal_rows, 80
        g = torch.Generator().manual_seed(a.seed)
        x = (torch.randn(n, k, generator=g) * 3.0).to(self.device)
        t = (torch.rand(n, k, generator=g) < 1e-3).float().to(self.device)
        # The same positives as per-anchor labels in 2 "images", ~10 % of anchors ignored.
        labels = torch.full((n,), BACKGROUND, dtype=torch.int64)
        rows_pos, cols_pos = t.cpu().nonzero(as_tuple=True)
        labels[rows_pos] = cols_pos
        labels[(torch.rand(n, generator=g) < 0.1) & (labels == BACKGROUND)] = IGNORE
        labels = labels.view(2, n // 2).to(self.device)

        def fwd_bwd(fn):
            xx = x.detach().requires_grad_()
            loss = fn(xx).sum()
            loss.backward()
            return loss.detach(), xx.grad

        def eager(fn):
            def run(xx):
                saved = os.environ.get(losses.NO_COMPILE_ENV)
                os.environ[losses.NO_COMPILE_ENV] = "1"
                try:
                    return fn(xx)
                finally:
                    if saved is None:
                        os.environ.pop(losses.NO_COMPILE_ENV, None)
                    else:
                        os.environ[losses.NO_COMPILE_ENV] = saved
            return run

        ours = lambda xx: losses.sigmoid_focal_loss(xx, t, reduction="sum")  # noqa: E731
        from_labels = lambda xx: losses.focal_loss_from_labels(xx.view(2, n // 2, k), labels)  # noqa: E731
        tvf = lambda xx: torchvision.ops.sigmoid_focal_loss(xx, t, reduction="sum")  # noqa: E731
        cases = [
            Case("ours", lambda: fwd_bwd(ours)),
            Case("torchvision", lambda: fwd_bwd(tvf)),
            Case("ours eager fallback", lambda: fwd_bwd(eager(ours))),
            Case("ours from labels", lambda: fwd_bwd(from_labels)),
        ]
        m = measure(cases, a, self.device)
        (l1, g1), (l2, g2) = m.outputs["ours"], m.outputs["torchvision"]
        compiled = not (losses._compile_failed or losses._compile_disabled())
        self.rows.append(_row("focal", f"focal loss fwd+bwd, {n} x {k}", m, "ours", "torchvision", TARGETS["focal"],
                              notes=("fused, compiled" if compiled else "fused, EAGER (compilation failed or disabled)")
                                    + f"; eager fallback {m.median_ms('ours eager fallback'):.0f} ms, from labels "
                                      f"{m.median_ms('ours from labels'):.0f} ms",
                              loss_rel_diff=float((l1 - l2).abs() / l2.abs()), grad_max_abs_diff=float((g1 - g2).abs().max()),
                              compiled=compiled, runs=_runs(m), profile=_profile_pair(cases[0].fn, cases[1].fn, self.device)))  # fmt: skip

    # ------------------------------------------------------------------ assignment + loss
    def assign(self) -> None:
        a = self.args
        tv, ours = self.models()
        size, b = a.assign_size, a.assign_batch
        anchors, per_level = ours.anchor_generator([(size // s, size // s) for s in (8, 16, 32, 64, 128)], (size, size), self.device)
        g = torch.Generator().manual_seed(a.seed + 3)
        cls0 = (torch.randn(b, anchors.shape[0], NUM_CLASSES, generator=g) * 2 - 4).to(self.device)
        box0 = (torch.randn(b, anchors.shape[0], 4, generator=g) * 0.3).to(self.device)
        targets = random_targets(b, 20, size, self.device, a.seed + 4)

        def run(fn):
            cls, box = cls0.detach().requires_grad_(), box0.detach().requires_grad_()
            out = fn(cls, box)
            sum(out.values()).backward()
            return {k: v.detach() for k, v in out.items()}, cls.grad, box.grad

        ours_fn = lambda cls, box: ours.criterion(cls, box, anchors, targets)  # noqa: E731
        tv_fn = lambda cls, box: tv.compute_loss(targets, {"cls_logits": cls, "bbox_regression": box}, [anchors] * b)  # noqa: E731
        m = measure([Case("ours", lambda: run(ours_fn)), Case("torchvision", lambda: run(tv_fn))], a, self.device)
        (lo, gco, gbo), (lt, gct, gbt) = m.outputs["ours"], m.outputs["torchvision"]
        diffs = {
            "cls_rel_diff": float((lo["cls"] - lt["classification"]).abs() / lt["classification"].abs()),
            "box_rel_diff": float((lo["box"] - lt["bbox_regression"]).abs() / lt["bbox_regression"].abs()),
            "cls_grad_max_abs_diff": float((gco - gct).abs().max()),
        }
        self.rows.append(_row("assign", f"assignment + loss fwd+bwd, {b} images x 20 boxes, {anchors.shape[0]} anchors", m,
                              "ours", "torchvision", TARGETS["assign"],
                              notes=f"loss rel. diff cls {diffs['cls_rel_diff']:.1e}, box {diffs['box_rel_diff']:.1e}", **diffs,
                              runs=_runs(m), profile=_profile_pair(lambda: run(ours_fn), lambda: run(tv_fn), self.device)))  # fmt: skip

    # ------------------------------------------------------------------ post-processing
    def postprocess(self) -> None:
        a = self.args
        tv, ours = self.models()
        size, b = a.assign_size, a.postprocess_batch
        anchors, per_level = ours.anchor_generator([(size // s, size // s) for s in (8, 16, 32, 64, 128)], (size, size), self.device)
        g = torch.Generator().manual_seed(a.seed + 5)
        # Logits of a trained detector are mostly very negative; N(-7, 2) puts ~2 % above the
        # 0.05 score threshold, so every level fills its 1000 candidates and NMS has work.
        cls = (torch.randn(b, anchors.shape[0], NUM_CLASSES, generator=g) * 2 - 7).to(self.device)
        box = (torch.randn(b, anchors.shape[0], 4, generator=g) * 0.2).to(self.device)
        sizes = torch.tensor([[size, size]] * b, device=self.device)
        image_sizes = [(size, size)] * b

        def ours_fn():
            return postprocess_detections(cls, box, anchors, per_level, sizes, ours.box_coder, ours.score_thresh,
                                          ours.topk_candidates, ours.nms_thresh, ours.detections_per_img)  # fmt: skip

        def tv_fn():  # what torchvision's forward does after the head, minus the final rescale
            split = {"cls_logits": list(cls.split(per_level, dim=1)), "bbox_regression": list(box.split(per_level, dim=1))}
            split_anchors = [list(anchors.split(per_level))] * b
            return tv.postprocess_detections(split, split_anchors, image_sizes)

        with torch.no_grad():
            m = measure([Case("ours", ours_fn), Case("torchvision", tv_fn)], a, self.device)
            prof = _profile_pair(ours_fn, tv_fn, self.device)
        agree = match_detections(m.outputs["torchvision"], m.outputs["ours"])
        self.rows.append(_row("postprocess", f"post-processing, batch {b}, {size} px", m, "ours", "torchvision", TARGETS["postprocess"],
                              extra_ok=agree["matched_share"] == 1.0, notes=f"detections matched {_pct(agree['matched_share'])}",
                              agreement=agree, runs=_runs(m), profile=prof))  # fmt: skip

    # ------------------------------------------------------------------ breakdown
    def breakdown(self) -> None:
        a = self.args
        tv, ours = self.models()
        table = self.throughput()
        mode = self.resolve_fast_mode()
        size = max(a.sizes)
        out: dict[str, Any] = {"conv_throughput": table, "profile_runs": a.profile_runs}
        for s in a.sizes:
            out.setdefault("conv_gflop", {})[str(s)] = conv_flops(ours, 1, s) / 1e9
        for m in (tv, ours):
            set_input_size(m, size)
        images = random_images(1, size, self.device, a.seed + 11)
        ours_fp32 = fast.optimize_for_inference(ours)
        fns = {name: functools.partial(_infer, model, images) for name, model in (("torchvision fp32", tv), ("ours plain", ours), ("ours fp32", ours_fp32))}
        for fn in fns.values():
            fn()  # warm
        out["inference"] = _profile_alternating(fns, self.device, a.profile_runs)
        out["inference_size"] = size
        out["inference_conv_gflop"] = conv_flops(ours, 1, size) / 1e9
        # Training: one step each, profiled after a warm step.
        size_t, batch_t = a.train_size, a.train_batch
        state = torchvision_model(a.seed, size_t).state_dict()
        images_t = random_images(batch_t, size_t, self.device, a.seed + 7)
        targets_t = random_targets(batch_t, 5, size_t, self.device, a.seed + 8)
        steps = {}
        for name, kind in (("torchvision fp32", "torchvision"), ("ours fp32", "ours")):
            model, opt, scaler = _training_setup(kind, None, state, size_t, self.device, None)
            steps[name] = functools.partial(_train_step, model, opt, images_t, targets_t, self.device, None, scaler)
            steps[name]()  # warm
            if kind == "ours":
                out["train_conv_gflop"] = conv_flops(model, batch_t, size_t, training=True) / 1e9
        out["train"] = _profile_alternating(steps, self.device, a.profile_runs)
        out["train_size"], out["train_batch"] = size_t, batch_t
        out["fast_mode"] = mode["name"]
        self.results["breakdown"] = out

    # ------------------------------------------------------------------ AP on the synthetic val
    def ap(self) -> None:
        a = self.args
        path = Path(a.ap_weights)
        if not path.is_file():
            self.rows.append(_row("ap", "AP on the synthetic val, fast mode - fp32", None, None, None,
                                  notes=f"not run: no trained weights at {path} (run `retinanet demo` first, or --ap-weights)"))
            return
        from ...config import Config, apply_overrides, flatten
        from ...engine.trainer import build_datasets, evaluate, load_checkpoint
        from ...model.build import build_model

        ckpt = load_checkpoint(path)
        if ckpt.get("config") is None:
            raise ValueError(f"{path}: no saved config; the ap section needs a checkpoint of `retinanet train`")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = apply_overrides(Config(), flatten(ckpt["config"]))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp="off"), data=dataclasses.replace(cfg.data, num_workers=0))
        model = build_model(cfg.model.replace(pretrained_backbone=False))
        model.load_state_dict(ckpt["model"])
        model = model.to(self.device).eval()
        _, val_ds = build_datasets(cfg, train=False)
        mode = self.resolve_fast_mode()
        fast_model = self.fast_model(model, mode)
        t0 = time.perf_counter()
        plain = evaluate(model, val_ds, cfg, self.device)
        t1 = time.perf_counter()
        fastm = evaluate(fast_model, val_ds, cfg, self.device)
        t2 = time.perf_counter()
        delta = fastm["AP"] - plain["AP"]
        row = _row("ap", f"AP on the synthetic val ({len(val_ds)} images), {mode['name']} - fp32", None, None, None,
                   notes=f"AP fp32 {plain['AP']:.2f}, fast {fastm['AP']:.2f}, difference {delta:+.2f}",
                   ap_fp32=plain["AP"], ap_fast=fastm["AP"], eval_s_fp32=t1 - t0, eval_s_fast=t2 - t1)  # fmt: skip
        row["met"] = abs(delta) <= TARGETS["ap_delta"]
        row["target"] = f"ΔAP within ±{TARGETS['ap_delta']}"  # no "|": a Markdown table cell
        self.rows.append(row)


# =============================================================================================
# Helpers of the sections
# =============================================================================================
@torch.no_grad()
def _infer(model: nn.Module, images: list[Tensor]) -> list[dict]:
    return model(images)


def _training_setup(kind: str, options: dict | None, state: dict, size: int, device: torch.device, dtype: torch.dtype | None):
    """A fresh training-mode model holding `state` (a torchvision state dict), optimized with
    fast.optimize_for_training(**options) unless options is None, its SGD optimizer and (fp16
    only) a GradScaler."""
    if kind == "torchvision":
        model = torchvision_model(0, size)
        model.load_state_dict(state)
    else:
        model = from_torchvision(state, min_size=size, max_size=size)
    model = model.to(device).train()
    if options is not None:
        fast.optimize_for_training(model, **options)
    params = [p for p in model.parameters() if p.requires_grad]
    # A small LR: the step is real (momentum, weight decay) but the weights stay where they are,
    # so every timed step does the same work.
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return model, opt, scaler


def _train_step(model, opt, images, targets, device, dtype, scaler):
    """zero_grad, forward (autocast for low precision), backward, SGD step. Returns the losses
    as tensors (no .item(): no host-device synchronisation)."""
    opt.zero_grad(set_to_none=True)
    with _autocast(device, dtype):
        out = model(images, targets)
        loss = sum(out.values())
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in out.items()}


def _loss_parity(tv_losses: dict | None, ours: dict | None) -> str:
    if not tv_losses or not ours:
        return "n/a"
    rel = max(abs(ours["cls"] - tv_losses["classification"]) / abs(tv_losses["classification"]),
              abs(ours["box"] - tv_losses["bbox_regression"]) / abs(tv_losses["bbox_regression"]))  # fmt: skip
    return f"rel. {rel:.1e}"


def _memory_child(spec: dict) -> dict:
    """One variant's training memory (run in a fresh process on CPU, in-process on CUDA)."""
    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"]) if spec["dtype"] else None  # "bfloat16", "float16"
    state = torchvision_model(spec["seed"], spec["size"]).state_dict()
    model, opt, scaler = _training_setup(spec["kind"], spec["options"], state, spec["size"], device, dtype)
    images = random_images(spec["batch"], spec["size"], device, spec["seed"] + 7)
    targets = random_targets(spec["batch"], 5, spec["size"], device, spec["seed"] + 8)
    if device.type == "cuda":
        _train_step(model, opt, images, targets, device, dtype, scaler)  # momentum buffers exist from here on
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _train_step(model, opt, images, targets, device, dtype, scaler)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del model, opt
        return {"peak_mb": peak / 2**20, "step_peak_mb": (peak - base) / 2**20, "how": "torch.cuda.max_memory_allocated"}
    _train_step(model, opt, images, targets, device, dtype, scaler)  # momentum buffers, oneDNN caches, compiled loss
    _release_free_heap()  # what the first step freed, so that RSS is back to what is live
    before = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    _train_step(model, opt, images, targets, device, dtype, scaler)
    peak = _proc_status_mb("VmHWM")
    if peak is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS), the process peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    how = ("peak RSS of a fresh process during its second step (VmHWM, reset before the step), minus its RSS then "
           "(after malloc_trim)" if reset
           else "peak RSS of a fresh process over two steps (VmHWM), minus its RSS before the second")  # fmt: skip
    return {"peak_rss_mb": peak, "rss_before_mb": before, "step_peak_mb": peak - before if before is not None else None, "how": how}


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux), in MB. VmHWM is the peak RSS of this process
    image; unlike ru_maxrss it does not carry over the parent's RSS inherited through fork+exec."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return None


def _release_free_heap() -> None:
    """glibc keeps freed memory in the process (RSS); malloc_trim hands it back to the system."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: "5" into /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _sync_points(step: Callable[[], Any]) -> dict:
    """Host-device synchronisations in one training step (CUDA): torch.cuda.set_sync_debug_mode
    turns each into a warning; they are counted and their Python locations listed."""
    step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    places = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})
    return {"count": sum("synchroniz" in str(w.message) for w in caught), "where": places}


def _profile(fn: Callable[[], Any], device: torch.device) -> dict:
    """Self time of convolution kernels (forward and backward) against the total, one run."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    conv = sum(getattr(e, attr) for e in events if "conv" in e.key.lower())
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:8]
    return {"total_ms": total / 1e3, "conv_ms": conv / 1e3, "conv_share": conv / total if total else None, "wall_s": wall,
            "top_ops": [(e.key, getattr(e, attr) / 1e3) for e in top]}  # fmt: skip


def _profile_alternating(fns: dict[str, Callable[[], Any]], device: torch.device, runs: int) -> dict[str, dict]:
    """`runs` profiled runs of each function, alternating between them (so that a slow spell of
    the machine hits all alike); per function the run of median total time, with the spread of
    the totals. One run each was too noisy to bound a ratio near 0.9 (a profile once put ours
    above torchvision while the timed medians put it 10 % below)."""
    profs: dict[str, list[dict]] = {name: [] for name in fns}
    for _ in range(max(1, runs)):
        for name, fn in fns.items():
            profs[name].append(_profile(fn, device))
    out = {}
    for name, ps in profs.items():
        ps = sorted(ps, key=lambda p: p["total_ms"])
        out[name] = {**ps[len(ps) // 2], "runs": len(ps), "total_ms_range": [ps[0]["total_ms"], ps[-1]["total_ms"]]}
    return out


def _profile_pair(ours: Callable[[], Any], theirs: Callable[[], Any], device: torch.device) -> dict:
    """Where each side's time goes (one profiled run each, after the timed ones): the ops that
    bound a ratio, for the report."""
    return {"ours": _profile(ours, device), "torchvision": _profile(theirs, device)}


def _runs(m: Measurement) -> dict[str, int]:
    return {k: len(v) for k, v in m.times.items()}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


# =============================================================================================
# Report
# =============================================================================================
def _fmt_ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def _fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _fmt_met(row: dict) -> str:
    if row["met"] is None:
        return "—" if row["target"] is None else "n/a"
    return "yes" if row["met"] else "**no**"


def summary_table(rows: list[dict]) -> str:
    lines = ["| benchmark | ours (ms) | torchvision (ms) | ratio | target | met | notes |", "|---|---:|---:|---:|---:|:---:|---|"]
    for r in rows:
        target = r["target"] if isinstance(r["target"], str) else ("—" if r["target"] is None else f"<= {r['target']}")
        lines.append(f"| {r['name']} | {_fmt_ms(r['ours_ms'])} | {_fmt_ms(r['torchvision_ms'])} | {_fmt_ratio(r['ratio'])} | "
                     f"{target} | {_fmt_met(r)} | {r['notes']} |")  # fmt: skip
    return "\n".join(lines)


def bounds_text(results: dict) -> list[str]:
    """For each missed target, what bounds the ratio, from the measured breakdown."""
    out = []
    rows = results["rows"]
    bd = results.get("breakdown")
    table = results.get("conv_throughput") or (bd or {}).get("conv_throughput")
    fp32_best = _best_gflops(table, torch.float32) if table else None
    for r in rows:
        unmeasured = r["met"] is None and r["target"] is not None
        if r["met"] is not False and not unmeasured:
            continue
        gap = f"{r['name']}: ratio {_fmt_ratio(r['ratio'])} against the target {r['target']}"
        if unmeasured:
            gap = f"{r['name']}: target {r['target']} not measured ({r['notes'] or 'no ratio'})"
        elif isinstance(r["target"], float) and r["ratio"]:
            gap += f" (missed by {r['ratio'] - r['target']:.3f}, {100 * (r['ratio'] / r['target'] - 1):.0f} % over)"
        why = ""
        if r["section"] == "inference" and bd and fp32_best:
            size, batch = r["details"]["size"], r["details"]["batch"]
            gflop = bd.get("conv_gflop", {}).get(str(size))
            tv = bd["inference"].get("torchvision fp32", {})
            if gflop and r["torchvision_ms"]:
                floor_ms = gflop * batch / fp32_best * 1e3
                why = (f"The convolutions alone are {gflop * batch:.0f} GFLOP; at this machine's best measured conv throughput "
                       f"({fp32_best:.0f} GFLOP/s, fp32"
                       + (", channels_last" if _best_cl(table) else "") + f") they take at least {floor_ms:,.0f} ms, i.e. ratio "
                       f">= {floor_ms / r['torchvision_ms']:.2f} for any mode that computes them in fp32. torchvision spends "
                       f"{_pct(tv.get('conv_share'))} of its {bd['inference_size']} px forward in convolutions (profiled).")  # fmt: skip
                ours_p = bd["inference"].get("ours fp32")
                if ours_p and ours_p.get("conv_ms"):
                    achieved = bd["inference_conv_gflop"] / (ours_p["conv_ms"] / 1e3)
                    why += (f" Ours (BN folded + channels_last), profiled at {bd['inference_size']} px, batch 1: "
                            f"{ours_p['total_ms']:,.0f} ms, of which {ours_p['conv_ms']:,.0f} ms in convolutions ({achieved:.0f} "
                            f"GFLOP/s achieved) and {ours_p['total_ms'] - ours_p['conv_ms']:,.0f} ms in everything else.")
                lp = [t for t in table if t["dtype"] != "float32"]
                if lp:
                    best_lp = max(lp, key=lambda t: t["gflops_per_s"])
                    why += (f" Low precision does not help here: {best_lp['dtype']} convolutions run at "
                            f"{best_lp['gflops_per_s']:.1f} GFLOP/s (best layout) against {fp32_best:.0f} for fp32 "
                            f"(no native bf16/fp16 dot products on this CPU: {', '.join(results['machine']['cpu_isa']) or 'n/a'}).")
        elif r["section"] == "train" and "autocast" in r["name"]:
            lp = [t for t in (table or []) if t["dtype"] != "float32"]
            if lp and fp32_best:
                best_lp = max(lp, key=lambda t: t["gflops_per_s"])
                nchw = [t for t in lp if not t["channels_last"]]
                why = (f"Low-precision convolutions run at {best_lp['gflops_per_s']:.1f} GFLOP/s on this machine "
                       f"({'channels_last' if best_lp['channels_last'] else 'NCHW'}"
                       + (f"; NCHW, torchvision's layout, {nchw[0]['gflops_per_s']:.1f}" if nchw and best_lp["channels_last"] else "")
                       + f") against {fp32_best:.0f} for fp32 (no native bf16/fp16 dot products: "
                       f"{', '.join(results['machine']['cpu_isa']) or 'n/a'}): autocast makes every convolution slower, for both "
                       f"models; the ratio compares two emulated paths.")  # fmt: skip
        elif r["section"] == "train" and bd and bd.get("train"):
            tv = bd["train"].get("torchvision fp32", {})
            ours = bd["train"].get("ours fp32", {})
            if tv.get("total_ms") and ours.get("conv_ms"):
                n = tv.get("runs", 1)
                how = f"median of {n} alternating profiled steps each" if n > 1 else "one profiled step each"
                floor = ours["conv_ms"] / tv["total_ms"]
                room = r["target"] * tv["total_ms"] - ours["conv_ms"] if isinstance(r["target"], float) else None
                why = (f"Profiled ({how}): torchvision {tv['total_ms']:,.0f} ms, of which {tv['conv_ms']:,.0f} ms "
                       f"({_pct(tv['conv_share'])}) in convolutions, forward and backward; ours {ours['total_ms']:,.0f} ms, of "
                       f"which {ours['conv_ms']:,.0f} ms in convolutions and {ours['total_ms'] - ours['conv_ms']:,.0f} ms elsewhere "
                       f"(torchvision {tv['total_ms'] - tv['conv_ms']:,.0f} ms elsewhere). Both run the same convolutions (same "
                       f"layers and shapes, the same oneDNN kernels). With nothing but its convolutions left, ours would be at "
                       f"ratio {floor:.2f}" + (f"; the target leaves {room:,.0f} ms for everything else (normalization, "
                       f"activations, FPN, loss, SGD), against the {ours['total_ms'] - ours['conv_ms']:,.0f} ms it takes now"
                       if room is not None else "") + ". The convolutions themselves do not get faster here: channels_last, "
                       f"faster for inference, has a slower convolution backward on this CPU (the 'optimize_for_training' row), "
                       f"and low precision is emulated (the bf16 row).")
        prof = r["details"].get("profile")
        if prof and not why:
            def ops(p):
                return ", ".join(f"{k} {v:,.0f} ms" for k, v in p["top_ops"][:5])
            why = (f"Profiled (one run each, profiler overhead included): ours {prof['ours']['total_ms']:,.0f} ms: {ops(prof['ours'])}; "
                   f"torchvision {prof['torchvision']['total_ms']:,.0f} ms: {ops(prof['torchvision'])}.")
            if r["section"] == "postprocess":
                nms = sum(v for k, v in prof["ours"]["top_ops"] if "nms" in k)
                why += (f" Both sides run torchvision's nms kernel: torchvision once per (image, class) group, ours once per "
                        f"chunk of groups (postprocess.grouped_nms); its kernel time ({nms:,.0f} ms in ours) is close to a "
                        f"floor shared with torchvision.")
        out.append(f"- {gap}. {why}".rstrip())
    return out


def _best_cl(table: list[dict]) -> bool:
    fp32 = [t for t in table if t["dtype"] == "float32"]
    return max(fp32, key=lambda t: t["gflops_per_s"])["channels_last"] if fp32 else False


def render_markdown(results: dict) -> str:
    m = results["machine"]
    cfg = results["config"]
    lines = [
        "# RetinaNet benchmark: this library against torchvision",
        "",
        f"Machine: {m['cpu']}" + (f" ({m['cpu_family_model']})" if m.get("cpu_family_model") else "")
        + f", {m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads, ISA {', '.join(m['cpu_isa']) or 'n/a'} "
          f"(torch CPU capability {m['torch_cpu_capability']}); torch {m['torch']}, torchvision {m['torchvision']}, "
          f"Python {m['python']}, {m['platform']}" + (f"; GPU {m['gpu']} (CUDA {m['cuda']})" if m.get("gpu") else "") + ".",
        "",
        f"Command: `{results['command']}` ({results['elapsed_s'] / 60:.1f} min). Device {cfg['device']}; medians of "
        f"{cfg['repeats']} alternating runs after {cfg['warmup']} warm-up run(s); ratios are ours / torchvision, below 1 is faster.",
        "",
    ]
    for u in results.get("updates", []):
        lines += [f"Updated on {u['date']} at commit {u['commit']}: `{u['command']}` re-measured {', '.join(u['sections'])} "
                  f"({u['elapsed_s'] / 60:.1f} min, same machine); those rows and sections are from that run.", ""]
    lines += [
        "## Summary",
        "",
        summary_table(results["rows"]),
    ]
    abl = results.get("ablation")
    if abl:
        title = f"Inference optimizations, before and after ({abl['size']} px, batch 1, torchvision {_fmt_ms(abl['torchvision_ms'])} ms)"
        lines += ["", f"## {title}", "",
                  "| variant | ms | vs plain | vs torchvision | detections matched | max score diff | first run (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in abl["rows"]:
            ag = r["agreement_vs_torchvision"]
            note = f" ({r['skipped']})" if r["skipped"] else (" (compile failed: eager)" if r["compiled"] is False else "")
            matched = _pct(ag["matched_share"]) if ag else "—"
            score = f"{ag['max_score_diff']:.1e}" if ag else "—"
            first = "—" if r["first_run_s"] is None else f"{r['first_run_s']:.1f}"
            lines.append(f"| {r['variant']}{note} | {_fmt_ms(r['ms'])} | {_fmt_ratio(r['vs_plain'])} | "
                         f"{_fmt_ratio(r['vs_torchvision'])} | {matched} | {score} | {first} |")
        an = abl["anchors"]
        lines += ["", f"Anchors: computed {_fmt_ms(an['uncached_ms'])} ms, from the cache {_fmt_ms(an['cached_ms'])} ms. "
                      f"Fast mode: {abl['fast_mode']['name'] if abl['fast_mode'] else 'none kept >= 99 % of the detections'}."]  # fmt: skip
    tr = results.get("train")
    if tr and tr.get("memory"):
        lines += ["", f"## Training memory ({tr['size']} px, batch {tr['batch']})", "",
                  "| variant | step peak (MB) | process peak (MB) | how |", "|---|---:|---:|---|"]
        for name, mm in tr["memory"].items():
            if not mm or "step_peak_mb" not in mm:
                why = (mm or {}).get("skipped") or (mm or {}).get("error", "n/a")
                lines.append(f"| {name} | — | — | {why.replace('|', '/')} |")
                continue
            peak = mm.get("peak_rss_mb", mm.get("peak_mb"))
            lines.append(f"| {name} | {mm['step_peak_mb']:,.0f} | {peak:,.0f} | {mm['how']} |")
    bd = results.get("breakdown")
    table = results.get("conv_throughput")
    if table:
        lines += ["", "## Convolution throughput of this machine", "",
                  "3x3 conv, 256 -> 256 channels, batch 1 (the head's and FPN's convolutions).", "",
                  "| dtype | layout | map | GFLOP/s |", "|---|---|---:|---:|"]  # fmt: skip
        for t in table:
            layout = "channels_last" if t["channels_last"] else "NCHW"
            lines.append(f"| {t['dtype']} | {layout} | {t['hw']}x{t['hw']} | {t['gflops_per_s']:.1f} |")
    if bd:
        n = bd.get("profile_runs", 1)
        lines += ["", "## Where the time goes (torch.profiler, " + (f"median of {n} alternating runs each" if n > 1 else "one run each") + ")", "",
                  "| run | total (ms) | convolutions (ms) | share | top ops |", "|---|---:|---:|---:|---|"]  # fmt: skip
        runs = (("inference", f"{bd['inference_size']} px, batch 1"), ("train", f"training step {bd['train_size']} px, batch {bd['train_batch']}"))
        for kind, key in runs:
            for name, p in bd[kind].items():
                tops = ", ".join(f"{k} {v:,.0f}" for k, v in p["top_ops"][:4])
                lines.append(f"| {name}, {key} | {p['total_ms']:,.0f} | {p['conv_ms']:,.0f} | {_pct(p['conv_share'])} | {tops} |")
        gf = ", ".join(f"{s} px {g:.0f}" for s, g in bd["conv_gflop"].items())
        lines += ["", f"Convolution work per image (forward, GFLOP): {gf}; a training step at {bd['train_size']} px, "
                      f"batch {bd['train_batch']}: {bd.get('train_conv_gflop', float('nan')):.0f} GFLOP (forward + backward)."]  # fmt: skip
    bounds = bounds_text(results)
    if bounds:
        lines += ["", "## Missed targets and what bounds them", ""] + bounds
    sc = results.get("sync_check")
    if sc:
        lines += ["", "## Host-device synchronisations in one training step (torch.cuda.set_sync_debug_mode)", ""]
        for name, s in sc.items():
            lines.append(f"- {name}: {s['count']} ({', '.join(s['where'][:12]) or 'none'})")
    return "\n".join(lines) + "\n"


# =============================================================================================
# Entry point
# =============================================================================================
def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retinanet benchmark", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="This library against torchvision's retinanet_resnet50_fpn, same weights and inputs, same run.",
        epilog="sections: " + ", ".join(SECTIONS) + "\nexamples:\n"
               "  retinanet benchmark --out benchmarks/run                 # everything (tens of minutes on 2 CPU cores)\n"
               "  retinanet benchmark --quick --out /tmp/bench             # tiny sizes: a smoke run\n"
               "  retinanet benchmark --only focal,assign,postprocess\n"
               "  retinanet benchmark --device cuda --dtype fp16",
    )  # fmt: skip
    p.add_argument("--sizes", type=_ints, default=[512, 800], help="inference sizes in px (square images), default 512,800")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 4], help="inference batch sizes, default 1,4")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported), default 5")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per case first, default 1")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="the low precision to try (fast mode, training)")
    p.add_argument("--fast-mode", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="fast inference mode: auto = the fastest variant of the ablation keeping >= 99%% of detections")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also try torch.compile (default: on, off with --quick)")
    p.add_argument("--out", default="outputs/benchmark", help="folder for results.json and results.md")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default all): " + ",".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: a smoke run of every code path")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=512)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--ablation-size", type=int, help="default: the first of --sizes")
    p.add_argument("--focal-rows", type=int, default=200_000)
    p.add_argument("--assign-size", type=int, default=512, help="image size of the anchors for assign and postprocess")
    p.add_argument("--assign-batch", type=int, default=8)
    p.add_argument("--postprocess-batch", type=int, default=8)
    p.add_argument("--max-run-seconds", type=float, default=120.0,
                   help="skip a case whose single run would take longer (estimated from conv FLOPs and measured throughput)")
    p.add_argument("--slow-seconds", type=float, default=60.0, help="time a case slower than this at most twice")
    p.add_argument("--no-memory", action="store_true", help="skip the training peak-memory measurements")
    p.add_argument("--profile-runs", type=int, default=3, help="profiled runs per model in the breakdown (median kept), default 3")
    p.add_argument("--update", metavar="RESULTS_JSON",
                   help="re-measure only the --only sections and merge them into this earlier results.json (same "
                        "machine): its other rows stay, the re-run ones are replaced, the update is listed in the report")
    p.add_argument("--ap-weights", default=DEFAULT_AP_WEIGHTS, help="trained weights for the ap section (default: the demo's)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    return p


def _apply_quick(args: argparse.Namespace) -> None:
    args.sizes, args.batch_sizes = [128], [1]
    args.repeats, args.warmup = min(args.repeats, 2), 1
    args.train_size, args.train_batch = 128, 1
    args.focal_rows = 20_000
    args.assign_size, args.assign_batch, args.postprocess_batch = 128, 2, 2
    args.ablation_size = 128
    args.max_run_seconds = min(args.max_run_seconds, 30.0)
    args.profile_runs = 1
    if args.compile is None:
        args.compile = False


def run_benchmark(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict:
    """Run the selected sections; write OUT/results.json and OUT/results.md; return the results."""
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.quick:
        _apply_quick(args)
    if args.compile is None:
        args.compile = True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        torch.backends.cudnn.benchmark = True  # both models alike
    base = _load_update_base(args.update, device, sections) if args.update else None
    bench = Bench(args)
    if base is not None and "ablation" not in sections and (base.get("ablation") or {}).get("fast_mode"):
        bench.fast_mode = _restore_mode(base["ablation"]["fast_mode"])  # the mode the kept rows measured
    start = time.perf_counter()
    bench.results["machine"] = machine_info(device)
    bench.results["config"] = {k: v for k, v in vars(args).items() if k != "memory_child"}
    bench.results["command"] = "retinanet benchmark " + " ".join(getattr(args, "argv", []) or [])
    bench.results["targets"] = TARGETS
    for section in SECTIONS:  # fixed order: the ablation picks the fast mode used after it
        if section not in sections:
            continue
        t0 = time.perf_counter()
        echo(f"[benchmark] {section} ...")
        getattr(bench, section)()
        bench.results.setdefault("section_seconds", {})[section] = time.perf_counter() - t0
        echo(f"[benchmark] {section} done in {time.perf_counter() - t0:.0f} s")
    bench.results["rows"] = bench.rows
    bench.results["elapsed_s"] = time.perf_counter() - start
    if base is not None:
        bench.results = _merge_update(base, bench.results, sections)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(bench.results, indent=1, default=_json_default))
    md = render_markdown(bench.results)
    (out / "results.md").write_text(md)
    return bench.results


def _load_update_base(path: str, device: torch.device, sections: list[str]) -> dict:
    """The earlier results.json that --update re-measures some sections of; same machine only."""
    try:
        base = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--update {path}: cannot read an earlier results.json ({e})") from e
    if not isinstance(base, dict) or "rows" not in base or "machine" not in base:
        raise ValueError(f"--update {path}: not a results.json of `retinanet benchmark` (no rows or machine)")
    now, then = machine_info(device), base["machine"]
    differ = [k for k in ("cpu", "usable_cpus", "torch", "torchvision", "gpu") if now.get(k) != then.get(k)]
    if differ:
        raise ValueError(f"--update {path}: measured on another machine or software ({', '.join(f'{k}: {then.get(k)} now {now.get(k)}' for k in differ)}); "
                         "ratios from different machines do not belong in one report: run the whole benchmark")  # fmt: skip
    return base


def _restore_mode(mode: dict) -> dict:
    dtype = mode.get("dtype")
    return {**mode, "dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}


def _merge_update(base: dict, new: dict, sections: list[str]) -> dict:
    """`base` with the rows and section results of `new` in place of its own for `sections`."""
    merged = dict(base)
    for k, v in new.items():
        if k not in ("machine", "config", "command", "elapsed_s", "targets", "rows", "section_seconds"):
            merged[k] = v
    kept = [r for r in base["rows"] if r["section"] not in sections]
    merged["rows"] = sorted(kept + new["rows"], key=lambda r: SECTIONS.index(r["section"]))  # stable: order inside a section kept
    merged["section_seconds"] = {**base.get("section_seconds", {}), **new.get("section_seconds", {})}
    merged["targets"] = new["targets"]
    from ..experiments import git_commit

    merged["updates"] = list(base.get("updates", [])) + [{
        "command": new["command"], "sections": sections, "elapsed_s": new["elapsed_s"], "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"), "config": new["config"]}]  # fmt: skip
    return merged


def _json_default(o):
    if isinstance(o, torch.dtype):
        return _dtype_name(o)
    if isinstance(o, (Path, torch.device)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, usage errors
        return e.code if isinstance(e.code, int) else 2
    if args.memory_child:
        print(json.dumps(_memory_child(json.loads(args.memory_child))))
        return 0
    args.argv = argv
    try:
        results = run_benchmark(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(summary_table(results["rows"]))
    print(f"\nresults: {Path(args.out) / 'results.md'}, {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `breakdown` section: what bounds the ratios. The share of time in convolutions
(torch.profiler, inference and a training step), the convolution FLOPs, and this machine's
convolution throughput per dtype and layout."""

from __future__ import annotations

import functools
from typing import Any

from ...deploy import optimize as fast
from .context import Context
from .flops import conv_flops
from .models import infer, random_images, random_targets, set_input_size, torchvision_model, train_step, training_setup
from .profiling import profile_alternating


def breakdown(ctx: Context) -> None:
    a = ctx.args
    tv, ours = ctx.models()
    table = ctx.throughput()
    mode = ctx.resolve_fast_mode()
    size = max(a.sizes)
    out: dict[str, Any] = {"conv_throughput": table, "profile_runs": a.profile_runs}
    for s in a.sizes:
        out.setdefault("conv_gflop", {})[str(s)] = conv_flops(ours, 1, s) / 1e9
    for m in (tv, ours):
        set_input_size(m, size)
    images = random_images(1, size, ctx.device, a.seed + 11)
    ours_fp32 = fast.optimize_for_inference(ours)
    models = (("torchvision fp32", tv), ("ours plain", ours), ("ours fp32", ours_fp32))
    fns = {name: functools.partial(infer, model, images) for name, model in models}
    for fn in fns.values():
        fn()  # warm
    out["inference"] = profile_alternating(fns, ctx.device, a.profile_runs)
    out["inference_size"] = size
    out["inference_conv_gflop"] = conv_flops(ours, 1, size) / 1e9
    # Training: one step each, profiled after a warm step.
    size_t, batch_t = a.train_size, a.train_batch
    state = torchvision_model(a.seed, size_t).state_dict()
    images_t = random_images(batch_t, size_t, ctx.device, a.seed + 7)
    targets_t = random_targets(batch_t, 5, size_t, ctx.device, a.seed + 8)
    steps = {}
    for name, kind in (("torchvision fp32", "torchvision"), ("ours fp32", "ours")):
        model, opt, scaler = training_setup(kind, None, state, size_t, ctx.device, None)
        steps[name] = functools.partial(train_step, model, opt, images_t, targets_t, ctx.device, None, scaler)
        steps[name]()  # warm
        if kind == "ours":
            out["train_conv_gflop"] = conv_flops(model, batch_t, size_t, training=True) / 1e9
    out["train"] = profile_alternating(steps, ctx.device, a.profile_runs)
    out["train_size"], out["train_batch"] = size_t, batch_t
    out["fast_mode"] = mode["name"]
    ctx.results["breakdown"] = out

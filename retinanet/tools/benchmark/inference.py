"""The `ablation` and `inference` sections: each inference optimization before and after (and
the fast mode it picks), then R50-FPN latency per size and batch size against torchvision."""

from __future__ import annotations

from ...deploy import optimize as fast
from .agreement import match_detections
from .common import LEVEL_STRIDES, TARGETS, dtype_name, pct
from .context import Context
from .flops import conv_flops
from .models import infer, random_images, set_input_size
from .timing import Case, measure, run_counts, summary_row


def ablation(ctx: Context) -> None:
    a = ctx.args
    tv, ours = ctx.models()
    size = a.ablation_size or a.sizes[0]
    for m in (tv, ours):
        set_input_size(m, size)
    images = random_images(1, size, ctx.device, a.seed + 1)
    lowp = ctx.lowp
    variants = {
        "plain": None,
        "channels_last": dict(fold_bn=False, channels_last=True),
        "fold_bn": dict(fold_bn=True, channels_last=False),
        "fold_bn+channels_last": dict(fold_bn=True, channels_last=True),
        f"fold_bn+channels_last+{a.dtype}": dict(fold_bn=True, channels_last=True, dtype=lowp),
    }
    if ctx.device.type == "cuda":
        # On CPU, NCHW low precision is the slowest path by far (the conv throughput table
        # shows it; 65x fp32 measured at 256 px): not worth minutes of a run.
        variants[f"fold_bn+{a.dtype}"] = dict(fold_bn=True, channels_last=False, dtype=lowp)
    if a.compile:
        variants["fold_bn+channels_last+compile"] = dict(
            fold_bn=True, channels_last=True, compile=ctx.compile_arg({"compile": True})
        )
    models = {name: (ours if kw is None else fast.optimize_for_inference(ours, **kw)) for name, kw in variants.items()}
    cases = [Case("torchvision", lambda: infer(tv, images))]
    for name, model in models.items():
        kw = variants[name] or {}
        est = ctx.estimate_s(lambda: conv_flops(ours, 1, size), kw.get("dtype"), kw.get("channels_last", False))
        cases.append(Case(name, (lambda m=model: infer(m, images)), est, extra_warmup=1 if kw.get("compile") else 0))
    m = measure(cases, a, ctx.device)
    ref = m.outputs["torchvision"]
    plain_ms = m.median_ms("plain")
    tv_ms = m.median_ms("torchvision")
    rows = []
    for name in models:
        ms = m.median_ms(name)
        agree = match_detections(ref, m.outputs[name]) if name in m.outputs else None
        rows.append(
            {
                "variant": name,
                "ms": ms,
                "vs_plain": ms / plain_ms if ms and plain_ms else None,
                "vs_torchvision": ms / tv_ms if ms and tv_ms else None,
                "first_run_s": m.first_s.get(name),
                "agreement_vs_torchvision": agree,
                "skipped": m.skipped.get(name),
                "runs": len(m.times.get(name, [])),
                "compiled": fast.is_compiled(models[name]) if (variants[name] or {}).get("compile") else None,
            }
        )
    # Cached anchors: the generator's cache against computing them each call.
    gen = ours.anchor_generator
    shapes = [(size // s, size // s) for s in LEVEL_STRIDES]

    def uncached():
        gen.clear_cache()
        return gen(shapes, (size, size), ctx.device)

    cached = Case("anchors_cached", lambda: gen(shapes, (size, size), ctx.device))
    am = measure([Case("anchors_uncached", uncached), cached], a, ctx.device)
    # The fast mode: the fastest variant that keeps >= 99 % of the detections.
    ok = [
        r
        for r in rows
        if r["ms"]
        and r["variant"] != "plain"
        and r["agreement_vs_torchvision"]["matched_share"] >= TARGETS["fast_matched"]
    ]
    best = min(ok, key=lambda r: r["ms"]) if ok else None
    if best is not None and a.fast_mode == "auto":
        kw = variants[best["variant"]]
        ctx.fast_mode = {
            "name": best["variant"],
            "fold_bn": kw["fold_bn"],
            "channels_last": kw["channels_last"],
            "dtype": kw.get("dtype"),
            "compile": bool(kw.get("compile")),
            "chosen_by": f"ablation at {size} px",
        }
    ctx.results["ablation"] = {
        "size": size,
        "batch": 1,
        "torchvision_ms": tv_ms,
        "rows": rows,
        "anchors": {"uncached_ms": am.median_ms("anchors_uncached"), "cached_ms": am.median_ms("anchors_cached")},
        "fast_mode": ctx.fast_mode,
    }


def inference(ctx: Context) -> None:
    a = ctx.args
    tv, ours = ctx.models()
    mode = ctx.resolve_fast_mode()
    ours_fp32 = fast.optimize_for_inference(ours, fold_bn=True, channels_last=True)
    # Unless the fast mode is this same model, a separate one (compiled per input shape).
    same = mode["dtype"] is None and not mode["compile"] and mode["channels_last"] and mode["fold_bn"]
    ours_fast = ours_fp32 if same else ctx.fast_model(ours, mode)
    out = []
    for size in a.sizes:
        for m in (tv, ours, ours_fp32, ours_fast):
            set_input_size(m, size)
        for batch in a.batch_sizes:
            images = random_images(batch, size, ctx.device, a.seed + 100 * size + batch)
            cases = [
                Case("torchvision fp32", lambda: infer(tv, images)),
                Case("ours fp32", lambda: infer(ours_fp32, images)),
            ]
            if not same:
                est = ctx.estimate_s(lambda: conv_flops(ours, batch, size), mode["dtype"], mode["channels_last"])
                cases.append(
                    Case("ours fast", lambda: infer(ours_fast, images), est, extra_warmup=int(mode["compile"]))
                )
            m = measure(cases, a, ctx.device)
            ref = m.outputs["torchvision fp32"]
            agree32 = match_detections(ref, m.outputs["ours fp32"])
            fast_case = "ours fp32" if same else "ours fast"
            agree_fast = match_detections(ref, m.outputs[fast_case]) if fast_case in m.outputs else None
            tag = f"{size} px, batch {batch}"
            ctx.rows.append(
                summary_row(
                    "inference",
                    f"inference fp32, {tag}",
                    m,
                    "ours fp32",
                    "torchvision fp32",
                    TARGETS["inference_fp32"] if size == 800 else None,
                    extra_ok=agree32["matched_share"] == 1.0,
                    notes=f"ours: BN folded + channels_last; detections matched {pct(agree32['matched_share'])}, "
                    f"max score diff {agree32['max_score_diff']:.1e}",
                    agreement=agree32,
                    runs=run_counts(m),
                    size=size,
                    batch=batch,
                )
            )
            fast_notes = f"ours: {mode['name']}"
            if agree_fast:
                fast_notes += (
                    f"; detections matched {pct(agree_fast['matched_share'])}, "
                    f"max score diff {agree_fast['max_score_diff']:.1e}"
                )
            ctx.rows.append(
                summary_row(
                    "inference",
                    f"inference fast mode, {tag}",
                    m,
                    fast_case,
                    "torchvision fp32",
                    TARGETS["inference_fast"],
                    extra_ok=agree_fast is not None and agree_fast["matched_share"] >= TARGETS["fast_matched"],
                    notes=fast_notes,
                    agreement=agree_fast,
                    runs=run_counts(m),
                    first_run_s=m.first_s,
                    size=size,
                    batch=batch,
                )
            )
            out.append(
                {
                    "size": size,
                    "batch": batch,
                    "times_s": m.times,
                    "first_run_s": m.first_s,
                    "skipped": m.skipped,
                    "agreement_fp32": agree32,
                    "agreement_fast": agree_fast,
                }
            )
    ctx.results["inference"] = {
        "fast_mode": {**mode, "dtype": dtype_name(mode["dtype"])},
        "runs": out,
        "fast_compiled": fast.is_compiled(ours_fast) if mode["compile"] else None,
    }

"""results.md of `retinanet benchmark` (committed as benchmarks/RESULTS.md): the summary table,
the tables of the sections, and for each missed target the prose that says what bounds it, from
the measured breakdown."""

from __future__ import annotations

import torch

from .common import pct
from .flops import best_gflops, best_layout_is_channels_last


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
    lines = [
        "| benchmark | ours (ms) | torchvision (ms) | ratio | target | met | notes |",
        "|---|---:|---:|---:|---:|:---:|---|",
    ]
    for r in rows:
        target = r["target"] if isinstance(r["target"], str) else ("—" if r["target"] is None else f"<= {r['target']}")
        lines.append(
            f"| {r['name']} | {_fmt_ms(r['ours_ms'])} | {_fmt_ms(r['torchvision_ms'])} | {_fmt_ratio(r['ratio'])} | "
            f"{target} | {_fmt_met(r)} | {r['notes']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# What bounds a missed target
# ---------------------------------------------------------------------------------------------
def _isa(results: dict) -> str:
    return ", ".join(results["machine"]["cpu_isa"]) or "n/a"


def _inference_bound(r: dict, results: dict, bd: dict, table: list[dict], fp32_best: float) -> str:
    """The floor that the fp32 convolutions put under an inference ratio."""
    size, batch = r["details"]["size"], r["details"]["batch"]
    gflop = bd.get("conv_gflop", {}).get(str(size))
    tv = bd["inference"].get("torchvision fp32", {})
    if not (gflop and r["torchvision_ms"]):
        return ""
    floor_ms = gflop * batch / fp32_best * 1e3
    layout = ", channels_last" if best_layout_is_channels_last(table) else ""
    why = (
        f"The convolutions alone are {gflop * batch:.0f} GFLOP; at this machine's best measured conv throughput "
        f"({fp32_best:.0f} GFLOP/s, fp32{layout}) they take at least {floor_ms:,.0f} ms, i.e. ratio "
        f">= {floor_ms / r['torchvision_ms']:.2f} for any mode that computes them in fp32. torchvision spends "
        f"{pct(tv.get('conv_share'))} of its {bd['inference_size']} px forward in convolutions (profiled)."
    )
    ours_p = bd["inference"].get("ours fp32")
    if ours_p and ours_p.get("conv_ms"):
        achieved = bd["inference_conv_gflop"] / (ours_p["conv_ms"] / 1e3)
        why += (
            f" Ours (BN folded + channels_last), profiled at {bd['inference_size']} px, batch 1: "
            f"{ours_p['total_ms']:,.0f} ms, of which {ours_p['conv_ms']:,.0f} ms in convolutions ({achieved:.0f} "
            f"GFLOP/s achieved) and {ours_p['total_ms'] - ours_p['conv_ms']:,.0f} ms in everything else."
        )
    lp = [t for t in table if t["dtype"] != "float32"]
    if lp:
        best_lp = max(lp, key=lambda t: t["gflops_per_s"])
        why += (
            f" Low precision does not help here: {best_lp['dtype']} convolutions run at "
            f"{best_lp['gflops_per_s']:.1f} GFLOP/s (best layout) against {fp32_best:.0f} for fp32 "
            f"(no native bf16/fp16 dot products on this CPU: {_isa(results)})."
        )
    return why


def _lowp_train_bound(results: dict, table: list[dict] | None, fp32_best: float | None) -> str:
    """Low-precision convolutions against fp32 ones: what autocast costs on this machine."""
    lp = [t for t in (table or []) if t["dtype"] != "float32"]
    if not (lp and fp32_best):
        return ""
    best_lp = max(lp, key=lambda t: t["gflops_per_s"])
    nchw = [t for t in lp if not t["channels_last"]]
    layouts = "channels_last" if best_lp["channels_last"] else "NCHW"
    if nchw and best_lp["channels_last"]:
        layouts += f"; NCHW, torchvision's layout, {nchw[0]['gflops_per_s']:.1f}"
    return (
        f"Low-precision convolutions run at {best_lp['gflops_per_s']:.1f} GFLOP/s on this machine ({layouts}) "
        f"against {fp32_best:.0f} for fp32 (no native bf16/fp16 dot products: {_isa(results)}): autocast makes every "
        "convolution slower, for both models; the ratio compares two emulated paths."
    )


def _train_bound(r: dict, bd: dict) -> str:
    """The share of a training step in convolutions, which both models run alike."""
    tv = bd["train"].get("torchvision fp32", {})
    ours = bd["train"].get("ours fp32", {})
    if not (tv.get("total_ms") and ours.get("conv_ms")):
        return ""
    n = tv.get("runs", 1)
    how = f"median of {n} alternating profiled steps each" if n > 1 else "one profiled step each"
    floor = ours["conv_ms"] / tv["total_ms"]
    room = r["target"] * tv["total_ms"] - ours["conv_ms"] if isinstance(r["target"], float) else None
    ours_rest, tv_rest = ours["total_ms"] - ours["conv_ms"], tv["total_ms"] - tv["conv_ms"]
    why = (
        f"Profiled ({how}): torchvision {tv['total_ms']:,.0f} ms, of which {tv['conv_ms']:,.0f} ms "
        f"({pct(tv['conv_share'])}) in convolutions, forward and backward; ours {ours['total_ms']:,.0f} ms, of "
        f"which {ours['conv_ms']:,.0f} ms in convolutions and {ours_rest:,.0f} ms elsewhere "
        f"(torchvision {tv_rest:,.0f} ms elsewhere). Both run the same convolutions (same "
        "layers and shapes, the same oneDNN kernels). With nothing but its convolutions left, ours would be at "
        f"ratio {floor:.2f}"
    )
    if room is not None:
        why += (
            f"; the target leaves {room:,.0f} ms for everything else (normalization, "
            f"activations, FPN, loss, SGD), against the {ours_rest:,.0f} ms it takes now"
        )
    return why + (
        ". The convolutions themselves do not get faster here: channels_last, "
        "faster for inference, has a slower convolution backward on this CPU (the 'optimize_for_training' row), "
        "and low precision is emulated (the bf16 row)."
    )


def _profile_bound(r: dict, prof: dict) -> str:
    """The top ops of each side's profiled run."""

    def ops(p):
        return ", ".join(f"{k} {v:,.0f} ms" for k, v in p["top_ops"][:5])

    why = (
        f"Profiled (one run each, profiler overhead included): ours {prof['ours']['total_ms']:,.0f} ms: "
        f"{ops(prof['ours'])}; torchvision {prof['torchvision']['total_ms']:,.0f} ms: {ops(prof['torchvision'])}."
    )
    if r["section"] == "postprocess":
        nms = sum(v for k, v in prof["ours"]["top_ops"] if "nms" in k)
        why += (
            " Both sides run torchvision's nms kernel: torchvision once per (image, class) group, ours once per "
            f"chunk of groups (postprocess.grouped_nms); its kernel time ({nms:,.0f} ms in ours) is close to a "
            "floor shared with torchvision."
        )
    return why


def bounds_text(results: dict) -> list[str]:
    """For each missed target, what bounds the ratio, from the measured breakdown."""
    out = []
    bd = results.get("breakdown")
    table = results.get("conv_throughput") or (bd or {}).get("conv_throughput")
    fp32_best = best_gflops(table, torch.float32) if table else None
    for r in results["rows"]:
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
            why = _inference_bound(r, results, bd, table, fp32_best)
        elif r["section"] == "train" and "autocast" in r["name"]:
            why = _lowp_train_bound(results, table, fp32_best)
        elif r["section"] == "train" and bd and bd.get("train"):
            why = _train_bound(r, bd)
        prof = r["details"].get("profile")
        if prof and not why:
            why = _profile_bound(r, prof)
        out.append(f"- {gap}. {why}".rstrip())
    return out


# ---------------------------------------------------------------------------------------------
# results.md
# ---------------------------------------------------------------------------------------------
def _header_lines(results: dict) -> list[str]:
    m = results["machine"]
    cfg = results["config"]
    family = f" ({m['cpu_family_model']})" if m.get("cpu_family_model") else ""
    gpu = f"; GPU {m['gpu']} (CUDA {m['cuda']})" if m.get("gpu") else ""
    lines = [
        "# RetinaNet benchmark: this library against torchvision",
        "",
        f"Machine: {m['cpu']}{family}, {m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads, "
        f"ISA {', '.join(m['cpu_isa']) or 'n/a'} (torch CPU capability {m['torch_cpu_capability']}); "
        f"torch {m['torch']}, torchvision {m['torchvision']}, Python {m['python']}, {m['platform']}{gpu}.",
        "",
        f"Command: `{results['command']}` ({results['elapsed_s'] / 60:.1f} min). Device {cfg['device']}; medians of "
        f"{cfg['repeats']} alternating runs after {cfg['warmup']} warm-up run(s); ratios are ours / torchvision, "
        "below 1 is faster.",
        "",
    ]
    for u in results.get("updates", []):
        lines += [
            f"Updated on {u['date']} at commit {u['commit']}: `{u['command']}` re-measured {', '.join(u['sections'])} "
            f"({u['elapsed_s'] / 60:.1f} min, same machine); those rows and sections are from that run.",
            "",
        ]
    return lines


def _ablation_lines(abl: dict) -> list[str]:
    title = (
        f"Inference optimizations, before and after ({abl['size']} px, batch 1, "
        f"torchvision {_fmt_ms(abl['torchvision_ms'])} ms)"
    )
    lines = [
        "",
        f"## {title}",
        "",
        "| variant | ms | vs plain | vs torchvision | detections matched | max score diff | first run (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in abl["rows"]:
        ag = r["agreement_vs_torchvision"]
        note = f" ({r['skipped']})" if r["skipped"] else (" (compile failed: eager)" if r["compiled"] is False else "")
        matched = pct(ag["matched_share"]) if ag else "—"
        score = f"{ag['max_score_diff']:.1e}" if ag else "—"
        first = "—" if r["first_run_s"] is None else f"{r['first_run_s']:.1f}"
        lines.append(
            f"| {r['variant']}{note} | {_fmt_ms(r['ms'])} | {_fmt_ratio(r['vs_plain'])} | "
            f"{_fmt_ratio(r['vs_torchvision'])} | {matched} | {score} | {first} |"
        )
    an = abl["anchors"]
    fast_mode = abl["fast_mode"]["name"] if abl["fast_mode"] else "none kept >= 99 % of the detections"
    lines += [
        "",
        f"Anchors: computed {_fmt_ms(an['uncached_ms'])} ms, from the cache {_fmt_ms(an['cached_ms'])} ms. "
        f"Fast mode: {fast_mode}.",
    ]
    return lines


def _memory_lines(tr: dict) -> list[str]:
    lines = [
        "",
        f"## Training memory ({tr['size']} px, batch {tr['batch']})",
        "",
        "| variant | step peak (MB) | process peak (MB) | how |",
        "|---|---:|---:|---|",
    ]
    for name, mm in tr["memory"].items():
        if not mm or "step_peak_mb" not in mm:
            why = (mm or {}).get("skipped") or (mm or {}).get("error", "n/a")
            lines.append(f"| {name} | — | — | {why.replace('|', '/')} |")
            continue
        peak = mm.get("peak_rss_mb", mm.get("peak_mb"))
        lines.append(f"| {name} | {mm['step_peak_mb']:,.0f} | {peak:,.0f} | {mm['how']} |")
    return lines


def _throughput_lines(table: list[dict]) -> list[str]:
    lines = [
        "",
        "## Convolution throughput of this machine",
        "",
        "3x3 conv, 256 -> 256 channels, batch 1 (the head's and FPN's convolutions).",
        "",
        "| dtype | layout | map | GFLOP/s |",
        "|---|---|---:|---:|",
    ]
    for t in table:
        layout = "channels_last" if t["channels_last"] else "NCHW"
        lines.append(f"| {t['dtype']} | {layout} | {t['hw']}x{t['hw']} | {t['gflops_per_s']:.1f} |")
    return lines


def _breakdown_lines(bd: dict) -> list[str]:
    n = bd.get("profile_runs", 1)
    how = f"median of {n} alternating runs each" if n > 1 else "one run each"
    lines = [
        "",
        f"## Where the time goes (torch.profiler, {how})",
        "",
        "| run | total (ms) | convolutions (ms) | share | top ops |",
        "|---|---:|---:|---:|---|",
    ]
    runs = (
        ("inference", f"{bd['inference_size']} px, batch 1"),
        ("train", f"training step {bd['train_size']} px, batch {bd['train_batch']}"),
    )
    for kind, key in runs:
        for name, p in bd[kind].items():
            tops = ", ".join(f"{k} {v:,.0f}" for k, v in p["top_ops"][:4])
            lines.append(
                f"| {name}, {key} | {p['total_ms']:,.0f} | {p['conv_ms']:,.0f} | {pct(p['conv_share'])} | {tops} |"
            )
    gf = ", ".join(f"{s} px {g:.0f}" for s, g in bd["conv_gflop"].items())
    lines += [
        "",
        f"Convolution work per image (forward, GFLOP): {gf}; a training step at {bd['train_size']} px, "
        f"batch {bd['train_batch']}: {bd.get('train_conv_gflop', float('nan')):.0f} GFLOP (forward + backward).",
    ]
    return lines


def render_markdown(results: dict) -> str:
    lines = _header_lines(results) + ["## Summary", "", summary_table(results["rows"])]
    if results.get("ablation"):
        lines += _ablation_lines(results["ablation"])
    tr = results.get("train")
    if tr and tr.get("memory"):
        lines += _memory_lines(tr)
    if results.get("conv_throughput"):
        lines += _throughput_lines(results["conv_throughput"])
    if results.get("breakdown"):
        lines += _breakdown_lines(results["breakdown"])
    bounds = bounds_text(results)
    if bounds:
        lines += ["", "## Missed targets and what bounds them", ""] + bounds
    sc = results.get("sync_check")
    if sc:
        lines += ["", "## Host-device synchronisations in one training step (torch.cuda.set_sync_debug_mode)", ""]
        for name, s in sc.items():
            lines.append(f"- {name}: {s['count']} ({', '.join(s['where'][:12]) or 'none'})")
    return "\n".join(lines) + "\n"

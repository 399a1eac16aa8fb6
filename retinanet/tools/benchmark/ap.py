"""The `ap` section: COCO AP on the synthetic val split, fp32 against the fast inference mode
(needs trained weights, e.g. from `retinanet demo`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .common import TARGETS
from .context import Context
from .timing import summary_row


def ap(ctx: Context) -> None:
    path = Path(ctx.args.ap_weights)
    if not path.is_file():
        notes = f"not run: no trained weights at {path} (run `retinanet demo` first, or --ap-weights)"
        ctx.rows.append(summary_row("ap", "AP on the synthetic val, fast mode - fp32", None, None, None, notes=notes))
        return
    # Imported here: the engine and the data pipeline load only when this section runs.
    from ...data.build import build_datasets
    from ...engine import evaluate
    from ...weights.loader import load_model

    # load_model refuses a checkpoint of ours without a saved config (WeightsError, a ValueError: exit 2).
    loaded = load_model(str(path))
    # Evaluation in this process, in float32: no data-loader workers, no autocast from the run's config.
    cfg = dataclasses.replace(
        loaded.config,
        train=dataclasses.replace(loaded.config.train, amp="off"),
        data=dataclasses.replace(loaded.config.data, num_workers=0),
    )
    model = loaded.model.to(ctx.device).eval()
    _, val_ds = build_datasets(cfg, train=False)
    mode = ctx.resolve_fast_mode()
    fast_model = ctx.fast_model(model, mode)
    t0 = time.perf_counter()
    plain = evaluate(model, val_ds, cfg, ctx.device)
    t1 = time.perf_counter()
    fastm = evaluate(fast_model, val_ds, cfg, ctx.device)
    t2 = time.perf_counter()
    delta = fastm["AP"] - plain["AP"]
    row = summary_row(
        "ap",
        f"AP on the synthetic val ({len(val_ds)} images), {mode['name']} - fp32",
        None,
        None,
        None,
        notes=f"AP fp32 {plain['AP']:.2f}, fast {fastm['AP']:.2f}, difference {delta:+.2f}",
        ap_fp32=plain["AP"],
        ap_fast=fastm["AP"],
        eval_s_fp32=t1 - t0,
        eval_s_fast=t2 - t1,
    )
    row["met"] = abs(delta) <= TARGETS["ap_delta"]
    row["target"] = f"ΔAP within ±{TARGETS['ap_delta']}"  # no "|": a Markdown table cell
    ctx.rows.append(row)

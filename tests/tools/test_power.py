"""Tables with paired comparisons (retinanet/tools/power.py, stats.py): intervals by hand, seeds
added until an interval is narrow enough, the best row chosen on common seeds, the report's
comparisons, Fig. 4 shares and imbalance from real tiny runs."""

import json
import math

import pytest
import yaml

from retinanet.config import ConfigError
from retinanet.data.synth import generate_synthetic
from retinanet.tools import experiments as ex
from retinanet.tools.stats import mean_ci95, paired_difference, t975

TINY = [
    "model.backbone=resnet18",
    "model.norm=bn",
    "model.freeze_at=0",
    "model.head_norm=gn",
    "model.min_size=128",
    "model.max_size=128",
    "model.fpn_channels=64",
    "model.head_convs=1",
    "train.batch_size=4",
    "train.base_batch_size=4",
    "train.max_iter=3",
    "train.lr_steps=[2]",
    "train.warmup_iters=1",
    "train.checkpoint_period=3",
    "train.log_period=1",
    "data.num_workers=0",
]


def test_t_quantiles_and_intervals_by_hand():
    assert (t975(1), t975(3), t975(30), t975(45), t975(100_000)) == (12.706, 3.182, 2.042, 2.021, 1.960)
    with pytest.raises(ValueError):
        t975(0)
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # 1.291
    assert mean == 2.5 and half == pytest.approx(3.182 * sd / 2)
    assert mean_ci95([7.0]) == (7.0, None)
    d = paired_difference({0: 10.0, 1: 12.0, 2: 11.0, 5: 99.0}, {0: 9.0, 1: 10.0, 2: 8.0, 3: 1.0})
    assert d["seeds"] == 3 and d["per_seed"] == {0: 1.0, 1: 2.0, 2: 3.0}  # only the shared seeds
    assert d["diff"] == 2.0 and d["ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))


def _table(tmp_path, base, **extra):
    tables = tmp_path / "tables"
    tables.mkdir(exist_ok=True)
    table = {
        "title": "power",
        "base": {"mini": str(base)},
        "common": {"mini": TINY},
        "rows": [
            {"name": "FL", "overrides": ["model.cls_loss=focal"], "seeds": {"mini": 2}},
            {"name": "CE α=.50", "overrides": ["model.cls_loss=ce", "model.focal_alpha=0.5"], "seeds": {"mini": 2}},
            {"name": "CE α=.75", "overrides": ["model.cls_loss=ce", "model.focal_alpha=0.75"], "seeds": {"mini": 2}},
        ],
        **extra,
    }
    (tables / "power.yaml").write_text(yaml.safe_dump(table, allow_unicode=True))
    return tables


# Per-seed AP of the stubbed runs: a seed effect shared by all rows (what pairing cancels), and the
# row's own level. FL - CE α=.75 per seed: 3.0, 3.4, 2.6, 3.2, 2.8, 3.0, ...
SEED_EFFECT = [0.0, 5.0, -4.0, 2.0, -6.0, 1.0, 3.0]
FL_EXTRA = [3.0, 3.4, 2.6, 3.2, 2.8, 3.0, 3.0]


def _stub_ap(cfg) -> float:
    s = cfg.seed
    if cfg.model.cls_loss == "focal":
        return 27.0 + SEED_EFFECT[s] + FL_EXTRA[s]
    return {0.5: 20.0, 0.75: 27.0}[cfg.model.focal_alpha] + SEED_EFFECT[s]


def test_seeds_are_added_until_the_paired_interval_is_narrow_enough(tmp_path, monkeypatch):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"kind": "synth", "train_path": str(tmp_path / "unused")}}))
    tables = _table(
        tmp_path,
        base,
        comparisons=[{"a": "FL", "b": "best:CE α="}],
        power={"metric": "AP", "ci95": 0.5, "min_seeds": 3, "max_seeds": 6},
    )
    calls = []

    def fake_run_one(cfg, run_dir):
        if (run_dir / "result.json").is_file():
            return json.loads((run_dir / "result.json").read_text())
        calls.append((cfg.model.cls_loss, cfg.model.focal_alpha, cfg.seed))
        result = {"metrics": {"AP": _stub_ap(cfg), "AP50": 50.0, "AP75": 20.0}, "diverged": False}
        run_dir.mkdir(parents=True, exist_ok=True)  # (its lock made it)
        (run_dir / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(ex, "run_one", fake_run_one)
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", tables_dir=tables)
    report = ex.run_table("power", "mini", **kw)
    # 3 seeds: half-width 4.303 * 0.4 / sqrt(3) = 0.99; 4 seeds: 3.182 * 0.342 / 2 = 0.54; 5 seeds:
    # 2.776 * 0.316 / sqrt(5) = 0.39 <= 0.5. CE α=.50 (not the best on seeds 0-1) keeps its 2.
    assert sorted(calls) == sorted(
        [("focal", 0.25, s) for s in range(5)]
        + [("ce", 0.75, s) for s in range(5)]
        + [("ce", 0.5, s) for s in range(2)]
    )
    (c,) = report["comparisons"]
    assert (c["a"], c["b"], c["seeds"]) == ("FL", "CE α=.75", 5)
    assert c["diff_ap"] == pytest.approx(3.0) and c["ci95"] == pytest.approx(2.776 * math.sqrt(0.1) / math.sqrt(5))
    assert [round(v, 6) for v in c["per_seed"].values()] == [3.0, 3.4, 2.6, 3.2, 2.8]
    rows = {r["name"]: r for r in report["rows"]}
    assert [r["seed"] for r in rows["FL"]["runs"]] == [0, 1, 2, 3, 4]
    fl = [27.0 + SEED_EFFECT[s] + FL_EXTRA[s] for s in range(5)]
    assert rows["FL"]["measured"]["AP_ci95"] == pytest.approx(mean_ci95(fl)[1])
    md = (tmp_path / "results" / "power_mini.md").read_text()
    assert "| FL | CE α=.75 | +3.00 | [+2.61, +3.39] | 5 | +3.0, +3.4, +2.6, +3.2, +2.8 |" in md
    assert f"| FL | — | — | — | {rows['FL']['measured']['AP']:.1f} ± {rows['FL']['measured']['AP_ci95']:.1f}" in md
    # From the cache alone (another machine, a clean checkout): the same report, nothing trained.
    n = len(calls)
    assert ex.run_table("power", "mini", **kw)["comparisons"] == report["comparisons"] and len(calls) == n
    # At a scale outside power.scales the comparison is what the rows have: no seed is added.
    tables = _table(
        tmp_path, base, comparisons=[{"a": "FL", "b": "CE α=.50"}], power={"ci95": 0.1, "scales": ["paper"]}
    )
    report = ex.run_table("power", "mini", **kw)
    assert len(calls) == n and report["comparisons"][0]["seeds"] == 2  # the table's 2 seeds of each row


def test_bad_comparisons_are_config_errors(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("{}")
    tables = _table(tmp_path, base, comparisons=[{"a": "FL", "b": "CE α=.33"}])
    with pytest.raises(ConfigError, match="'CE α=.33' names no row"):
        ex.load_table("power", tables)
    tables = _table(tmp_path, base, comparisons=[{"a": "FL", "b": "best:GIoU"}])
    with pytest.raises(ConfigError, match="'best:GIoU' names no row"):
        ex.load_table("power", tables)
    tables = _table(tmp_path, base, comparisons=[{"a": "FL", "b": "CE α=.50"}], power={"min_seeds": 1})
    with pytest.raises(ConfigError, match="min_seeds"):
        ex.load_table("power", tables)


def test_loss_shares_and_imbalance_of_real_tiny_runs(tmp_path, monkeypatch):
    import torch

    import retinanet.engine.trainer as trainer

    starts = []  # (cls_loss, focal_alpha, seed, initial weights) of every run trained
    real_build = trainer.build_model

    def recording_build(cfg):
        model = real_build(cfg)
        weights = torch.cat([v.flatten() for v in model.state_dict().values() if v.is_floating_point()])
        starts.append((cfg.cls_loss, cfg.focal_alpha, torch.initial_seed(), weights))
        return model

    monkeypatch.setattr(trainer, "build_model", recording_build)
    data = generate_synthetic(tmp_path / "synth", seed=2, num_train=8, num_val=4, image_size=128)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"kind": "synth", "train_path": str(data)}}))
    tables = _table(
        tmp_path,
        base,
        comparisons=[{"a": "FL", "b": "best:CE α="}],
        power={"min_seeds": 2, "max_seeds": 2},
        loss_cdf=["FL", "best:CE α="],
        imbalance=True,
    )
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", tables_dir=tables)
    report = ex.run_table("power", "mini", **kw)
    assert report["comparisons"][0]["seeds"] == 2
    # Paired: seed k of every row starts from the same weights (and draws the same data order),
    # whatever its loss; another seed starts elsewhere.
    assert len(starts) == 6
    by_seed = {}
    for loss, alpha, seed, weights in starts:
        by_seed.setdefault(seed, []).append(weights)
    assert len(by_seed) == 2 and all(len(w) == 3 for w in by_seed.values())
    for same in by_seed.values():
        assert all(torch.equal(same[0], w) for w in same[1:])
    first, second = (w[0] for w in by_seed.values())
    assert not torch.equal(first, second)
    best = report["comparisons"][0]["b"]
    assert set(report["loss_cdf"]) == {"FL", best}
    for shares in report["loss_cdf"].values():
        assert shares["seed"] == 0 and shares["negatives"] > 100 * shares["positives"] > 0
        for g in ("gamma_0", "gamma_2"):
            v = shares[g]
            assert 0.01 <= v["negatives_hardest_1pct"] <= v["negatives_hardest_10pct"] <= 1.0
        # the focal term moves the negatives' loss to the hardest ones
        assert shares["gamma_2"]["negatives_hardest_1pct"] > shares["gamma_0"]["negatives_hardest_1pct"]
    im = report["imbalance"]
    assert report["imbalance_neg_pairs_per_pos"] == im["negative_pairs_per_positive_pair"] > 100
    assert im["num_classes"] == 6 and im["images"] > 0
    # §3.3 at initialization, per row: the focal term shrinks the negatives' share
    from retinanet.diagnostics.loss_cdf import prior_gradient_ratio

    ratios = report["prior_gradient_ratio"]
    n = im["negative_pairs_per_positive_pair"]
    assert ratios["FL"] == pytest.approx(prior_gradient_ratio(n, 2.0, 0.25, 0.01))
    assert ratios["CE α=.50"] == pytest.approx(prior_gradient_ratio(n, 0.0, 0.5, 0.01))
    assert ratios["CE α=.50"] > 100 * ratios["FL"]
    # cached in the run folders: the report again without the weights or the dataset's pixels
    for run in (tmp_path / "runs" / "power_mini").glob("*/model_final.pth"):
        run.unlink()
    again = ex.run_table("power", "mini", **kw)
    assert again["loss_cdf"] == report["loss_cdf"] and again["imbalance"] == report["imbalance"]
    md = (tmp_path / "results" / "power_mini.md").read_text()
    assert "negative (anchor, class) pairs per positive pair" in md and "| FL | 0 | FL γ=2 |" in md
    assert f"the negatives' summed gradient against the positives' at that imbalance: FL {ratios['FL']:.3g};" in md


def test_loss_trend_by_hand(tmp_path):
    from retinanet.tools import power

    path = tmp_path / "metrics.jsonl"
    # 100 iterations: the last fifth is 81-100, its halves 81-90 (loss 2.0) and 91-100 (loss 1.5)
    records = [{"iter": i, "loss": 5.0 if i <= 80 else (2.0 if i <= 90 else 1.5)} for i in range(1, 101)]
    records.insert(50, {"eval": {"iter": 50, "AP": 1.0}})  # evaluation records are not losses
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert power.loss_trend(path) == pytest.approx(-0.25)
    path.write_text("\n".join(json.dumps({"iter": i, "loss": 1.0}) for i in range(20, 101, 20)) + "\n")
    assert power.loss_trend(path) is None  # too few records in the last fifth to tell

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"iter": i, "loss": 2.0 - i / 100}) for i in range(1, 51)))
    written = {}
    result = power.with_loss_trend(run, {"metrics": {"AP": 1.0}, "hash": "h", "seed": 0}, written.__setitem__)
    # halves 41-45 (mean 1.57) and 46-50 (mean 1.52)
    assert result["last_fifth_loss_change"] == pytest.approx((1.52 - 1.57) / 1.57)
    assert written[run] == {"metrics": {"AP": 1.0}, "last_fifth_loss_change": result["last_fifth_loss_change"]}
    summary = power.trend_summary({"a": [result, {"metrics": {}}], "b": [dict(result, last_fifth_loss_change=0.01)]})
    assert summary["runs"] == 2 and summary["max"] == 0.01 and summary["min"] < 0
    lines = "\n".join(power.report_lines({"comparisons": [], "last_fifth_loss_change": summary}))
    assert "the training loss changed by -3.2% to +1.0%" in lines

"""The experiment tables (Table 1 (a)-(e)) as data, their paper-scale configs against the paper, and the
runner's caching and reports."""

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from retinanet.config import scaled_lr
from retinanet.data.synth import generate_synthetic
from retinanet.tools import experiments as ex

# The paper's numbers (Lin et al. 2017, Table 1 (a)-(e)), one entry per row of its tables, with
# the row's label and settings: tests/tools/paper_table1.yaml.
TABLE1 = yaml.safe_load((Path(__file__).with_name("paper_table1.yaml")).read_text(encoding="utf-8"))
PAPER_ALPHA = {r["alpha"]: r["AP"] for r in TABLE1["alpha"]}
PAPER_GAMMA = [(r["gamma"], r["alpha"], r["AP"]) for r in TABLE1["gamma"]]
PAPER_ANCHORS = [(r["scales"], r["ratios"], r["AP"]) for r in TABLE1["anchors"]]
PAPER_OHEM = [(r["batch"], r["nms"], r["pos_fraction"], r["AP"]) for r in TABLE1["ohem"] if "batch" in r]
PAPER_OHEM_FL = [(r["gamma"], r["alpha"], r["AP"]) for r in TABLE1["ohem"] if "batch" not in r]
PAPER_SPEED = {(r["backbone"], r["scale"]): (r["AP"], r["time"]) for r in TABLE1["speed"]}


def paper_configs(name):
    table = ex.load_table(name)
    return [(row, cfg) for row, _, cfg in ex.plan(table, "paper")]


def assert_paper_recipe(cfg, backbone="resnet50", min_size=600):
    """The paper's §4: ImageNet-pretrained backbone, FPN P3-P7 with 256 channels, 4-conv heads, π = .01,
    16 images per iteration, LR 0.01 / 10 at 60k and 80k of 90k, momentum .9, wd 1e-4, flip only."""
    m, t = cfg.model, cfg.train
    assert (m.backbone, m.min_size, m.pretrained_backbone) == (backbone, min_size, True)
    assert (m.fpn_channels, m.head_convs, m.head_norm, m.prior_prob, m.p6_from) == (256, 4, None, 0.01, "c5")
    assert (m.fg_iou_thresh, m.bg_iou_thresh) == (0.5, 0.4)
    assert m.anchor_sizes == (32.0, 64.0, 128.0, 256.0, 512.0)
    assert (m.score_thresh, m.topk_candidates, m.nms_thresh, m.detections_per_img) == (0.05, 1000, 0.5, 100)
    assert (t.batch_size, scaled_lr(t), t.max_iter, tuple(t.lr_steps), t.lr_gamma) == (
        16,
        0.01,
        90000,
        (60000, 80000),
        0.1,
    )
    assert (t.momentum, t.weight_decay) == (0.9, 1e-4)
    assert cfg.data.kind == "coco" and cfg.data.hflip_prob == 0.5 and m.train_min_sizes == ()


def test_alpha_table_paper_scale_matches_the_paper():
    rows = paper_configs("alpha")
    assert len(rows) == 7
    for row, cfg in rows:
        assert_paper_recipe(cfg)
        assert cfg.model.cls_loss == "ce" and cfg.model.max_size == 1000
        assert row.paper["AP"] == PAPER_ALPHA[cfg.model.focal_alpha]
        assert (cfg.model.scales_per_octave, cfg.model.aspect_ratios) == (3, (0.5, 1.0, 2.0))


def test_gamma_table_paper_scale_matches_the_paper():
    rows = paper_configs("gamma")
    got = [(cfg.model.focal_gamma, cfg.model.focal_alpha, row.paper["AP"]) for row, cfg in rows]
    assert got == PAPER_GAMMA
    for _, cfg in rows:
        assert_paper_recipe(cfg)
        assert cfg.model.cls_loss == "focal"


def test_anchor_table_paper_scale_matches_the_paper():
    rows = paper_configs("anchors")
    got = [(cfg.model.scales_per_octave, len(cfg.model.aspect_ratios), row.paper["AP"]) for row, cfg in rows]
    assert got == PAPER_ANCHORS
    for _, cfg in rows:
        assert_paper_recipe(cfg)
        assert (cfg.model.focal_gamma, cfg.model.focal_alpha) == (2.0, 0.25)
        assert cfg.model.aspect_ratios in ((1.0,), (0.5, 1.0, 2.0))


def test_ohem_table_paper_scale_matches_the_paper():
    rows = paper_configs("ohem")
    ohem = [
        (c.model.ohem_batch_size, c.model.ohem_nms_thresh, c.model.ohem_pos_fraction, r.paper["AP"])
        for r, c in rows
        if c.model.cls_loss == "ohem"
    ]
    assert ohem == PAPER_OHEM
    assert all(c.model.focal_alpha is None for r, c in rows if c.model.cls_loss == "ohem")  # plain CE
    fl = [(c.model.focal_gamma, c.model.focal_alpha, r.paper["AP"]) for r, c in rows if c.model.cls_loss == "focal"]
    assert fl == PAPER_OHEM_FL
    for _, cfg in rows:
        assert_paper_recipe(cfg, backbone="resnet101")


def test_speed_table_paper_scale_matches_the_paper():
    rows = paper_configs("speed")
    got = {(c.model.backbone, c.model.min_size): (r.paper["AP"], r.paper["time"]) for r, c in rows}
    assert got == PAPER_SPEED
    for _, cfg in rows:
        assert_paper_recipe(cfg, backbone=cfg.model.backbone, min_size=cfg.model.min_size)
        assert cfg.model.max_size == round(cfg.model.min_size * 5 / 3)


def test_mini_scale_rows_resolve_and_differ():
    for name in ex.TABLES:
        runs = ex.plan(ex.load_table(name), "mini")
        assert runs, name
        for _, _, cfg in runs:
            assert cfg.model.backbone in ("resnet18", "resnet34") and not cfg.model.pretrained_backbone
            assert cfg.data.kind == "synth" and cfg.train.max_iter <= 200
        # Rows differ from each other, seeds of one row differ only by the seed.
        hashes = [ex.config_hash(cfg) for _, _, cfg in runs]
        assert len(set(hashes)) == len(hashes), name
    gamma = ex.load_table("gamma")
    assert ex.seeds_for(gamma.row("γ=2 α=.25"), "mini") == 3 and ex.seeds_for(gamma.row("γ=2 α=.25"), "paper") == 1
    # The same resolved config in two tables is one cached run: (b)'s baseline is (c)'s 3 sc, 3 ar.
    base_b = ex.row_config(gamma, gamma.row("γ=2 α=.25"), "mini")
    anchors = ex.load_table("anchors")
    assert ex.config_hash(base_b) == ex.config_hash(ex.row_config(anchors, anchors.row("3 sc, 3 ar"), "mini"))


def test_bad_table_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no experiment table 'nope'"):
        ex.load_table("nope", tmp_path)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"title": "t", "base": {}, "rows": [{"name": "a", "overide": []}]}))
    with pytest.raises(ValueError, match=r"row 0: unknown key\(s\) \['overide'\]"):
        ex.load_table("t", tmp_path)


TINY = [
    "model.min_size=128",
    "model.max_size=128",
    "model.fpn_channels=64",
    "model.head_convs=1",
    "train.batch_size=4",
    "train.base_batch_size=4",
    "train.max_iter=3",
    "train.lr_steps=[2]",
    "train.warmup_iters=1",
    "train.checkpoint_period=1",
    "train.log_period=1",
    "data.num_workers=0",
]


def test_run_table_caches_rows_and_writes_reports(tmp_path, monkeypatch):
    data = generate_synthetic(tmp_path / "synth", seed=1, num_train=8, num_val=4, image_size=128)
    tables = tmp_path / "tables"
    tables.mkdir()
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "model": {"backbone": "resnet18", "norm": "bn", "freeze_at": 0, "head_norm": "gn"},
                "data": {"kind": "synth", "train_path": str(data)},
            }
        )
    )
    table = {
        "title": "tiny α",
        "base": {"mini": str(base)},
        "common": {"mini": TINY + ["model.cls_loss=ce"]},
        "rows": [
            {"name": "α=.25", "overrides": ["model.focal_alpha=0.25"], "paper": {"AP": 10.8}},
            {"name": "α=.75", "overrides": ["model.focal_alpha=0.75"], "paper": {"AP": 31.1}},
        ],
        "repeat_best": {"prefix": "α=", "seeds": {"mini": 2}},
    }
    (tables / "tiny.yaml").write_text(yaml.safe_dump(table, allow_unicode=True))
    trained = []
    import retinanet.engine

    real_train = retinanet.engine.train

    def counting_train(cfg, **kw):
        trained.append(ex.config_hash(cfg))
        return real_train(cfg, **kw)

    monkeypatch.setattr("retinanet.engine.train", counting_train)
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", tables_dir=tables)
    report = ex.run_table("tiny", "mini", **kw)
    assert len(trained) == 3  # two rows, and a second seed for the better one
    assert len(set(trained)) == 3
    rows = {r["name"]: r for r in report["rows"]}
    assert sorted(len(r["runs"]) for r in rows.values()) == [1, 2]
    for r in rows.values():
        for run in r["runs"]:
            assert run["iterations"] == 3 and run["commit"] and not run["diverged"]
            assert 0.0 <= run["metrics"]["AP"] <= 100.0 and not math.isnan(run["metrics"]["AP"])
    md = (tmp_path / "results" / "tiny_mini.md").read_text()
    # (3 iterations: a row may be marked as having learned nothing)
    for row, paper in (("α=.25", "10.8"), ("α=.75", "31.1")):
        assert re.search(rf"\| {re.escape(row)}( \(AP 0 in \d of \d seeds\))? \| {paper} \|", md), md
    saved = json.loads((tmp_path / "results" / "tiny_mini.json").read_text())
    assert saved["rows"][0]["paper"] == {"AP": 10.8} and saved["commit"]

    # A second call trains nothing: every run is cached by the hash of its resolved config.
    again = ex.run_table("tiny", "mini", **kw)
    assert len(trained) == 3
    assert again["rows"] == report["rows"]
    # An interrupted run resumes: drop a result, keep its checkpoint; it continues, not restarts.
    victim = tmp_path / "runs" / "tiny_mini" / trained[0]
    (victim / "result.json").unlink()
    ex.run_table("tiny", "mini", **kw)
    assert len(trained) == 4 and trained[-1] == trained[0]
    log = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "iter" in r and "loss" in r] == [1, 2, 3]  # no iteration trained twice

    # Another table holding the same config reuses the run (result and weights) instead of training
    # it; a timing table (speed) times its rows after training them, and --retime times them again.
    speed = dict(
        table,
        title="tiny speed",
        timed=True,
        rows=[table["rows"][1], {"name": "α=.5", "overrides": ["model.focal_alpha=0.5"]}],
    )
    del speed["repeat_best"]
    (tables / "speed.yaml").write_text(yaml.safe_dump(speed, allow_unicode=True))
    rep = ex.run_table("speed", "mini", **kw)
    assert len(trained) == 5  # only α=.5 trained
    shared = rep["rows"][0]["runs"][0]
    assert (
        shared["reused_from"] == "tiny_mini"
        and (tmp_path / "runs" / "speed_mini" / shared["hash"] / "model_final.pth").is_file()
    )
    assert (
        shared["metrics"]
        == json.loads((tmp_path / "runs" / "tiny_mini" / shared["hash"] / "result.json").read_text())["metrics"]
    )
    for r in rep["rows"]:
        assert r["measured"]["ms_per_image"] > 0 and r["runs"][0]["ms_per_image"] > 0
    assert "ms/img (measured)" in (tmp_path / "results" / "speed_mini.md").read_text()
    assert "ms_per_image" not in json.loads(
        (tmp_path / "runs" / "tiny_mini" / shared["hash"] / "result.json").read_text()
    )
    timed = json.loads((tmp_path / "runs" / "speed_mini" / shared["hash"] / "result.json").read_text())["ms_per_image"]
    monkeypatch.setattr(ex, "measure_inference_ms", lambda *a, **k: 123.0)
    assert ex.run_table("speed", "mini", **kw)["rows"][0]["runs"][0]["ms_per_image"] == timed  # cached
    retimed = ex.run_table("speed", "mini", retime=True, **kw)
    assert [r["runs"][0]["ms_per_image"] for r in retimed["rows"]] == [123.0, 123.0] and len(trained) == 5


def test_format_report_shows_spread_and_divergence():
    report = {
        "title": "T",
        "scale": "mini",
        "commit": "abc",
        "extra_overrides": [],
        "metrics": ["AP"],
        "notes": "",
        "rows": [
            {
                "name": "a",
                "paper": {"AP": 34.0},
                "measured": {"runs": 3, "diverged": False, "AP": 20.0, "AP_spread": 1.0},
            },
            {"name": "b", "paper": {"AP": 0.0}, "measured": {"runs": 1, "diverged": True}},
            {
                "name": "c",
                "paper": {"AP": 0.0},
                "measured": ex.summarize([{"metrics": {"AP": 0.0}}, {"metrics": {"AP": 0.0}}], ["AP"]),
            },
        ],
    }
    md = ex.format_report(report)
    assert "| a | 34.0 | 20.0 ± 0.5 | 3 |" in md
    assert "| b (diverged) | 0.0 | — | 1 |" in md
    assert "| c (AP 0 in 2 of 2 seeds) | 0.0 | 0.0 ± 0.0 | 2 |" in md
    assert "trained to the end with finite losses (not diverged)" in md
    runs = [{"metrics": {"AP": 0.0}}, {"metrics": {"AP": 3.0}}, {"metrics": {}, "diverged": True}]
    assert ex.summarize(runs, ["AP"])["learned_nothing"] == 1  # a diverged run is not counted


def test_experiment_command_dry_run(capsys):
    from retinanet.cli import main

    assert main(["experiment", "gamma", "--scale", "mini", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[gamma/mini]")]
    assert len(lines) == 9  # 7 rows, the baseline with 3 seeds
    assert main(["experiment", "ohem", "--scale", "paper", "--dry-run", "train.max_iter=oops"]) == 2
    assert "train.max_iter" in capsys.readouterr().err


def test_experiment_command_unknown_table_lists_the_tables(capsys):
    from retinanet.cli import main

    assert main(["experiment", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no experiment table 'nope'" in err and "'alpha'" in err and "'speed'" in err


def test_every_committed_mini_table_finds_all_its_runs_in_the_cache():
    # The reports in experiments/results are re-created from experiments/runs without training
    # only while each row's config hashes as it did when it ran: a config key added with a
    # default that changes nothing must not change the hashes (config_hash drops it).
    # A table without a committed report is still being run (its finished runs are committed as
    # they come, so that it resumes on another machine).
    missing = []
    for path in sorted(ex.TABLES_DIR.glob("*.yaml")):
        if not (ex.RESULTS_DIR / f"{path.stem}_mini.json").is_file():
            continue
        table = ex.load_table(path.stem)
        for row, seed, cfg in ex.plan(table, "mini"):
            run = ex.RUNS_DIR / f"{path.stem}_mini" / ex.config_hash(cfg)
            if not (run / "result.json").exists():
                missing.append(f"{path.stem}: {row} seed {seed} ({run.name})")
    assert not missing, missing


def test_the_focal_power_runs_quoted_in_the_docs_are_the_tables():
    from test_docs_figures import FOCAL_RUNS  # (tests/ is on the path)

    table = ex.load_table("focal_power")
    for row, hashes in FOCAL_RUNS.items():
        for seed, h in enumerate(hashes):
            assert ex.config_hash(ex.row_config(table, table.row(row), "mini", seed)) == h, (row, seed)
            assert (ex.RUNS_DIR / "focal_power_mini" / h / "result.json").is_file(), (row, seed)

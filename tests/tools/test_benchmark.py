"""`retinanet benchmark`: structure of its results (never timings: those are for a quiet machine)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from retinanet import cli
from retinanet.tools import benchmark
from retinanet.tools.benchmark import match_detections
from retinanet.tools.benchmark.cli import build_parser
from retinanet.tools.benchmark.context import Context
from retinanet.tools.benchmark.flops import conv_flops
from retinanet.tools.benchmark.memory import memory_child
from retinanet.tools.benchmark.training import training_memory
from retinanet.weights.torchvision import from_torchvision


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    # The eager focal loss: compiling it would take most of this test's time and is not what the
    # test is about (the compiled path has its own tests, tests/model/test_losses.py).
    # --fast-mode fp32: without the ablation, auto picks low precision wherever its measured conv
    # throughput is higher (a CPU with AMX bf16: 95.7 % of the detections matched at 128 px), and
    # this test checks that the fp32 paths give the same detections.
    mp = pytest.MonkeyPatch()
    mp.setenv("RETINANET_NO_COMPILE", "1")
    out = tmp_path_factory.mktemp("bench")
    try:
        argv = ["benchmark", "--quick", "--only", "inference,focal,assign,postprocess", "--repeats", "1"]
        argv += ["--fast-mode", "fp32"]
        code = cli.main([*argv, "--out", str(out)])
    finally:
        mp.undo()
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_quick_run_writes_json_and_markdown(quick_results):
    out, res = quick_results
    m = res["machine"]
    assert {"cpu", "usable_cpus", "torch", "torchvision", "torch_threads"} <= set(m) and m["torch"] == torch.__version__
    assert set(res["section_seconds"]) == {"inference", "focal", "assign", "postprocess"}
    sections = [r["section"] for r in res["rows"]]
    assert sections.count("inference") == 2 and {"focal", "assign", "postprocess"} <= set(sections)
    for r in res["rows"]:
        assert _positive(r["ours_ms"]) and _positive(r["torchvision_ms"]) and _positive(r["ratio"]), r
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["torchvision_ms"])
        assert r["met"] in (True, False) if r["target"] is not None else r["met"] is None
    md = (out / "results.md").read_text()
    assert "| benchmark | ours (ms) | torchvision (ms) | ratio | target | met | notes |" in md
    assert m["torch"] in md


def test_quick_run_checks_that_results_agree(quick_results):
    _, res = quick_results
    rows = {r["section"]: r for r in res["rows"]}
    assert rows["assign"]["details"]["cls_rel_diff"] < 1e-4 and rows["assign"]["details"]["box_rel_diff"] < 1e-4
    assert rows["postprocess"]["details"]["agreement"]["matched_share"] == 1.0
    assert rows["focal"]["details"]["loss_rel_diff"] < 1e-4
    for r in (r for r in res["rows"] if r["section"] == "inference"):
        assert r["details"]["agreement"]["matched_share"] == 1.0  # fp32 paths: the same detections
    assert res["inference"]["fast_mode"]["name"].startswith("fold_bn")


def test_only_rejects_unknown_sections(tmp_path, capsys):
    assert benchmark.main(["--only", "inference,nonsense", "--out", str(tmp_path)]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_cli_benchmark_help(capsys):
    assert cli.main(["benchmark", "--help"]) == 0
    assert "--only" in capsys.readouterr().out


def _dets(boxes, scores, labels):
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.as_tensor(scores, dtype=torch.float32),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
    }


def test_match_detections():
    a = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 50, 30]], [0.9, 0.8, 0.7], [1, 2, 3])
    assert match_detections([a], [a]) == {
        "matched": 3,
        "total": 3,
        "matched_share": 1.0,
        "max_score_diff": 0.0,
        "max_box_diff_px": 0.0,
    }
    # the zero-width box matches itself; a moved box, a relabelled one and an extra one do not
    b = _dets(
        [[0, 0, 10, 10.2], [20, 20, 40, 48], [50, 0, 50, 30], [60, 60, 70, 70]], [0.85, 0.8, 0.7, 0.6], [1, 2, 4, 1]
    )
    got = match_detections([a], [b])
    assert (got["matched"], got["total"]) == (1, 4)
    assert got["max_score_diff"] == pytest.approx(0.05) and got["max_box_diff_px"] == pytest.approx(0.2, abs=1e-5)
    assert match_detections([a], [_dets(torch.zeros(0, 4), [], [])])["matched_share"] == 0.0


def test_conv_flops_counts_resnet50_fpn_retinanet():
    tv = benchmark.torchvision_model(0, 800)
    ours = from_torchvision(tv.state_dict())
    f1 = conv_flops(ours, 1, 512)
    # Analytic: ResNet-50 at 512 px ~21.4 GMAC (4.1 at 224 px), FPN ~4.2, head ~36.5 (6.69 M MAC
    # per P3-P7 location): ~62 GMAC = ~124 GFLOP.
    assert 115e9 < f1 < 135e9
    assert conv_flops(ours, 2, 512) == pytest.approx(2 * f1)
    train = conv_flops(ours.train(), 1, 512, training=True)
    assert 2.5 * f1 < train < 3 * f1  # backward: input and weight gradients, none for the frozen stem + res2 weights


def test_memory_child_reports_peak_rss(monkeypatch):
    monkeypatch.setenv("RETINANET_NO_COMPILE", "1")
    options = {"absorb_bn": True, "channels_last": None}
    spec = {"kind": "ours", "options": options, "dtype": None, "size": 64, "batch": 1, "device": "cpu", "seed": 0}
    spec["threads"] = torch.get_num_threads()
    got = memory_child(spec)
    assert got["peak_rss_mb"] > 0 and got["how"]
    # Linux: VmRSS / VmHWM, so the step's own peak is measured (None only without them).
    assert Path("/proc/self/status").is_file() == sys.platform.startswith("linux")
    if sys.platform.startswith("linux"):
        # A training step of ResNet-50-FPN at 64 px allocates its activations and the gradients of
        # ~23 M trainable weights anew (set_to_none): tens of MB (58 measured), far from 0.
        assert 10 < got["step_peak_mb"] < got["peak_rss_mb"], got
        assert got["peak_rss_mb"] == pytest.approx(got["rss_before_mb"] + got["step_peak_mb"])


def test_memory_child_without_proc_status_has_no_step_peak(monkeypatch):
    # What decides None: no VmRSS to subtract (no /proc/self/status). The peak is then the
    # process's ru_maxrss, in KiB on Linux. The model and its steps are stand-ins: only the
    # bookkeeping around them is under test here.
    import resource

    import retinanet.tools.benchmark.memory as mem

    monkeypatch.setattr(mem, "proc_status_mb", lambda field: None)
    monkeypatch.setattr(mem, "torchvision_model", lambda seed, size: torch.nn.Linear(1, 1))
    monkeypatch.setattr(mem, "training_setup", lambda *a: (None, None, None))
    monkeypatch.setattr(mem, "train_step", lambda *a: None)
    spec = {"kind": "ours", "options": {}, "dtype": None, "size": 64, "batch": 1, "device": "cpu", "seed": 0}
    spec["threads"] = torch.get_num_threads()
    got = mem.memory_child(spec)
    assert got["step_peak_mb"] is None and got["rss_before_mb"] is None
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 10 < got["peak_rss_mb"] <= maxrss_mb  # this process: torch alone is over 10 MB


def test_training_memory_runs_a_fresh_process(monkeypatch):
    # The CPU path: `python -m retinanet.tools.benchmark --memory-child JSON` in a subprocess.
    monkeypatch.setenv("RETINANET_NO_COMPILE", "1")
    ctx = Context(build_parser().parse_args(["--train-size", "64", "--train-batch", "1"]))
    (got,) = training_memory(ctx, {"ours fp32 plain": ("ours", None, None)}, {}).values()
    assert "error" not in got, got
    assert got["peak_rss_mb"] > 0 and got["how"]


def test_ap_section_compares_fast_mode_with_fp32(tmp_path, monkeypatch):
    from retinanet.config import config_to_dict, load_config
    from retinanet.data.synth import generate_synthetic
    from retinanet.model.build import build_model

    data = tmp_path / "synth"
    generate_synthetic(data, seed=3, num_train=2, num_val=4)
    overrides = [
        "model.backbone=resnet18",
        "model.num_classes=6",
        "model.min_size=128",
        "model.max_size=128",
        "model.size_divisor=32",
        "model.score_thresh=0.0",
        "data.kind=synth",
        f"data.train_path={data}",
        "data.num_workers=0",
    ]
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    weights = tmp_path / "model_final.pth"
    torch.save({"model": build_model(cfg.model).state_dict(), "config": config_to_dict(cfg)}, weights)
    out = tmp_path / "bench"
    argv = ["--quick", "--only", "ap", "--fast-mode", "fp32", "--ap-weights", str(weights), "--out", str(out)]
    assert benchmark.main(argv) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    d = row["details"]
    assert isinstance(d["ap_fp32"], float) and isinstance(d["ap_fast"], float) and 0 <= d["ap_fp32"] <= 100
    # The fp32 fast mode (frozen BatchNorm folded into the convolutions) gives the same
    # detections up to rounding: the same AP, well within the target of ±0.5.
    assert d["ap_fast"] == pytest.approx(d["ap_fp32"], abs=0.01)
    assert row["met"] is True and row["target"] == "ΔAP within ±0.5"


@pytest.mark.parametrize(
    "ap_fp32,ap_fast,met,difference",
    [
        (30.0, 30.4, True, "+0.40"),
        (30.0, 30.5, True, "+0.50"),
        (30.0, 30.6, False, "+0.60"),
        (30.0, 29.6, True, "-0.40"),
        (30.0, 29.3, False, "-0.70"),
    ],
)
def test_ap_section_meets_its_target_within_half_a_point(tmp_path, monkeypatch, ap_fp32, ap_fast, met, difference):
    # The two evaluations replaced by fixed APs: the row's verdict and notes, against the numbers above.
    import types

    import retinanet.engine
    import retinanet.weights.loader
    from retinanet.config import load_config

    aps = iter([{"AP": ap_fp32}, {"AP": ap_fast}])
    monkeypatch.setattr(retinanet.engine, "evaluate", lambda *a, **k: next(aps))
    monkeypatch.setattr("retinanet.data.build.build_datasets", lambda cfg, train: (None, [0] * 4))
    model = torch.nn.Identity()
    cfg = load_config(None, [])
    monkeypatch.setattr(
        retinanet.weights.loader, "load_model", lambda path: types.SimpleNamespace(model=model, config=cfg)
    )
    monkeypatch.setattr(Context, "fast_model", lambda self, m, mode: m)
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")
    out = tmp_path / "bench"
    argv = ["--quick", "--only", "ap", "--fast-mode", "fp32", "--ap-weights", str(weights), "--out", str(out)]
    assert benchmark.main(argv) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["met"] is met and (row["details"]["ap_fp32"], row["details"]["ap_fast"]) == (ap_fp32, ap_fast)
    assert f"difference {difference}" in row["notes"]


def test_update_replaces_only_the_rerun_sections(quick_results, tmp_path, monkeypatch):
    _, first = quick_results
    monkeypatch.setenv("RETINANET_NO_COMPILE", "1")
    base = tmp_path / "base.json"
    base.write_text(json.dumps(first))
    out = tmp_path / "updated"
    argv = ["--quick", "--only", "focal", "--repeats", "1", "--update", str(base), "--out", str(out)]
    assert benchmark.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    old_rows = {r["name"]: r for r in first["rows"]}
    assert [r["section"] for r in res["rows"]] == [r["section"] for r in first["rows"]]  # same rows, same order
    for r in res["rows"]:
        if r["section"] == "focal":
            assert r["ours_ms"] != old_rows[r["name"]]["ours_ms"]  # re-measured (times never repeat to the ns)
        else:
            assert r == old_rows[r["name"]]  # kept as they were
    (u,) = res["updates"]
    assert u["sections"] == ["focal"] and "--update" in u["command"]
    assert "re-measured focal" in (out / "results.md").read_text()


def test_update_refuses_results_of_another_machine(quick_results, tmp_path, capsys):
    _, first = quick_results
    other = dict(first, machine=dict(first["machine"], cpu="Some Other CPU"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    argv = ["--quick", "--only", "focal", "--update", str(tmp_path / "other.json"), "--out", str(tmp_path)]
    assert benchmark.main(argv) == 2
    assert "another machine" in capsys.readouterr().err

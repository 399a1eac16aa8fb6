"""Training engine: schedule, DDP equivalence, kill-and-resume, non-finite losses, checkpoints."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from retinanet.config import load_config
from retinanet.data import DatasetError
from retinanet.data.synth import generate_synthetic
from retinanet.engine import (
    CheckpointWriteError,
    NonFiniteLossError,
    ResumeError,
    atomic_save,
    load_checkpoint,
    lr_factor,
    train,
)

TINY = [
    "model.backbone=resnet18",
    "model.norm=frozen_bn",
    "model.freeze_at=1",
    "model.head_norm=gn",
    "model.min_size=128",
    "model.max_size=128",
    "model.size_divisor=32",
    "train.batch_size=4",
    "train.base_batch_size=16",
    "train.warmup_iters=2",
    "train.max_iter=6",
    "train.lr_steps=[4]",
    "train.checkpoint_period=2",
    "train.log_period=1",
    "train.eval_period=0",
    "data.num_workers=0",
    "data.kind=synth",
]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    generate_synthetic(d, seed=3, num_train=12, num_val=4)
    return d


def _cfg(synth_dir, out, *extra):
    return load_config(None, TINY + [f"data.train_path={synth_dir}", f"output_dir={out}", *extra])


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_lr_schedule_paper():
    # warmup from 1/3 to 1 over 500 iterations, ÷10 at 60k and 80k (§4)
    def f(it):
        return lr_factor(it, 500, 1 / 3, (60000, 80000), 0.1)

    assert f(0) == pytest.approx(1 / 3)
    assert f(250) == pytest.approx(2 / 3)
    assert f(500) == 1.0 and f(59999) == 1.0
    assert f(60000) == pytest.approx(0.1) and f(80000) == pytest.approx(0.01)


def test_checkpoint_is_atomic_and_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"model": {"w": torch.ones(2)}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    path.write_bytes(path.read_bytes()[:40])  # truncated, as a crash mid-copy would leave it
    with pytest.raises(ValueError, match="ckpt.pth.*corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_failed_checkpoint_write_keeps_the_old_one_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"model": {"w": torch.ones(2)}}, path)

    def disk_full(obj, f):
        f.write(b"partial checkpoint bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"ckpt.pth \(no space left on device; \d+ MiB free"):
        atomic_save({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # the temporary file is gone
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))  # the old checkpoint is intact


def test_training_lowers_the_loss_and_writes_outputs(synth_dir, tmp_path):
    cfg = _cfg(synth_dir, tmp_path, "train.max_iter=8", "train.base_lr=0.02")
    result = train(cfg)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    import json

    losses = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
    assert len(losses) == 8
    assert min(losses[-3:]) < losses[0]
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "model_final.pth").exists()
    # the labels' category ids travel with the weights (results files use them)
    final = load_checkpoint(tmp_path / "model_final.pth")
    assert final["label_to_category_id"] == [1, 2, 3, 4, 5, 6] and len(final["class_names"]) == 6
    assert "AP" in result["metrics"]
    assert any((tmp_path / "tb").iterdir())


def test_nonfinite_losses_are_skipped_then_stop_the_run(synth_dir, tmp_path):
    cfg = _cfg(synth_dir, tmp_path, "train.max_nonfinite=3")
    calls = {"n": 0}
    import retinanet.model.criterion as crit

    original = crit.RetinaNetCriterion.__call__

    def nan_loss(self, *a, **k):
        calls["n"] += 1
        out = original(self, *a, **k)
        return {"cls": out["cls"] * float("nan"), "box": out["box"]}

    crit.RetinaNetCriterion.__call__ = nan_loss
    try:
        with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
            train(cfg)
    finally:
        crit.RetinaNetCriterion.__call__ = original
    assert calls["n"] == 3
    ckpt = load_checkpoint(tmp_path / "last_checkpoint.pth")
    assert ckpt["iteration"] == 3  # the three skipped steps changed nothing: the weights are iteration 0's


def test_a_second_run_into_a_run_folder_is_refused_unless_resumed_or_overwritten(synth_dir, tmp_path):
    import json

    cfg = _cfg(synth_dir, tmp_path, "train.max_iter=2", "train.lr_steps=[1]", "train.eval_period=0")
    train(cfg, stop_after=1)
    before = (tmp_path / "last_checkpoint.pth").read_bytes()
    with pytest.raises(FileExistsError, match=r"holds a run \(last_checkpoint.pth, metrics.jsonl, tb\).*--resume"):
        train(cfg)
    assert (tmp_path / "last_checkpoint.pth").read_bytes() == before  # untouched
    assert train(cfg, resume=True)["iteration"] == 2
    train(cfg, overwrite=True, stop_after=1)
    iters = [json.loads(line)["iter"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1] and not (tmp_path / "model_final.pth").exists()  # the old run's files are gone


def test_model_weights_start_a_run_from_other_classes_and_a_resume_does_not_reread_them(synth_dir, tmp_path):
    import json

    from retinanet.config import Config, config_to_dict
    from retinanet.data.synth import CLASSES
    from retinanet.model.build import build_model
    from retinanet.weights.loader import WeightsError

    # The source: this library's checkpoint of the same architecture for 3 other-ordered classes.
    source_cfg = _cfg(synth_dir, tmp_path).model.replace(num_classes=3)
    torch.manual_seed(5)
    src = build_model(source_cfg).state_dict()
    weights = tmp_path / "source.pth"
    names = ["star", "unicorn", "circle"]
    saved = {"model": src, "class_names": names, "config": config_to_dict(Config(model=source_cfg))}
    torch.save(saved, weights)

    out = tmp_path / "run"
    # A learning rate of 1e-12: after one step the weights are still the start's (to 1e-9).
    cfg = _cfg(synth_dir, out, f"model.weights={weights}", "model.weights_class_map=names", "train.base_lr=1e-12")
    train(cfg, stop_after=1)
    state = torch.load(out / "last_checkpoint.pth", weights_only=True)["model"]

    def same(a, b):
        return torch.allclose(a.float(), b.float(), rtol=0, atol=1e-9)

    assert all(same(state[k], v) for k, v in src.items() if not k.startswith("head.cls_score"))
    k = len(CLASSES)
    w, w_src = state["head.cls_score.weight"], src["head.cls_score.weight"]
    for a in range(9):
        assert same(w[a * k + CLASSES.index("circle")], w_src[a * 3 + 2])
        assert same(w[a * k + CLASSES.index("star")], w_src[a * 3 + 0])
        assert not same(w[a * k + CLASSES.index("square")], w_src[a * 3 + 1])  # re-initialised
    report = json.loads((out / "weights_report.json").read_text())
    assert report["classes_from_source"] == {"circle": "circle", "star": "star"}
    assert (report["source_classes"], report["target_classes"]) == (3, k)

    weights.unlink()  # a resumed run's weights are its checkpoint's: the source is not read again
    assert train(cfg, resume=True, stop_after=1)["iteration"] == 2
    torch.save(saved, weights)
    with pytest.raises(WeightsError, match="fpn.lateral.0.weight.*model.fpn_channels is 128 here and 256"):
        train(_cfg(synth_dir, tmp_path / "other", f"model.weights={weights}", "model.fpn_channels=128"))


def test_save_best_and_patience_keep_the_best_model_stop_and_survive_a_resume(synth_dir, tmp_path, monkeypatch):
    import retinanet.engine.trainer as trainer_module

    aps = iter([10.0, 20.0, 15.0, 15.0])
    calls = []

    def stub_evaluate(model, dataset, cfg, device, writer=None, step=None, loader=None):
        calls.append(step)
        ap = next(aps)
        return {k: ap for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}

    monkeypatch.setattr(trainer_module, "evaluate", stub_evaluate)
    states = {}

    def keep(it, model):
        states[it] = {k: v.clone() for k, v in model.state_dict().items()}

    out = tmp_path / "run"
    cfg = _cfg(synth_dir, out, "train.eval_period=1", "train.save_best=AP", "train.patience=2")
    first = train(cfg, stop_after=3, on_step=keep)  # evaluations 10, 20, 15: best 20, one without
    assert calls == [1, 2, 3] and not first["stopped_early"]
    assert first["best"] == {"metric": "AP", "value": 20.0, "iteration": 2}
    result = train(cfg, resume=True, on_step=keep)  # 15 again: the second in a row, patience 2
    assert calls == [1, 2, 3, 4] and result["iteration"] == 4 and result["stopped_early"]
    assert result["best"] == {"metric": "AP", "value": 20.0, "iteration": 2}  # restored from the checkpoint
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert best["best"] == {"metric": "AP", "value": 20.0, "iteration": 2}
    assert all(torch.equal(best["model"][k], v) for k, v in states[2].items())
    ckpt = torch.load(out / "last_checkpoint.pth", weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["progress"]["stopped_early"] and ckpt["progress"]["evals_since_best"] == 2
    assert (out / "model_final.pth").is_file()
    again = train(cfg, resume=True)  # a stopped run stays stopped: no step, no evaluation
    assert again["iteration"] == 4 and calls == [1, 2, 3, 4]


def test_save_best_needs_eval_period_and_a_metric_name():
    from retinanet.config import ConfigError

    with pytest.raises(ConfigError, match="train.patience needs evaluations during the run"):
        load_config(None, ["train.patience=2"])
    with pytest.raises(ConfigError, match="train.save_best"):
        load_config(None, ["train.eval_period=10", "train.save_best=mAP"])


def test_resume_applies_a_changed_learning_rate_and_refuses_a_changed_data_stream(synth_dir, tmp_path):
    import json

    # batch 4 of base 16: LR = base_lr / 4; the step at iteration 3 divides it by 10.
    base = ["train.max_iter=4", "train.lr_steps=[3]", "train.warmup_iters=0", "train.log_period=1"]
    train(_cfg(synth_dir, tmp_path, *base, "train.base_lr=0.01"), stop_after=2)
    with pytest.raises(ResumeError, match=r"cannot resume with train.batch_size 4 -> 2"):
        train(_cfg(synth_dir, tmp_path, *base, "train.base_lr=0.01", "train.batch_size=2"), resume=True)
    train(_cfg(synth_dir, tmp_path, *base, "train.base_lr=0.001"), resume=True)  # lowered after a divergence
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert lrs == pytest.approx([0.0025, 0.0025, 0.000025, 0.000025])
    (tmp_path / "last_checkpoint.pth").write_bytes(b"garbage")
    with pytest.raises(ResumeError, match=r"last_checkpoint.pth: not a readable checkpoint.*delete it"):
        train(_cfg(synth_dir, tmp_path, *base), resume=True)


def test_an_image_failing_at_training_time_is_replaced_with_skip_and_named_with_error(synth_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    bad = sorted((data / "train").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated after annotation: found only when a worker loads it
    # 12 images, batches of 4: 3 iterations are one epoch, so every image is loaded once.
    base = ["train.max_iter=3", "train.lr_steps=[2]", "train.eval_period=0"]
    result = train(_cfg(data, tmp_path / "skip", *base, "data.on_bad=skip"))
    assert result["iteration"] == 3 and result["replaced"] == 1
    # With on_bad=error: one line naming the file, not a worker's traceback (num_workers=1).
    with pytest.raises(DatasetError) as e:
        train(_cfg(data, tmp_path / "error", *base, "data.num_workers=1"))
    assert bad.name in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)
    # data.verify_images finds it before training: a counted skip, nothing replaced later.
    result = train(_cfg(data, tmp_path / "verified", *base, "data.on_bad=skip", "data.verify_images=true"))
    assert result["replaced"] == 0


def test_clip_grad_norm_bounds_the_update_and_eval_period_evaluates_mid_run(synth_dir, tmp_path):
    import json

    base = ["train.max_iter=2", "train.lr_steps=[]", "train.warmup_iters=0", "train.base_lr=0.04"]

    def moved(out, *extra):
        start = {}
        train(_cfg(synth_dir, out, *base, *extra), on_step=lambda it, m: start.setdefault("p", _params(m)))
        end = _params(build_and_load(out / "model_final.pth"))
        return (end - start["p"]).abs().max().item()

    free = moved(tmp_path / "free")
    # A gradient norm clipped to 1e-6: the second SGD step (LR 0.01) moves a weight by <= ~1e-8.
    clipped = moved(tmp_path / "clipped", "train.clip_grad_norm=1e-6", "train.momentum=0", "train.weight_decay=0")
    assert clipped < 1e-6 < free
    train(_cfg(synth_dir, tmp_path / "evals", *base, "train.eval_period=1"))
    evals = [
        json.loads(line)["eval"]["iter"]
        for line in (tmp_path / "evals" / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    assert evals == [1, 2]  # iteration 1 (the period) and the final one


def test_periodic_evaluations_share_one_loader_whose_workers_persist(synth_dir, tmp_path, monkeypatch):
    """The trainer builds one evaluation loader (persistent workers) for all its evaluations:
    the same worker process serves each, and the metrics equal a fresh loader's."""
    import retinanet.engine.trainer as trainer_module
    from retinanet.engine.evaluate import evaluate

    seen = []

    def spy(model, dataset, cfg, device, **kw):
        metrics = evaluate(model, dataset, cfg, device, **kw)
        loader = kw["loader"]
        seen.append((loader, tuple(w.pid for w in loader._iterator._workers), metrics["AP"]))
        return metrics

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    cfg = _cfg(synth_dir, tmp_path / "run", "train.max_iter=3", "train.eval_period=1", "data.num_workers=1")
    train(cfg)
    assert len(seen) == 3  # iterations 1, 2 and the final one
    assert len({id(loader) for loader, _, _ in seen}) == 1 and len({pids for _, pids, _ in seen}) == 1
    loader = seen[0][0]
    assert loader.persistent_workers and not loader.pin_memory  # pinned on CUDA only
    final = build_and_load(tmp_path / "run" / "model_final.pth")
    fresh = evaluate(final, loader.dataset.dataset, cfg, torch.device("cpu"))
    assert fresh["AP"] == seen[-1][2]


def build_and_load(path):
    from retinanet import load_model

    return load_model(str(path)).model


RUNNER = textwrap.dedent(
    """
    import sys
    from retinanet.config import load_config
    from retinanet.engine import train
    overrides = sys.argv[2:]
    train(load_config(None, overrides), resume=sys.argv[1] == "resume")
    """
)


@pytest.mark.parametrize(
    "augment", ["[]", "[photometric,vflip,rot90,iou_crop,zoom_out,lsj]"], ids=["flip", "all_augmentations"]
)
def test_killed_run_resumes_to_identical_weights(synth_dir, tmp_path, augment):
    base = TINY + [
        f"data.train_path={synth_dir}",
        "train.max_iter=8",
        "train.deterministic=true",
        "model.train_min_sizes=[96,128]",
        f"data.augment={augment}",  # every draw seeded by the stream position: the same on resume
    ]
    # uninterrupted reference
    ref = tmp_path / "ref"
    train(load_config(None, base + [f"output_dir={ref}"]))
    # a real process, killed with SIGKILL once its first checkpoint exists
    run = tmp_path / "killed"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    proc = subprocess.Popen([sys.executable, str(script), "fresh", *base, f"output_dir={run}"])
    ckpt = run / "last_checkpoint.pth"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(ckpt)["iteration"]
    assert 2 <= killed_at < 8
    proc = subprocess.run([sys.executable, str(script), "resume", *base, f"output_dir={run}"], timeout=600)
    assert proc.returncode == 0
    a = load_checkpoint(ref / "last_checkpoint.pth")
    b = load_checkpoint(run / "last_checkpoint.pth")
    assert a["iteration"] == b["iteration"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


DDP_WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from retinanet.config import load_config
    from retinanet.engine import train
    out = sys.argv[1]
    steps = []
    def record(it, model):
        steps.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
    train(load_config(None, sys.argv[2:]), on_step=record)
    torch.save(torch.stack(steps), os.path.join(out, f"steps_rank{os.environ.get('RANK', 'single')}.pt"))
    """
)


def test_ddp_two_processes_match_single_process(synth_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    args = TINY + [f"data.train_path={synth_dir}", "train.max_iter=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        str(script),
        str(tmp_path),
    ]
    subprocess.run(cmd + args + [f"output_dir={tmp_path / 'ddp'}"], check=True, env=env, timeout=600)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path)] + args + [f"output_dir={tmp_path / 'single'}"],
        check=True,
        env=env,
        timeout=600,
    )
    r0, r1 = torch.load(tmp_path / "steps_rank0.pt"), torch.load(tmp_path / "steps_rank1.pt")
    single = torch.load(tmp_path / "steps_ranksingle.pt")
    assert r0.shape[0] == 3
    for step in range(3):
        assert torch.equal(r0[step], r1[step])  # DDP keeps the replicas identical after every step
    # Same global batch of 4 (2 per rank): the same updates up to float summation order.
    # Tolerance: 1e-5 absolute on parameters of magnitude <~ 1 after 3 SGD steps.
    assert (r0 - single).abs().max().item() < 1e-5
    assert (r0[-1] - r0[0]).abs().max().item() > 1e-4  # and the parameters did move


DDP_POISONED = textwrap.dedent(
    """
    import os, sys
    from retinanet.config import load_config
    from retinanet.engine import NonFiniteLossError, train
    from retinanet.model.retinanet import RetinaNet

    mode, rank, calls = sys.argv[1], int(os.environ["RANK"]), [0]
    forward = RetinaNet.forward

    def poisoned(self, images, targets=None):
        out = forward(self, images, targets)
        if targets is not None:
            calls[0] += 1
            if rank == 1 and (mode == "always" or calls[0] == 2):  # a NaN loss on one process only
                out = {k: v * float("nan") for k, v in out.items()}
        return out

    RetinaNet.forward = poisoned
    try:
        result = train(load_config(None, sys.argv[2:]))
        print("finished", rank, result["iteration"], result["skipped"], flush=True)
    except NonFiniteLossError:
        print("stopped", rank, flush=True)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("mode", ["once", "always"])
def test_ddp_non_finite_loss_on_one_process_skips_or_stops_on_all(synth_dir, tmp_path, mode):
    # Before: the poisoned process skipped its backward alone and the other waited in the gradient
    # all-reduce until the timeout. Now both skip the step (once) or both stop with a checkpoint.
    script = tmp_path / "worker.py"
    script.write_text(DDP_POISONED)
    args = TINY + [
        f"data.train_path={synth_dir}",
        "train.max_iter=3",
        "train.max_nonfinite=2",
        f"output_dir={tmp_path}",
    ]
    port = 29541 if mode == "once" else 29542
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run(cmd + [mode] + args, env=env, timeout=120, capture_output=True, text=True)
    assert time.time() - start < 60, "the job hung"
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith(("finished", "stopped")))
    if mode == "once":
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert lines == ["finished 0 3 1", "finished 1 3 1"]  # the same step skipped on both
    else:
        assert proc.returncode != 0 and lines == ["stopped 0", "stopped 1"], proc.stderr[-2000:]
        assert load_checkpoint(tmp_path / "last_checkpoint.pth")["iteration"] == 2


def _write_voc_and_csv(synth_dir, tmp_path):
    """The tiny synthetic dataset re-written as a plain folder of VOC XML files beside their
    images, and as a keras-retinanet CSV with a class map."""
    import json
    import shutil

    coco = json.loads((synth_dir / "annotations" / "instances_train.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    voc, rows = tmp_path / "voc", []
    voc.mkdir()
    for img in coco["images"]:
        shutil.copy(synth_dir / "train" / img["file_name"], voc / img["file_name"])
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        objects = ""
        for a in anns:
            x, y, w, h = a["bbox"]
            # VOC: 1-based inclusive pixel indices
            objects += (
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{x + 1:.1f}</xmin><ymin>{y + 1:.1f}</ymin>"
                f"<xmax>{x + w:.1f}</xmax><ymax>{y + h:.1f}</ymax></bndbox></object>"
            )
            rows.append(f"{voc / img['file_name']},{x:.1f},{y:.1f},{x + w:.1f},{y + h:.1f},{names[a['category_id']]}")
        if not anns:
            rows.append(f"{voc / img['file_name']},,,,,")
        (voc / (img["file_name"].rsplit(".", 1)[0] + ".xml")).write_text(
            f"<annotation><filename>{img['file_name']}</filename><size><width>{img['width']}</width>"
            f"<height>{img['height']}</height><depth>3</depth></size>{objects}</annotation>"
        )
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.csv").write_text("".join(f"{n},{i}\n" for i, n in enumerate(sorted(names.values()))))
    return voc, tmp_path / "train.csv", tmp_path / "classes.csv"


def test_training_on_voc_xml_and_csv(synth_dir, tmp_path):
    import json

    voc, csv_file, class_map = _write_voc_and_csv(synth_dir, tmp_path)
    runs = {
        "voc": ["data.kind=voc", f"data.train_path={voc}", f"data.val_path={voc}"],
        "csv": [
            "data.kind=csv",
            f"data.train_path={csv_file}",
            f"data.val_path={csv_file}",
            f"data.class_map={class_map}",
        ],
    }
    from retinanet.data.build import build_datasets

    # What each reader gives is the COCO original: the same images in the same order, the same
    # labels, boxes within the 0.05 px of the files' one decimal (a 1-based VOC index read as
    # 0-based would be 1 px off).
    coco_cfg = load_config(None, TINY + [f"data.train_path={synth_dir}", f"output_dir={tmp_path / 'unused'}"])
    coco_ds = build_datasets(coco_cfg, train=True)[0]
    losses = {}
    for kind, extra in runs.items():
        out = tmp_path / f"out_{kind}"
        base = [o for o in TINY if not o.startswith("data.kind")]
        cfg = load_config(None, base + extra + ["train.max_iter=3", "train.lr_steps=[2]", f"output_dir={out}"])
        ds = build_datasets(cfg, train=True)[0]
        assert sorted(ds.class_names) == sorted(coco_ds.class_names) and len(ds) == len(coco_ds), kind
        for ours, ref in zip(ds.records, coco_ds.records):
            assert ours.path.name == ref.path.name, kind
            names = [ds.class_names[k] for k in ours.labels]
            assert names == [coco_ds.class_names[k] for k in ref.labels], (kind, ref.path)
            assert len(ref.boxes) == 0 or abs(ours.boxes - ref.boxes).max() <= 0.05 + 1e-4, (kind, ref.path)
        result = train(cfg)
        losses[kind] = [
            json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
        ]
        assert len(losses[kind]) == 3 and all(0 < v < 100 for v in losses[kind]), (kind, losses)
        assert result["iteration"] == 3 and 0.0 <= result["metrics"]["AP"] <= 100.0, kind
        # both take the class list in sorted order (the class map written above; VOC: collected)
        assert load_checkpoint(out / "model_final.pth")["class_names"] == sorted(
            ["circle", "square", "triangle", "ring", "cross", "star"]
        )
    # the same data in the same order: the two runs train alike (boxes differ by rounding only)
    assert losses["voc"] == pytest.approx(losses["csv"], rel=1e-3), losses


def test_bf16_autocast_training_on_cpu(synth_dir, tmp_path):
    import json

    # After the first step, hooks record the dtype of the FPN's and the head's outputs in the
    # second step's forward: under autocast the convolutions compute in bf16. The backbone's
    # blocks too: its frozen BatchNorms are applied inside the convolutions, where
    # FrozenBatchNorm2d's float32 scale would have made every block's output float32.
    from retinanet.model.batchnorm import FrozenBNConv2d

    seen = {}

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            seen.setdefault(name, output.dtype)

        return hook

    def hook_after_first_step(it, model):
        if it == 1:
            model.fpn.output[0].register_forward_hook(record("fpn"))
            model.head.cls_score.register_forward_hook(record("head"))
            model.backbone.layer3.register_forward_hook(record("res4"))
            seen["absorbed"] = sum(isinstance(m, FrozenBNConv2d) for m in model.modules())

    cfg = _cfg(synth_dir, tmp_path, "train.amp=bf16", "train.max_iter=2", "train.lr_steps=[1]")
    result = train(cfg, on_step=hook_after_first_step)
    # resnet18 with freeze_at=1: the stem's norm and 16 in the blocks (3 in downsampling paths)
    assert seen == {"fpn": torch.bfloat16, "head": torch.bfloat16, "res4": torch.bfloat16, "absorbed": 20}
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) == 2 and all(0 < v < 100 for v in losses)
    assert result["skipped"] == 0 and "AP" in result["metrics"]


def test_fp16_training_is_refused_off_cuda(synth_dir, tmp_path):
    # fp16 needs a loss scale (GradScaler, CUDA only): on the CPU small float16 gradients would
    # underflow to zero unscaled, and float16 convolution backward passes run ~200x slower than
    # float32 ones (1.8 s for one 64-channel 3x3 conv at 32 x 32 px, batch 4). A one-line error
    # before anything is built, pointing at bf16.
    from retinanet.config import ConfigError

    cfg = _cfg(synth_dir, tmp_path, "train.amp=fp16", "train.max_iter=2", "train.lr_steps=[1]")
    with pytest.raises(ConfigError, match=r"train.amp=fp16 needs a CUDA device.*bf16"):
        train(cfg)
    assert not (tmp_path / "last_checkpoint.pth").exists()

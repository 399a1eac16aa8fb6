"""Several workers on one table (retinanet/tools/claims.py): a run folder's lock is held by one
process at a time and let go when that process dies; two workers side by side train every run
of a table exactly once between them and write the same report."""

import json
import signal
import subprocess
import sys
import threading
import time

import yaml
from test_power import _stub_ap, _table  # (tests/tools is on the path of its tests)

from retinanet.tools import experiments as ex
from retinanet.tools.claims import RunLock


def test_a_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    first, second = RunLock(run), RunLock(run)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    # A worker killed mid-run (SIGKILL: no clean-up of its own) leaves no stale lock behind.
    code = (
        "import sys, time; from retinanet.tools.claims import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        lock = RunLock(run)
        assert not lock.try_acquire()
        assert lock.holder().startswith(f"pid {proc.pid} on ")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert lock.try_acquire()
    lock.release()


def test_two_workers_share_a_tables_runs(tmp_path, monkeypatch):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"kind": "synth", "train_path": str(tmp_path / "unused")}}))
    # 6 planned runs, then one paired seed more for FL and the best CE (min_seeds 3).
    tables = _table(
        tmp_path, base, comparisons=[{"a": "FL", "b": "best:CE α="}], power={"min_seeds": 3, "max_seeds": 3}
    )
    trained, lock = [], threading.Lock()

    def slow_run_one(cfg, run_dir):
        if (run_dir / "result.json").is_file():
            return json.loads((run_dir / "result.json").read_text())
        with lock:
            trained.append((threading.current_thread().name, cfg.model.cls_loss, cfg.model.focal_alpha, cfg.seed))
        time.sleep(0.3)  # long enough for the other worker to find the run taken
        result = {"metrics": {"AP": _stub_ap(cfg), "AP50": 50.0, "AP75": 20.0}, "diverged": False}
        ex._write_result(run_dir, result)
        return result

    monkeypatch.setattr(ex, "run_one", slow_run_one)
    reports = {}
    kw = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", tables_dir=tables)

    def worker(name):
        reports[name] = ex.run_table("power", "mini", **kw)

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    runs = [t[1:] for t in trained]
    assert len(runs) == len(set(runs)) == 8  # every run trained once: 6 planned + 2 for power
    by_worker = {n: sum(1 for t in trained if t[0] == n) for n in ("w1", "w2")}
    assert min(by_worker.values()) >= 2, by_worker  # shared, not one after the other
    assert reports["w1"]["comparisons"] == reports["w2"]["comparisons"]
    assert reports["w1"]["comparisons"][0]["seeds"] == 3
    assert not list((tmp_path / "runs").glob("*/*/result.json.tmp*"))

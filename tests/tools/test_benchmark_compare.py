"""The before/after table of benchmarks/RESULTS.md (retinanet/tools/benchmark/compare.py): ratios
by hand on a small pair of results, and the committed table from the committed results files."""

import json
from pathlib import Path

from retinanet.tools.benchmark.compare import TRAIN_ROW, compare_lines, main

ROOT = Path(__file__).resolve().parents[2]


def _results(plain, fast, tv_ab, step, tv_step, loader=None):
    rows = [{"section": "train", "name": f"{TRAIN_ROW}, 512 px, batch 2", "ours_ms": step, "torchvision_ms": tv_step}]
    if loader:
        rows.append(
            {
                "section": "loader",
                "name": "JPEG decode 640 x 480, per image, one worker",
                "details": {"images_per_s": loader},
            }
        )
    return {
        "ablation": {
            "size": 800,
            "torchvision_ms": tv_ab,
            "rows": [{"variant": "plain", "ms": plain}, {"variant": "fold_bn+channels_last", "ms": fast}],
        },
        "rows": rows,
    }


def test_ratios_by_hand():
    before = _results(1.0, 1.0, 1.0, 450.0, 500.0)  # its ablation is not read: the model code is the same
    after = _results(900.0, 700.0, 1000.0, 400.0, 500.0, {"before": 100.0, "ours": 160.0, "torchvision": 170.0})
    lines = compare_lines(before, after)
    # predict: the plain model 900 of torchvision's 1000 (0.900), the fast one 700 (0.700), same run
    assert (
        "| predict / eval / export (--no-fast against the default), 800 px, batch 1 | 900 | 700 | 1,000 / 1,000 "
        "| 0.900 | 0.700 | 0.778 |" in lines
    )
    assert (
        "| training step fp32 as retinanet train runs it, 512 px, batch 2 | 450 | 400 | 500 / 500 | 0.900 | 0.800 "
        "| 0.889 |" in lines
    )
    assert "| 640 x 480 | 100 | 160 | 1.60 | 170 |" in lines


def test_the_committed_table_is_the_committed_measurements(capsys):
    folder = ROOT / "benchmarks" / "before_after"
    before, after = folder / "before.json", folder / "after.json"
    assert main([str(before), str(after)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    missing = [line for line in table if line and line not in text]
    assert not missing, missing
    # the two runs: the older commit's code and this one's, on one machine
    b, a = (json.loads(p.read_text()) for p in (before, after))
    assert b["machine"]["cpu_family_model"] == a["machine"]["cpu_family_model"]

"""The schedule table (experiments/tables/schedule.yaml): FL against α-balanced CE at 120 and
360 iterations, mini scale only. Its rows resolve, and differ in exactly what the table says."""

from retinanet.config import config_to_dict
from retinanet.tools import experiments as ex


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _diff(a, b):
    fa, fb = _flat(config_to_dict(a)), _flat(config_to_dict(b))
    fa.pop("output_dir", None), fb.pop("output_dir", None)
    return {k: (fa.get(k), fb.get(k)) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def test_schedule_table_mini_rows_resolve_and_differ_as_the_table_says():
    table = ex.load_table("schedule")
    runs = ex.plan(table, "mini")
    assert [(row.name, seed) for row, seed, _ in runs] == [
        ("FL γ=2 α=.25, 120 it", 0),
        ("FL γ=2 α=.25, 120 it", 1),
        ("FL γ=2 α=.25, 120 it", 2),
        ("CE α=.90, 120 it", 0),
        ("CE α=.90, 120 it", 1),
        ("CE α=.90, 120 it", 2),
        ("FL γ=2 α=.25, 360 it", 0),
        ("CE α=.90, 360 it", 0),
    ]
    assert not ex.plan(table, "paper")  # mini scale only
    cfg = {(row.name, seed): c for row, seed, c in runs}
    for c in cfg.values():
        assert c.model.backbone == "resnet18" and not c.model.pretrained_backbone and c.data.kind == "synth"
    fl120, ce120 = cfg["FL γ=2 α=.25, 120 it", 0], cfg["CE α=.90, 120 it", 0]
    fl360, ce360 = cfg["FL γ=2 α=.25, 360 it", 0], cfg["CE α=.90, 360 it", 0]
    assert (fl120.model.cls_loss, fl120.model.focal_gamma, fl120.model.focal_alpha) == ("focal", 2.0, 0.25)
    assert (ce120.model.cls_loss, ce120.model.focal_alpha) == ("ce", 0.9)
    assert (fl120.train.max_iter, tuple(fl120.train.lr_steps)) == (120, (80, 107))  # the mini schedule
    # The loss rows differ only in the loss, at either length; the lengths only in the schedule,
    # the learning-rate steps scaled with it (2/3 and 8/9 of the run), for either loss.
    loss = {"model.cls_loss": ("focal", "ce"), "model.focal_alpha": (0.25, 0.9)}
    assert _diff(fl120, ce120) == loss and _diff(fl360, ce360) == loss
    longer = {"train.max_iter": (120, 360), "train.lr_steps": ([80, 107], [240, 320])}
    longer["train.checkpoint_period"] = (40, 60)
    assert _diff(fl120, fl360) == longer and _diff(ce120, ce360) == longer
    # Seeds of a row differ only by the seed.
    assert _diff(fl120, cfg["FL γ=2 α=.25, 120 it", 2]) == {"seed": (fl120.seed, fl120.seed + 2)}
    # The 120-iteration rows are the runs of Tables 1(a) and 1(b), seed for seed: one cached run each.
    gamma, alpha = ex.load_table("gamma"), ex.load_table("alpha")
    for s in range(3):
        fl_b = ex.row_config(gamma, gamma.row("γ=2 α=.25"), "mini", s)
        ce_a = ex.row_config(alpha, alpha.row("α=.90"), "mini", s)
        assert ex.config_hash(cfg["FL γ=2 α=.25, 120 it", s]) == ex.config_hash(fl_b)
        assert ex.config_hash(cfg["CE α=.90, 120 it", s]) == ex.config_hash(ce_a)
    assert ex.config_hash(fl360) != ex.config_hash(fl120)


def test_schedule_table_dry_run_lists_its_eight_runs(capsys):
    from retinanet.cli import main

    assert main(["experiment", "schedule", "--scale", "mini", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[schedule/mini]")]
    assert len(lines) == 8 and sum("360 it" in line for line in lines) == 2

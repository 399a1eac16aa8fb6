"""Figures 1 and 2: the curves' values and the files (Fig. 4: tests/diagnostics/test_loss_cdf.py)."""

import json

import numpy as np
import pytest
import torch

from retinanet.data.synth import generate_synthetic
from retinanet.tools import figures


def test_fig1_curve_values_are_the_spec_worked_example():
    # §3 of the paper, natural logs: CE(0.11) = 2.2072749, FL(0.11) = 1.7483825,
    # CE(0.89) = 0.1165338, FL(0.89) = 0.0014101
    pt = np.array([0.11, 0.89])
    np.testing.assert_allclose(figures.focal_loss_of_pt(pt, 0.0), [2.2072749, 0.1165338], rtol=1e-6)
    np.testing.assert_allclose(figures.focal_loss_of_pt(pt, 2.0), [1.7483825, 0.0014101], rtol=1e-4)


def test_fig1_png_plots_the_focal_loss_of_each_gamma(tmp_path, monkeypatch):
    # The data behind the picture: each curve is -(1 - p_t)^γ log(p_t) of its γ (§3, Fig. 1).
    drawn = {}
    save = figures.save_figure

    def keep(fig, out):
        drawn.update({line.get_label(): (line.get_xdata(), line.get_ydata()) for line in fig.axes[0].get_lines()})
        return save(fig, out)

    monkeypatch.setattr(figures, "save_figure", keep)
    out = figures.plot_fig1(tmp_path / "fig1.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert sorted(drawn) == sorted(["γ = 0 (CE)", "γ = 0.5", "γ = 1", "γ = 2", "γ = 5"])
    for label, (pt, loss) in drawn.items():
        gamma = 0.0 if "CE" in label else float(label.split("= ")[1])
        np.testing.assert_allclose(loss, -((1 - pt) ** gamma) * np.log(pt), rtol=1e-12)
        assert pt.min() > 0 and pt.max() == 1.0


def test_fig2_from_a_speed_report(tmp_path):
    report = {
        "scale": "mini",
        "rows": [
            {
                "name": "mini R18 224",
                "paper": {},
                "measured": {"AP": 20.0, "ms_per_image": 30.0},
                "runs": [{"device": "cpu"}],
            },
            {"name": "mini R18 320", "paper": {}, "measured": {"AP": 25.0, "ms_per_image": 50.0}, "runs": [{}]},
            {"name": "mini R34 320", "paper": {}, "measured": {"AP": 27.0, "ms_per_image": 80.0}, "runs": [{}]},
        ],
    }
    path = tmp_path / "speed_mini.json"
    path.write_text(json.dumps(report))
    assert figures.plot_fig2(path, tmp_path / "fig2.png").stat().st_size > 10_000
    report["rows"] = [{"name": "mini R18 224", "paper": {}, "measured": {"AP": 20.0}, "runs": []}]
    path.write_text(json.dumps(report))
    with pytest.raises(ValueError, match="no row has both AP and ms_per_image"):
        figures.plot_fig2(path, tmp_path / "fig2.png")


def test_figure_and_loss_cdf_commands(tmp_path, capsys):
    from retinanet.cli import main
    from retinanet.config import Config, DataConfig, config_to_dict
    from retinanet.model.build import build_model
    from retinanet.model.config import ModelConfig

    assert main(["figure", "fig1", "--out", str(tmp_path / "f1.png")]) == 0
    assert (tmp_path / "f1.png").stat().st_size > 10_000
    assert main(["figure", "fig2", "--results", str(tmp_path / "none.json")]) == 2
    assert "no speed table results" in capsys.readouterr().err

    root = generate_synthetic(tmp_path / "synth", seed=2, num_train=1, num_val=2, image_size=128)
    torch.manual_seed(0)
    mcfg = ModelConfig(
        backbone="resnet18", num_classes=6, fpn_channels=32, head_convs=1, min_size=128, max_size=128, size_divisor=32
    )
    cfg = Config(model=mcfg, data=DataConfig(kind="synth", train_path=str(root)))
    ckpt = tmp_path / "model_final.pth"
    torch.save(
        {"model": build_model(mcfg).state_dict(), "config": config_to_dict(cfg), "class_names": list("abcdef")}, ckpt
    )
    argv = [
        "analyze",
        "loss-cdf",
        "--weights",
        str(ckpt),
        "--out",
        str(tmp_path / "f4.png"),
        "--json",
        str(tmp_path / "f4.json"),
        "--gammas",
        "0,2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "negative samples from 2 images" in out and (tmp_path / "f4.png").stat().st_size > 10_000
    shares = json.loads((tmp_path / "f4.json").read_text())["gammas"]
    # A fresh model predicts ~π everywhere: the negatives' losses are nearly equal, so their
    # hardest 1% carry ~1% of it (a trained model's carry most of it at γ = 2: 0.78 on the demo).
    assert set(shares) == {"0", "2"}
    assert shares["0"]["negatives_hardest_1pct_share"] == pytest.approx(0.01, abs=0.002)
    assert shares["2"]["negatives_hardest_1pct_share"] < 0.03
    scores = json.loads((tmp_path / "f4.json").read_text())["scores"]
    assert scores["positives_above_thresh"] == 0.0 and scores["positives_p_median"] == pytest.approx(0.01, abs=0.005)
    assert "0.0% of them above the score threshold 0.05" in out and "(the prior π = 0.01)" in out

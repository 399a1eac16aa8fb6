"""Fig. 4 (§5.1): the loss CDF of a model's positive and negative examples."""

import numpy as np
import pytest
import torch

from retinanet.data.synth import generate_synthetic
from retinanet.diagnostics import loss_cdf


def test_loss_cdf_concentrates_on_hard_negatives_as_gamma_grows():
    # 99% easy negatives (p_t = .99), 1% hard ones (p_t = .3).
    pt = np.concatenate([np.full(9900, 0.99), np.full(100, 0.3)])
    frac, cdf = loss_cdf.normalized_loss_cdf(pt, 2.0)
    assert np.all(np.diff(cdf) >= -1e-12) and cdf[-1] == pytest.approx(1.0) and frac[-1] == 1.0
    # Share of the loss in the hardest 1%: CE 100·1.204 / (100·1.204 + 9900·0.01005) = 0.548;
    # FL γ=2: 100·0.590 / (100·0.590 + 9900·1.005e-6) = 0.99983.
    ce = loss_cdf.top_share(pt, 0.0, 0.01)
    fl = loss_cdf.top_share(pt, 2.0, 0.01)
    assert ce == pytest.approx(100 * -np.log(0.3) / (100 * -np.log(0.3) + 9900 * -np.log(0.99)), rel=1e-9)
    assert ce == pytest.approx(0.548, abs=1e-3) and fl == pytest.approx(0.99983, abs=1e-4)


def test_prior_gradient_ratio_by_hand():
    # At the prior p = π = .01. CE: a negative's |dL/dx| is (1 - α) p, a positive's α (1 - p).
    assert loss_cdf.prior_gradient_ratio(12455, 0.0, 0.75, 0.01) == pytest.approx(12455 * 0.25 * 0.01 / (0.75 * 0.99))
    assert loss_cdf.prior_gradient_ratio(1.0, 0.0, 0.5, 0.01) == pytest.approx(0.01 / 0.99)
    assert loss_cdf.prior_gradient_ratio(1.0, 0.0, None, 0.5) == pytest.approx(1.0)  # unweighted, at p = .5
    # FL γ = 2, α = .25 (appendix B, |dFL/dx| = α_t (1 - p_t)^γ (1 - p_t - γ p_t log p_t)):
    # a negative (p_t = .99): .75 · .01² · (.01 - 2 · .99 · log .99) = 2.2424e-6;
    # a positive (p_t = .01): .25 · .99² · (.99 - 2 · .01 · log .01) = 0.265143.
    neg = 0.75 * 0.01**2 * (0.01 - 2 * 0.99 * np.log(0.99))
    pos = 0.25 * 0.99**2 * (0.99 - 2 * 0.01 * np.log(0.01))
    assert neg == pytest.approx(2.2424e-6, rel=1e-4) and pos == pytest.approx(0.265143, rel=1e-5)
    assert loss_cdf.prior_gradient_ratio(12455, 2.0, 0.25, 0.01) == pytest.approx(12455 * neg / pos, rel=1e-9)
    # the focal term lowers the negatives' share monotonically in γ
    ratios = [loss_cdf.prior_gradient_ratio(12455, g, 0.25, 0.01) for g in (0.0, 0.5, 1.0, 2.0, 5.0)]
    assert all(a > b for a, b in zip(ratios, ratios[1:]))


def test_fig4_from_a_model(tmp_path):
    from retinanet import get_model
    from retinanet.data.coco import CocoDetection

    root = generate_synthetic(tmp_path / "synth", seed=2, num_train=1, num_val=3, image_size=128)
    ds = CocoDetection(root / "val", root / "annotations" / "instances_val.json")
    torch.manual_seed(0)
    model = get_model(
        "retinanet_r18_fpn", num_classes=6, fpn_channels=32, head_convs=1, min_size=128, max_size=128, size_divisor=32
    )
    pos, neg = loss_cdf.collect_pt(model, ds, torch.device("cpu"))
    # Every class output of a fresh model sits at the prior π = 0.01 (§3.3): p_t ≈ .01 for
    # positives, ≈ .99 for negatives; 6 outputs per background anchor.
    assert len(pos) > 0 and len(neg) % 6 == 0 and len(neg) > 100 * len(pos)
    assert abs(pos.mean() - 0.01) < 0.005 and abs(neg.mean() - 0.99) < 0.005
    # ... so it is "still at the prior": no positive above the detection threshold.
    scores = loss_cdf.score_summary(pos, neg, 0.05)
    assert abs(scores["positives_p_median"] - 0.01) < 0.005 and scores["positives_p_q90"] < 0.05
    assert scores["positives_above_thresh"] == 0.0 and scores["negatives_max_p"] < 0.05
    assert scores["negatives_above_thresh_per_positive"] == 0.0
    moved = loss_cdf.score_summary(np.array([0.02, 0.3, 0.6, 0.9]), np.array([0.99, 0.7]), 0.05)
    assert moved["positives_above_thresh"] == 0.75 and moved["negatives_max_p"] == pytest.approx(0.3)
    assert moved["positives_p_median"] == pytest.approx(0.45)
    assert moved["negatives_above_thresh_per_positive"] == 0.25  # one background p of .3 > .05, four positives
    out, summary = loss_cdf.plot_fig4(pos, neg, tmp_path / "fig4.png")
    assert out.stat().st_size > 10_000
    assert set(summary) == {"0", "0.5", "1", "2"}

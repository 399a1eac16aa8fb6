"""retinanet.deploy.optimize: every fast path gives the plain model's results."""

import copy
import logging

import pytest
import torch
from helpers import assert_same_detections
from torchvision.ops import FrozenBatchNorm2d

from retinanet import ModelConfig, build_model, from_torchvision
from retinanet.deploy import optimize as fast
from retinanet.tools.benchmark import match_detections, random_images, torchvision_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tv_state():
    # torchvision's R50-FPN config with random weights that give 300 unsaturated, non-degenerate
    # detections per 128-px image (see benchmark.torchvision_model), FrozenBN with random stats.
    return torchvision_model(0, 128).state_dict()


@pytest.fixture(scope="module")
def r50(tv_state):
    return from_torchvision(tv_state, min_size=128, max_size=128).eval()


@pytest.fixture(scope="module")
def images():
    return random_images(2, 128, CPU, seed=3)


@pytest.fixture(scope="module")
def plain_dets(r50, images):
    with torch.no_grad():
        return r50(images)


@pytest.mark.parametrize(
    "options",
    [
        dict(fold_bn=True, channels_last=False),
        dict(fold_bn=False, channels_last=True),
        dict(fold_bn=True, channels_last=True),
    ],
    ids=["fold_bn", "channels_last", "fold_bn+channels_last"],
)
def test_fp32_fast_paths_give_the_same_detections(r50, images, plain_dets, options):
    model = fast.optimize_for_inference(r50, **options)
    assert model is not r50
    with torch.no_grad():
        got = model(images)
    assert all(len(d["boxes"]) == 300 for d in plain_dets)  # many detections, up to the cap
    for a, b in zip(plain_dets, got):
        assert_same_detections(a, b, box_tol=1e-3)
        assert b["boxes"].dtype == b["scores"].dtype == torch.float32


def test_fold_replaces_every_frozen_norm_and_leaves_the_original_alone(r50):
    before = {k: v.clone() for k, v in r50.state_dict().items()}
    model = copy.deepcopy(r50)
    # ResNet-50: the stem, 3 per bottleneck (16 of them) and the 4 downsample branches
    assert fast.fold_batchnorm(model) == 1 + 16 * 3 + 4
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert fast.fold_batchnorm(model) == 0  # idempotent
    assert any(isinstance(m, FrozenBatchNorm2d) for m in r50.modules())
    fast.optimize_for_inference(r50)
    after = r50.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


def _head_outputs(model, images):
    with torch.no_grad():
        batch, _, _ = model.preprocess(images)
        return model.head(model.fpn(model.backbone(batch)))


def test_eval_batchnorm_is_folded_groupnorm_is_not():
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18", num_classes=3, norm="bn", head_norm="gn", freeze_at=0, min_size=96, max_size=96
    )
    model = build_model(cfg)
    _randomize_norms(model)
    images = random_images(2, 96, CPU, seed=1)
    assert fast.fold_batchnorm(copy.deepcopy(model).train()) == 0  # batch statistics: not foldable
    model.eval()
    folded = copy.deepcopy(model)
    # ResNet-18: the stem, 2 per basic block (8 of them) and 3 downsample branches
    assert fast.fold_batchnorm(folded) == 1 + 8 * 2 + 3
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in folded.modules()) == 8  # the subnets' GN stay
    for a, b in zip(_head_outputs(model, images), _head_outputs(folded, images)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_absorbed_frozen_bn_trains_like_the_plain_model(tv_state):
    plain = from_torchvision(tv_state, min_size=96, max_size=96).train()
    fast_model = copy.deepcopy(plain)
    params = [id(p) for p in fast_model.parameters()]
    keys = list(fast_model.state_dict())
    assert fast.optimize_for_training(fast_model, channels_last=True) is fast_model
    assert fast.absorb_frozen_batchnorm(fast_model) == 0  # already absorbed
    assert [id(p) for p in fast_model.parameters()] == params  # an optimizer built before still works
    assert list(fast_model.state_dict()) == keys  # checkpoints are interchangeable
    images = random_images(2, 96, CPU, seed=2)
    targets = [
        {"boxes": torch.tensor([[10.0, 12, 60, 70], [40, 30, 90, 80]]), "labels": torch.tensor([1, 17])},
        {"boxes": torch.tensor([[5.0, 5, 40, 50]]), "labels": torch.tensor([60])},
    ]
    results = []
    for model in (plain, fast_model):
        model.zero_grad(set_to_none=True)
        out = model(images, targets)
        (out["cls"] + out["box"]).backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (out_a, grad_a), (out_b, grad_b) = results
    for k in ("cls", "box"):
        torch.testing.assert_close(out_b[k], out_a[k], rtol=1e-4, atol=0)
    assert grad_a.keys() == grad_b.keys() and len(grad_a) > 0
    for name in grad_a:
        # Float rounding of a different summation order (W·s inside the conv, not s after it),
        # amplified by the cancellations of a weight gradient: compare in norm, per tensor. The
        # largest measured: 1.1e-3 of the norm (layer3.2.conv3 with 2 threads; the thread count
        # changes the summation order). A wrong scale or a missing BN term is off by >10%.
        ga, gb = grad_a[name], grad_b[name]
        assert (gb - ga).norm() <= 1e-2 * ga.norm(), name
    # The norms' statistics are read at each call: a checkpoint loaded later takes effect.
    state = {k: (v * 1.5 if k.endswith("running_var") else v) for k, v in plain.state_dict().items()}
    plain.load_state_dict(state)
    fast_model.load_state_dict(state)
    plain.eval()
    fast_model.eval()
    for a, b in zip(_head_outputs(plain, images), _head_outputs(fast_model, images)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # A model trained with absorbed norms folds for inference like any other.
    folded = fast.optimize_for_inference(fast_model)
    assert not any(isinstance(m, (FrozenBatchNorm2d, fast.FrozenBNConv2d)) for m in folded.modules())
    for a, b in zip(_head_outputs(plain, images), _head_outputs(folded, images)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def _low_precision_agreement(tv_state, images, dtype):
    model = from_torchvision(tv_state, min_size=128, max_size=128, detections_per_img=50).eval()
    low = fast.optimize_for_inference(model, dtype=dtype)
    assert low.backbone.conv1.weight.dtype == dtype and low.head.cls_score.weight.dtype == dtype
    with torch.no_grad():
        ref, got = model(images), low(images)
    assert all(d["scores"].dtype == torch.float32 and d["boxes"].dtype == torch.float32 for d in got)
    agreement = match_detections(ref, got)
    assert agreement["total"] == 100
    return agreement


def test_fp16_mode_matches_99_percent_of_detections(tv_state, images):
    agreement = _low_precision_agreement(tv_state, images, torch.float16)
    assert agreement["matched_share"] >= 0.99, agreement


def test_bf16_mode_matches_most_detections(tv_state, images):
    # bf16 keeps 8 significant bits: on random weights its logit error (std ~0.012, max ~0.07,
    # measured) reorders the near-tied scores of a random detector. Measured here 92 % of the 50
    # best detections per image matched (83-92 % over seeds and list lengths, and the same with
    # bf16 autocast of the plain model: the precision, not this implementation); fp16 100 %.
    agreement = _low_precision_agreement(tv_state, images, torch.bfloat16)
    # A sanity floor well below that spread; the precision itself is checked on the head outputs.
    assert agreement["matched_share"] >= 0.7, agreement
    assert agreement["max_score_diff"] < 0.05, agreement


def test_bf16_mode_keeps_the_head_outputs_within_bf16_precision(tv_state, images):
    # Measured: class logits (std 0.76) off by at most 0.065 (error std 0.007), box deltas (std
    # 0.16) by at most 0.012. Bounds at ~3x: a fold, cast or layout error is far larger.
    model = from_torchvision(tv_state, min_size=128, max_size=128).eval()
    low = fast.optimize_for_inference(model, dtype=torch.bfloat16)
    with torch.no_grad():
        batch, _, _ = model.preprocess(images)
        ref = model.head(model.fpn(model.backbone(batch)))
        got = low.head(low.fpn(low.backbone(batch.to(torch.bfloat16))))
    (cls_ref, box_ref), (cls_got, box_got) = ref, got
    cls_err, box_err = (cls_got.float() - cls_ref).abs(), (box_got.float() - box_ref).abs()
    assert cls_err.max() < 0.2 and cls_err.std() < 0.02, (cls_err.max(), cls_err.std())
    assert box_err.max() < 0.04, box_err.max()


def _tiny(**kw):
    cfg = dict(backbone="resnet18", num_classes=3, min_size=64, max_size=64, score_thresh=0.0, detections_per_img=20)
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**cfg, **kw})).eval()


def test_compile_falls_back_when_torch_compile_raises(monkeypatch, caplog):
    model = _tiny()
    images = random_images(1, 64, CPU, seed=4)

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="retinanet.deploy.optimize"):
        compiled = fast.optimize_for_inference(model, compile=True)
    assert "no compiler here" in caplog.text
    assert not fast.is_compiled(compiled)
    eager = fast.optimize_for_inference(model)
    with torch.no_grad():
        for a, b in zip(eager(images), compiled(images)):
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_falls_back_when_the_compiled_call_fails(monkeypatch, caplog):
    model = _tiny()
    images = random_images(2, 64, CPU, seed=5)
    calls = []

    def lazy_failing_compile(fn, **kwargs):  # like torch.compile: fails at the first call
        def run(*args, **kw):
            calls.append(fn)
            raise RuntimeError("inductor exploded")

        return run

    monkeypatch.setattr(torch, "compile", lazy_failing_compile)
    compiled = fast.optimize_for_inference(model, compile={"dynamic": False})
    assert fast.is_compiled(compiled)
    with caplog.at_level(logging.WARNING, logger="retinanet.deploy.optimize"), torch.no_grad():
        got = compiled(images)
    assert "inductor exploded" in caplog.text and calls
    assert not fast.is_compiled(compiled)  # given up for good: no second attempt
    n = len(calls)
    eager = fast.optimize_for_inference(model)
    with torch.no_grad():
        compiled(images)
        for a, b in zip(eager(images), got):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(calls) == n


def test_compile_keeps_compiling_when_the_inputs_are_wrong(monkeypatch):
    model = _tiny()
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiled" = eager: both fail alike
    compiled = fast.optimize_for_inference(model, compile=True)
    with pytest.raises(RuntimeError), torch.no_grad():
        compiled.backbone(torch.zeros(1, 4, 64, 64))  # 4 channels: the model's error, not the compiler's
    assert fast.is_compiled(compiled)


@pytest.mark.slow
def test_torch_compile_gives_the_eager_results(r50, images, plain_dets, caplog):
    compiled = fast.optimize_for_inference(r50, compile={"dynamic": False})
    with caplog.at_level(logging.WARNING, logger="retinanet.deploy.optimize"), torch.no_grad():
        got = compiled(images)
    # The compiled graphs ran: no fallback to eager (which would give equal results too).
    assert fast.is_compiled(compiled) and "torch.compile of" not in caplog.text
    for a, b in zip(plain_dets, got):
        assert_same_detections(a, b, box_tol=1e-3)

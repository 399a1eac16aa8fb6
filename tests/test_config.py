"""The typed config: paper defaults, YAML differences, dotted overrides, errors, round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from retinanet.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    diff_from_defaults,
    format_overrides,
    load_config,
    save_config,
    scaled_lr,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_the_papers():
    cfg = Config()
    t, m = cfg.train, cfg.model
    # §4 training recipe.
    assert (t.base_lr, t.momentum, t.weight_decay) == (0.01, 0.9, 1e-4)
    assert (t.batch_size, t.base_batch_size) == (16, 16) and scaled_lr(t) == t.lr == 0.01
    assert (t.max_iter, t.lr_steps, t.lr_gamma) == (90000, (60000, 80000), 0.1)
    assert (t.warmup_iters, t.warmup_factor) == (500, pytest.approx(1 / 3))
    assert t.clip_grad_norm is None and t.amp == "off"
    assert cfg.data.hflip_prob == 0.5
    # §3 focal loss, §3.3 prior, §4 assignment and inference.
    assert (m.cls_loss, m.focal_alpha, m.focal_gamma, m.prior_prob) == ("focal", 0.25, 2.0, 0.01)
    assert (m.fg_iou_thresh, m.bg_iou_thresh) == (0.5, 0.4)
    assert (m.score_thresh, m.topk_candidates, m.nms_thresh, m.detections_per_img) == (0.05, 1000, 0.5, 100)
    assert (m.backbone, m.fpn_channels, m.p6_from, m.head_convs) == ("resnet50", 256, "c5", 4)
    assert (m.scales_per_octave, m.aspect_ratios) == (3, (0.5, 1.0, 2.0))
    assert (m.min_size, m.max_size) == (800, 1333)
    assert load_config(None, []) == cfg
    assert diff_from_defaults(cfg) == {}


def test_linear_scaling_rule():
    assert apply_overrides(Config(), ["train.batch_size=8"]).train.lr == pytest.approx(0.005)
    assert apply_overrides(Config(), ["train.batch_size=32"]).train.lr == pytest.approx(0.02)


def test_yaml_differences_apply(tmp_path):
    text = "model:\n  backbone: resnet18\n  focal_alpha: null\ntrain:\n  weight_decay: 1e-5\n"
    text += "  lr_steps: [6, 8]\n  max_iter: 10\n  amp: off\nseed: 3\n"
    path = write(tmp_path / "a.yaml", text)
    cfg = load_config(path)
    assert cfg.model.backbone == "resnet18" and cfg.model.focal_alpha is None
    assert cfg.train.weight_decay == 1e-5  # a float, though YAML 1.1 would read "1e-5" as a string
    assert cfg.train.amp == "off"  # a string, though YAML 1.1 would read off as False
    assert cfg.train.lr_steps == (6, 8) and cfg.seed == 3
    assert cfg.model.focal_gamma == 2.0 and cfg.train.momentum == 0.9  # the rest untouched
    assert diff_from_defaults(cfg) == {
        "model.backbone": "resnet18", "model.focal_alpha": None, "train.weight_decay": 1e-5,
        "train.lr_steps": [6, 8], "train.max_iter": 10, "seed": 3,
    }


def test_base_include_one_level(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  backbone: resnet18\n  min_size: 320\ntrain:\n  batch_size: 8\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nmodel:\n  min_size: 256\n")
    cfg = load_config(child, ["train.batch_size=4"])
    assert (cfg.model.backbone, cfg.model.min_size, cfg.train.batch_size) == ("resnet18", 256, 4)

    write(tmp_path / "deeper.yaml", "_base_: child.yaml\n")
    with pytest.raises(ConfigError, match="one level"):
        load_config(tmp_path / "deeper.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(write(tmp_path / "bad.yaml", "_base_: nowhere.yaml\n"))


def test_dotted_overrides_with_coercion():
    cfg = load_config(None, [
        "model.focal_gamma=0",  # int -> float
        "model.focal_alpha=null",  # Optional
        "train.lr_steps=[600,800]",  # list -> tuple
        "train.max_iter=1000",
        "model.anchor_sizes=[16, 32, 64, 128, 256]",
        "model.pretrained_backbone=/weights/r50.pth",  # bool | str
        "model.head_norm=gn",
        "train.clip_grad_norm=10",
        "train.amp=bf16",
        "data.keep_empty=true",
        "output_dir=out/x",
    ])
    assert cfg.model.focal_gamma == 0.0 and isinstance(cfg.model.focal_gamma, float)
    assert cfg.model.focal_alpha is None
    assert cfg.train.lr_steps == (600, 800) and cfg.train.max_iter == 1000
    assert cfg.model.anchor_sizes == (16.0, 32.0, 64.0, 128.0, 256.0)
    assert all(isinstance(s, float) for s in cfg.model.anchor_sizes)
    assert cfg.model.pretrained_backbone == "/weights/r50.pth"
    assert load_config(None, ["model.pretrained_backbone=true"]).model.pretrained_backbone is True
    assert cfg.train.clip_grad_norm == 10.0 and cfg.train.amp == "bf16" and cfg.data.keep_empty is True
    assert cfg.output_dir == "out/x"
    # Later overrides win; a mapping of dotted keys (an ablation row) works the same.
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2
    row = {"model.focal_gamma": 0.5, "model.focal_alpha": 0.5}
    assert apply_overrides(Config(), row).model.focal_gamma == 0.5
    # The printed diff parses back.
    assert load_config(None, format_overrides(diff_from_defaults(cfg))) == cfg
    assert "train.lr_steps=[600,800]" in format_overrides(diff_from_defaults(cfg))


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"'model\.focal_gama'.*did you mean 'model\.focal_gamma'"):
        load_config(None, ["model.focal_gama=0"])
    with pytest.raises(ConfigError, match=r"'focal_gamma'.*'model\.focal_gamma'"):
        load_config(None, ["focal_gamma=0"])  # right name, missing section
    with pytest.raises(ConfigError, match=r"'trian'.*'train'"):
        load_config(None, ["trian.max_iter=3"])
    path = write(tmp_path / "typo.yaml", "train:\n  base_lr: 0.02\n  wieght_decay: 0.0\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'train\.wieght_decay'.*'train\.weight_decay'"):
        load_config(path)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["model.focal_gamma"])


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("model.focal_gamma=abc", r"model\.focal_gamma='abc': expected float"),
        ("train.max_iter=2.5", r"train\.max_iter=2\.5: expected int"),
        ("data.keep_empty=1", r"data\.keep_empty=1: expected bool"),
        ("data.keep_empty=yes", r"data\.keep_empty='yes': expected bool"),
        ("train.lr_steps=5", r"train\.lr_steps=5: expected tuple\[int, \.\.\.\]"),
        ("model.box_coder_weights=[1,2]", r"expected 4 items"),
        ("model.focal_gamma=null", r"model\.focal_gamma=None: expected float"),
        ("data.kind=imagenet", r"data\.kind='imagenet': expected one of \['coco', 'voc', 'csv', 'synth'\]"),
        ("train.amp=true", r"train\.amp=True: expected one of"),
        ("model=3", r"model=3: expected a mapping"),
        ("model.backbone=resnet5", r"model\.backbone='resnet5': expected one of"),  # ModelConfig.validate()
        ("train.momentum=1.5", r"train\.momentum=1\.5"),
    ],
)
def test_wrong_values_are_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_steps_beyond_max_iter_warn():
    with pytest.warns(UserWarning, match="never apply"):
        load_config(None, ["train.max_iter=100"])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(None, ["model.backbone=resnet18", "model.focal_alpha=null", "train.lr_steps=[6,8]",
                             "train.max_iter=10", "train.warmup_factor=0.001", "model.pretrained_backbone=w.pth"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left behind
    back = load_config(path)
    assert back == cfg
    assert back.model.bbox_xform_clip == cfg.model.bbox_xform_clip == math.log(1000 / 16)
    assert config_to_dict(back) == config_to_dict(cfg)
    save_config(Config(), path)  # replaces atomically
    assert load_config(path) == Config()


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_shipped_configs_load(path):
    text = path.read_text()
    assert text.startswith("#"), "each config says what it is in a leading comment"
    cfg = load_config(path)
    assert cfg.data.kind in ("coco", "synth")
    assert diff_from_defaults(cfg), "a config holds differences"


def test_coco_configs_are_the_papers_recipe():
    for name, backbone in [("retinanet_r50_fpn_1x", "resnet50"), ("retinanet_r101_fpn_1x", "resnet101"),
                           ("retinanet_x101_32x8d_fpn_1x", "resnext101_32x8d")]:
        cfg = load_config(CONFIGS / "coco" / f"{name}.yaml")
        assert cfg.model.backbone == backbone and cfg.model.pretrained_backbone is True
        assert cfg.model.norm == "frozen_bn" and cfg.model.min_size == 800 and cfg.model.num_classes == 80
        assert cfg.data.kind == "coco" and cfg.data.train_path.startswith("datasets/coco/")
        assert cfg.data.val_images_dir == "datasets/coco/val2017"
        t = cfg.train
        assert (t.batch_size, t.lr, t.max_iter, t.lr_steps) == (16, 0.01, 90000, (60000, 80000))
        assert (t.momentum, t.weight_decay) == (0.9, 1e-4)
        assert (cfg.model.focal_alpha, cfg.model.focal_gamma) == (0.25, 2.0)


def test_synth_config():
    cfg = load_config(CONFIGS / "synth" / "retinanet_r18_synth.yaml")
    m = cfg.model
    assert (m.backbone, m.pretrained_backbone, m.freeze_at, m.norm, m.head_norm) == ("resnet18", False, 0, "bn", "gn")
    assert (m.min_size, m.max_size, m.size_divisor) == (320, 320, 32)
    assert cfg.data.kind == "synth" and cfg.train.batch_size == 8
    assert cfg.train.max_iter > max(cfg.train.lr_steps)

"""The typed config: paper defaults, YAML differences, dotted overrides, errors, round trip."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import sys
from functools import partial
from pathlib import Path
from typing import get_args

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
        "model.backbone": "resnet18",
        "model.focal_alpha": None,
        "train.weight_decay": 1e-5,
        "train.lr_steps": [6, 8],
        "train.max_iter": 10,
        "seed": 3,
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
    cfg = load_config(
        None,
        [
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
        ],
    )
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
        ("data.kind=imagenet", r"data\.kind='imagenet': expected one of \['coco', 'voc', 'csv', 'yolo', 'synth'\]"),
        ("train.amp=true", r"train\.amp=True: expected one of"),
        ("model=3", r"model=3: expected a mapping"),
        ("model.backbone=resnet5", r"model\.backbone='resnet5': expected one of"),  # ModelConfig.validate()
        ("train.momentum=1.5", r"train\.momentum=1\.5"),
        # A bool is not a number, and a string is never converted to one.
        ("train.max_iter=true", r"override: train\.max_iter=True: expected int, got bool"),
        ("model.focal_gamma=false", r"model\.focal_gamma=False: expected float, got bool"),
        ("train.max_iter='800'", r"train\.max_iter='800': expected int, got str"),
        ("model.focal_gamma='1.5'", r"model\.focal_gamma='1\.5': expected float, got str"),
        ("output_dir=3", r"output_dir=3: expected str, got int"),
        ("train.lr_steps=[6,8.5]", r"train\.lr_steps\[1\]=8\.5: expected int, got float"),
        ("model.box_coder_weights=[1,2,3,4,5]", r"expected 4 items \(tuple\[float, float, float, float\]\), got 5"),
        ("model.pretrained_backbone=1", r"model\.pretrained_backbone=1: expected bool \| str, got int"),
        ("model.focal_alpha=x", r"model\.focal_alpha='x': expected Optional\[float\], got str"),
        ("output_dir=2024-01-01", r"output_dir=datetime\.date\(2024, 1, 1\): expected str, got date"),
        # Literal choices, listed, also for the model's (and Optional ones with their None).
        (
            "model.cls_loss=FOCAL",
            r"^override: model\.cls_loss='FOCAL': expected one of \['focal', 'ce', 'fl_star', 'ohem'\]",
        ),
        ("model.head_norm=GN", r"model\.head_norm='GN': expected one of \['gn', None\]"),
        ("eval.backend=coco", r"eval\.backend='coco': expected one of \['faster_coco_eval', 'pycocotools'\]"),
        ("model.backbon=resnet18", r"unknown config key 'model\.backbon'; did you mean 'model\.backbone'"),
        ("model.fg_iou_thresh=0.3", r"model\.bg_iou_thresh must not exceed model\.fg_iou_thresh"),
    ],
)
def test_wrong_values_are_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_lossless_conversions():
    cfg = load_config(
        None,
        [
            "train.max_iter=9e4",
            "train.lr_steps=[6e4, 8e4]",
            "model.train_min_sizes=[640, 672.0]",
            "model.focal_gamma=1",
            "train.device=on",
            "train.clip_grad_norm=null",
        ],
    )
    assert cfg.train.max_iter == 90000 and type(cfg.train.max_iter) is int  # YAML reads 9e4 as a float
    assert cfg.train.lr_steps == (60000, 80000) and all(type(s) is int for s in cfg.train.lr_steps)
    assert cfg.model.train_min_sizes == (640, 672) and type(cfg.model.focal_gamma) is float
    assert cfg.train.device == "on" and cfg.train.clip_grad_norm is None  # YAML 1.1's on stays a string


def test_errors_name_their_file(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  min_size: '800'\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\ntrain:\n  max_iter: 10\n  lr_steps: [5]\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: model\.min_size='800': expected int, got str"):
        load_config(child)
    with pytest.raises(ConfigError, match=r"^override: model\.min_size='800'"):  # the override, not the file
        load_config(write(tmp_path / "ok.yaml", "model:\n  min_size: 320\n"), ["model.min_size='800'"])
    with pytest.raises(ConfigError, match=r"child\.yaml: train\.amp=False: expected one of"):
        load_config(write(tmp_path / "child.yaml", "_base_: ok.yaml\ntrain:\n  amp: false\n"))


def test_dataclasses_stay_plain():
    from retinanet.config import DataConfig, EvalConfig, ModelConfig, TrainConfig

    cfg = load_config(None, ["model.backbone=resnet18"])
    assert type(cfg.model) is ModelConfig and not hasattr(ModelConfig, "__pydantic_fields__")
    assert dataclasses.replace(cfg.train, max_iter=5, lr_steps=(2,)).max_iter == 5
    assert cfg.model.replace(focal_gamma=1.0).focal_gamma == 1.0
    assert ModelConfig(backbone="resnet18") == cfg.model
    # Built in Python, the choices and ranges are still checked.
    with pytest.raises(ValueError, match=r"model\.cls_loss='x': expected one of \['focal', 'ce', 'fl_star', 'ohem'\]"):
        ModelConfig(cls_loss="x")
    with pytest.raises(TypeError, match="unknown model option"):
        ModelConfig().replace(focal_gama=1.0)
    with pytest.raises(ConfigError, match=r"data\.kind='x': expected one of"):
        DataConfig(kind="x")
    with pytest.raises(ConfigError, match=r"train\.amp='on'"):
        TrainConfig(amp="on")
    with pytest.raises(ConfigError, match=r"eval\.batch_size=0"):
        EvalConfig(batch_size=0)


def test_model_config_needs_only_the_standard_library():
    # The components import their Literal choices from it: no validation library comes with them.
    tree = ast.parse((Path(__file__).resolve().parents[1] / "retinanet" / "model" / "config.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in modules} <= set(sys.stdlib_module_names) | {"__future__"}


def test_components_check_the_same_choices():
    from retinanet.model import backbone
    from retinanet.model.anchors import AnchorGenerator
    from retinanet.model.assignment import BoxCoder, Matcher
    from retinanet.model.config import AnchorStyle, Backbone, BoxLoss, ClsLoss, HeadNorm, LossNormalizer, P6Source
    from retinanet.model.criterion import RetinaNetCriterion
    from retinanet.model.fpn import FPN
    from retinanet.model.head import RetinaNetHead

    assert list(backbone._RESNETS) == list(get_args(Backbone))
    criterion = partial(RetinaNetCriterion, Matcher(0.5, 0.4, True), BoxCoder())
    for build, alias in [
        (lambda: backbone.ResNetBackbone("resnet5"), Backbone),
        (lambda: FPN((8, 8, 8), 8, p6_from="c6"), P6Source),
        (lambda: AnchorGenerator(style="detectron"), AnchorStyle),
        (lambda: RetinaNetHead(8, 9, 2, norm="bn"), HeadNorm),
        (lambda: criterion(cls_loss="bce"), ClsLoss),
        (lambda: criterion(box_loss="iou"), BoxLoss),
        (lambda: criterion(normalizer="anchors"), LossNormalizer),
    ]:
        with pytest.raises(ValueError, match=re.escape(str(list(get_args(alias))))):
            build()


def test_steps_beyond_max_iter_warn():
    with pytest.warns(UserWarning, match="never apply"):
        load_config(None, ["train.max_iter=100"])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        None,
        [
            "model.backbone=resnet18",
            "model.focal_alpha=null",
            "train.lr_steps=[6,8]",
            "train.max_iter=10",
            "train.warmup_factor=0.001",
            "model.pretrained_backbone=w.pth",
        ],
    )
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
    assert cfg.data.kind in ("coco", "synth", "csv")
    assert diff_from_defaults(cfg), "a config holds differences"


def test_coco_configs_are_the_papers_recipe():
    for name, backbone in [
        ("retinanet_r50_fpn_1x", "resnet50"),
        ("retinanet_r101_fpn_1x", "resnet101"),
        ("retinanet_x101_32x8d_fpn_1x", "resnext101_32x8d"),
    ]:
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


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.min_size=0", "model.min_size=0: expected >= 1"),
        ("model.size_divisor=0", "model.size_divisor=0: expected >= 1"),
        ("model.fpn_channels=-8", "model.fpn_channels=-8: expected >= 1"),
        ("model.head_convs=-1", "model.head_convs=-1: expected >= 0"),
        ("model.nms_thresh=1.5", "model.nms_thresh=1.5: expected 0..1"),
        ("model.score_thresh=.nan", "model.score_thresh=nan: expected 0..1"),
        ("model.aspect_ratios=[0,1]", "model.aspect_ratios=[0.0, 1.0]: expected positive ratios"),
    ],
)
def test_model_values_that_cannot_work_are_config_errors(override, words):
    # Before, these were accepted and failed deep inside the model (or, NaN, silently kept nothing).
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(None, [override])

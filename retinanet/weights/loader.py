"""The one way from weights to a model: `load_model`.

Every command and API that needs a model holding weights goes through it: `retinanet predict`,
`eval`, `export`, `analyze loss-cdf` and `demo`, the benchmark, the experiment runner, torch.hub
and `get_model`. It reads:

- nothing (`weights=None`): a freshly initialised model of the named variant or config;
- a published name ("torchvision-coco"): torchvision's COCO checkpoint, fetched once into the
  torch hub cache and converted to this library's layout;
- a path or URL of a checkpoint of this library (`{"model", "config", "class_names", ...}`, as
  `retinanet train` writes it), of a bare state dict of this library, or of a torchvision
  RetinaNet state dict (detected from its keys).

The architecture comes from the checkpoint's saved config when it has one, else from the given
config or variant name (the number of classes read from the weights); dotted overrides
("model.score_thresh=0.3") and ModelConfig field overrides (score_thresh=0.3) apply last. Every
file is read with `torch.load(..., weights_only=True)`: loading never executes code.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, ConfigError, apply_overrides, flatten, load_config
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.retinanet import RetinaNet
from ..utils.download import load_url_state_dict, local_file, read_weights_file
from .torchvision import convert_torchvision_state_dict, is_torchvision_state_dict, torchvision_model_config
from .transfer import LoadReport, TransferError, transfer_state
from .zoo import DEFAULT_PUBLISHED, VARIANTS, WEIGHTS, coco_category_names, model_config


class WeightsError(ValueError):
    """Weights that cannot make the requested model; the message names the file and the problem."""


class UnknownNameError(WeightsError, KeyError):
    """An unknown variant or published-weights name (a KeyError too, as for a dict lookup)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class LoadedModel:
    """A model holding its weights, with what is known about them."""

    model: RetinaNet
    # The run's config: the checkpoint's saved one (or the given one, else the defaults), its
    # `model` part the model's own (`model.config`), overrides applied.
    config: Config
    # Name of each label the model predicts (label i -> class_names[i]).
    class_names: list[str]
    # True for torchvision's COCO model, whose labels are COCO category ids (1..90), not 0..K-1.
    labels_are_category_ids: bool = False
    source: str | None = None
    # The dataset's category id of each label (label i -> category_ids[i]), for results files:
    # saved in checkpoints ("label_to_category_id"); label + 1 for weights that carry none.
    category_ids: list[int] = dataclasses.field(default_factory=list)
    # What came from the weights when they were for other classes (fine-tuning's start).
    report: LoadReport | None = None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint of this library (a dict with a "model" state dict), read without executing
    code from it; FileNotFoundError / ValueError naming the file otherwise."""
    ckpt = read_weights_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a retinanet checkpoint (no 'model' entry)")
    return ckpt


def config_from_dict(tree: Mapping[str, Any]) -> Config:
    """The Config saved in a checkpoint (`config_to_dict` output)."""
    with warnings.catch_warnings():  # already warned about when that run was trained
        warnings.simplefilter("ignore")
        return apply_overrides(Config(), flatten(tree))


def infer_num_classes(state: Mapping[str, torch.Tensor], model_cfg: ModelConfig) -> int | None:
    """The number of classes of a state dict of this library (None without a classifier)."""
    w = state.get("head.cls_score.weight")
    if w is None:
        return None
    return int(w.shape[0]) // (len(model_cfg.aspect_ratios) * model_cfg.scales_per_octave)


def class_names_of(ckpt: Mapping[str, Any], cfg: Config, num_classes: int) -> list[str]:
    """The class names saved with a checkpoint; the synthetic dataset's for a model trained on
    it; else class_0, class_1, ..."""
    names = ckpt.get("class_names")
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    if cfg.data.kind == "synth":
        from ..data.synth_presets import class_names

        if len(class_names(cfg.data.synth_preset)) == num_classes:
            return list(class_names(cfg.data.synth_preset))
    return [f"class_{i}" for i in range(num_classes)]


def category_ids_of(ckpt: Mapping[str, Any], num_classes: int, labels_are_ids: bool = False) -> list[int]:
    """The category id of each label: the checkpoint's "label_to_category_id"; the label itself
    for torchvision's COCO model; else label + 1 (COCO ids start at 1)."""
    saved = ckpt.get("label_to_category_id")
    if saved is not None:
        ids = [int(i) for i in saved]
        if len(ids) != num_classes:
            raise WeightsError(f"the checkpoint's label_to_category_id has {len(ids)} ids for {num_classes} classes")
        return ids
    return list(range(num_classes)) if labels_are_ids else [i + 1 for i in range(num_classes)]


def _read(source: str) -> dict:
    """{"model": state dict, ...} from a checkpoint or a bare state dict at `source`."""
    obj = read_weights_file(local_file(source), "checkpoint")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return check_entries(obj, source)
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return {"model": obj}
    raise WeightsError(f"{source}: not a retinanet checkpoint or state dict (found {type(obj).__name__})")


def check_entries(ckpt: dict, source: str = "the checkpoint") -> dict:
    """`ckpt` when its optional entries have their types (a WeightsError naming the entry, not a
    crash later): "config" a mapping, "class_names" a list of strings, "label_to_category_id" a
    list of integers."""
    expected = {
        "config": (lambda v: isinstance(v, Mapping), "a mapping of config sections"),
        "class_names": (
            lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v),
            "a list of names",
        ),
        "label_to_category_id": (
            lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v),
            "a list of integer ids",
        ),
    }
    for key, (ok, what) in expected.items():
        if ckpt.get(key) is not None and not ok(ckpt[key]):
            raise WeightsError(f"{source}: its '{key}' entry is not {what} (found {type(ckpt[key]).__name__})")
    return ckpt


def _published(weights: str, name: str | None) -> str | None:
    """The URL of published weights `weights` for variant `name`; None when `weights` names a
    file; UnknownNameError for a name that is neither."""
    variant = name or DEFAULT_PUBLISHED
    published = WEIGHTS.get(variant, {})
    if weights in published:
        return published[weights]
    is_file_name = "://" in weights or weights.endswith((".pth", ".pt")) or os.path.exists(weights)
    if not is_file_name:
        raise UnknownNameError(
            f"unknown weights {weights!r} for {variant}; published: {sorted(published)}, or a .pth/.pt path"
        )
    return None


def _source(weights, name: str | None, run: Config, config_given: bool) -> tuple:
    """(state dict in this library's layout or None, the model config the weights are for, the
    run config, the checkpoint dict, whether labels are COCO category ids) of `weights`."""
    ckpt: dict = {}
    if weights is None:
        return None, (model_config(name) if name else run.model), run, ckpt, False
    if isinstance(weights, str) and (url := _published(weights, name)) is not None:
        state = load_url_state_dict(url)
        return convert_torchvision_state_dict(state), torchvision_model_config(state), run, ckpt, True
    ckpt = _read(weights) if isinstance(weights, str) else check_entries(dict(weights))
    state = ckpt["model"]
    if is_torchvision_state_dict(state):
        model_cfg = torchvision_model_config(state)
        return convert_torchvision_state_dict(state), model_cfg, run, ckpt, model_cfg.num_classes == 91
    if ckpt.get("config") is not None:
        try:
            saved = config_from_dict(ckpt["config"])
        except ConfigError as e:
            where = weights if isinstance(weights, str) else "the checkpoint"
            raise WeightsError(f"{where}: its saved config is not valid: {e}") from None
        if name is not None and VARIANTS[name]["backbone"] != saved.model.backbone:
            raise WeightsError(
                f"{weights} holds a {saved.model.backbone} model, not {name} ({VARIANTS[name]['backbone']})"
            )
        return state, saved.model, (run if config_given else saved), ckpt, False
    if name is not None or config_given:
        model_cfg = model_config(name) if name else run.model
        n = infer_num_classes(state, model_cfg)
        if n is not None and n != model_cfg.num_classes:
            model_cfg = model_cfg.replace(num_classes=n)
        return state, model_cfg, run, ckpt, False
    raise WeightsError(
        f"{weights if isinstance(weights, str) else 'the checkpoint'} has no saved config: "
        "give a CONFIG (--config) or --model NAME"
    )


def _source_names(ckpt: dict, run: Config, model_cfg: ModelConfig, labels_are_ids: bool) -> list[str] | None:
    """The class names of the weights, None when they carry none (class_0, ... would be made up)."""
    n = model_cfg.num_classes
    if labels_are_ids and n == 91:
        return coco_category_names()
    names = class_names_of(ckpt, run, n)
    return None if names == [f"class_{i}" for i in range(n)] else names


def init_from_weights(model: RetinaNet, model_cfg: ModelConfig, class_names: Sequence[str] | None = None) -> LoadReport:
    """Fine-tuning's start: the tensors of `model_cfg.weights` that fit `model` (built from
    `model_cfg`) loaded into it, the class layer as `model_cfg.weights_class_map` says
    (retinanet/weights/transfer.py). class_names: the model's classes (the training set's)."""
    weights = model_cfg.weights
    run = Config(model=model_cfg.replace(weights=None))
    state, src_cfg, _, ckpt, labels_are_ids = _source(weights, None, run, config_given=True)
    saved = config_from_dict(ckpt["config"]) if ckpt.get("config") is not None else Config(model=src_cfg)
    names = _source_names(ckpt, saved, src_cfg, labels_are_ids)
    return _transfer(model, state, model_cfg, src_cfg, weights, names, class_names)


def _transfer(model, state, model_cfg: ModelConfig, src_cfg: ModelConfig, source: str, source_names, class_names):
    """`transfer_state` with its errors as WeightsError (the loader's one error type)."""
    try:
        return transfer_state(
            model,
            state,
            model_cfg,
            src_cfg,
            source=source,
            source_names=source_names,
            target_names=class_names,
            class_map=model_cfg.weights_class_map,
        )
    except TransferError as e:
        raise WeightsError(str(e)) from None


def load_model(
    weights: str | Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    config: Config | str | os.PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    class_names: Sequence[str] | None = None,
    **model_overrides: Any,
) -> LoadedModel:
    """A model holding `weights` (see the module docstring; also a checkpoint dict already read
    with `load_checkpoint`), in train mode as built.

    name: a named variant (`VARIANTS`), the architecture when the weights carry no config (and
    the variant of published weights; default retinanet_r50_fpn). config: a Config or a YAML
    path, the same when there is no variant name; it is also the run config returned (its model
    part replaced by the checkpoint's). overrides: dotted config overrides; model_overrides:
    ModelConfig fields, applied last.

    Another class count than the weights' (num_classes=3, or `class_names` of another list) is
    fine-tuning's start: the tensors that fit are loaded, the class layer re-initialised or, with
    weights_class_map="names", copied for the classes of the same name (`LoadedModel.report`).
    Without `weights`, a config's model.weights is loaded the same way."""
    if name is not None and name not in VARIANTS:
        raise UnknownNameError(f"unknown model {name!r}; available: {sorted(VARIANTS)}")
    run = Config() if config is None else config if isinstance(config, Config) else load_config(config)
    state, src_cfg, run, ckpt, labels_are_ids = _source(weights, name, run, config is not None)
    run = dataclasses.replace(run, model=src_cfg)
    if overrides:
        run = apply_overrides(run, overrides)
    model_cfg = run.model.replace(**model_overrides)
    if class_names is not None and len(class_names) != model_cfg.num_classes:
        model_cfg = model_cfg.replace(num_classes=len(class_names))
    if state is not None or model_cfg.weights:  # every weight comes from a file: never fetch ImageNet's first
        model_cfg = model_cfg.replace(pretrained_backbone=False)
    run = dataclasses.replace(run, model=model_cfg)
    model = build_model(model_cfg)
    n = model_cfg.num_classes
    src_names = _source_names(ckpt, run, src_cfg, labels_are_ids)
    report = None
    fine_tune = state is not None and (
        n != src_cfg.num_classes or (class_names is not None and list(class_names) != (src_names or []))
    )
    if fine_tune:
        source = str(weights) if isinstance(weights, str) else "the checkpoint"
        report = _transfer(model, state, model_cfg, src_cfg, source, src_names, class_names)
        ckpt, labels_are_ids = {"class_names": list(class_names)} if class_names else {}, False
    elif state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = " ".join(str(e).strip().splitlines()[:3])[:400]
            raise WeightsError(
                f"{weights}: the weights do not fit the model {model_cfg.backbone}/{model_cfg.num_classes} "
                f"classes: {first}"
            ) from None
    elif model_cfg.weights:
        report = init_from_weights(model, model_cfg, class_names)
        ckpt = {"class_names": list(class_names)} if class_names else {}
    names = coco_category_names() if labels_are_ids and n == 91 else class_names_of(ckpt, run, n)
    category_ids = category_ids_of(ckpt, n, labels_are_ids)
    source = weights if isinstance(weights, str) else None
    return LoadedModel(model, run, names, labels_are_ids, source, category_ids, report)


def get_model(name: str, weights: str | None = None, **overrides: Any) -> RetinaNet:
    """Build a named variant, e.g. ``get_model("retinanet_r50_fpn", num_classes=20)``.

    overrides: any ModelConfig field (``pretrained_backbone=True`` loads torchvision's ImageNet
    weights). ``weights="torchvision-coco"`` (R50 only) fetches torchvision's COCO checkpoint
    (36.4 AP, 91 COCO category ids as labels) into the torch hub cache once and converts it;
    the model is then configured like torchvision's (see `from_torchvision`). A path loads a
    checkpoint or state dict (`load_model`).
    """
    return load_model(weights, name=name, **overrides).model


__all__ = [
    "LoadedModel",
    "UnknownNameError",
    "WeightsError",
    "category_ids_of",
    "class_names_of",
    "config_from_dict",
    "get_model",
    "infer_num_classes",
    "load_checkpoint",
    "load_model",
]

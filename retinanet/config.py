"""The run's configuration: a tree of typed dataclasses whose defaults are the paper's (Lin et al.
2017, §4 "Inference" and "Optimization").

    cfg = load_config("configs/coco/retinanet_r50_fpn_1x.yaml", ["train.max_iter=1000", "train.lr_steps=[600,800]"])

- A YAML file holds only the differences from these defaults; it may name one `_base_:` file
  (a path relative to itself) whose differences it extends. One level only: deep chains are the
  known pain of mmdetection-style configs.
- Overrides are dotted `key=value` strings; each value is parsed as YAML (`null`, `[600, 800]`,
  `true`, `1e-4`) and then checked against the field's type: an int is accepted for a float, a
  list for a tuple, null for an Optional, an integral float (9e4) for an int; a bool is not a
  number and a string is never converted to one. Unknown keys and wrong types raise
  `ConfigError` naming the key (with close matches) or the value and the expected type, and
  the file or override they came from. Types are checked once, after all sources are merged, so
  a value that a later source replaces is never checked.
- `save_config` writes the fully resolved tree (beside every checkpoint and result), which
  `load_config` reads back to an equal `Config`.

Type checking is pydantic's (v2): `TypeAdapter(Config)` over these ordinary dataclasses, in
strict mode and on JSON input, the one combination with exactly the rules above. Measured
(pydantic 2.14): lax mode turns True into 1, "800" into 800, and 1 or "yes" into True; strict
mode on Python input refuses a list for a tuple and a mapping for a nested dataclass. Strict
JSON mode misses one rule, an integral float for an int, so integral floats are sent as ints
(a float field takes an int). YAML and override values are JSON values; the rest YAML can
give (a date, bytes) is refused when merged.
OmegaConf's structured configs were measured too (2.4): no strict mode, so "800" becomes 800,
"yes" and 1 become True and 3 becomes "3", and 9e4 is refused for an int. The key checks
(close-match suggestions) and the source of each value stay here: pydantic ignores unknown
fields of a standard dataclass and suggests no names.

Only `build_*` functions read this tree; the components below them take plain arguments, so
each can be built and tested without a config.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

import pydantic
import yaml

from .model.config import ModelConfig, check_choices, literal_choices
from .utils.io import atomic_write

BASE_KEY = "_base_"  # the one include a YAML config may have


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, or a malformed config file / override."""


# ---------------------------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    # "synth": the built-in synthetic dataset (no files needed); "coco": instances JSON + image
    # folder; "voc": VOCdevkit layout; "csv": keras-retinanet style annotations CSV + class map;
    # "yolo": ultralytics layout (data.yaml, images/<split>/, labels/<split>/).
    kind: Literal["coco", "voc", "csv", "yolo", "synth"] = "synth"
    # synth: a named preset of the synthetic dataset (retinanet/data/synth_presets.py, checked when
    # the dataset is built), e.g. "focal" (48 classes, few small objects: a COCO-like class
    # imbalance); None: the default dataset. Other kinds: unused.
    synth_preset: Optional[str] = None
    # The annotations of each split: COCO instances JSON, VOC root (VOC<year> folder), CSV
    # annotations file, or YOLO folder holding data.yaml (or the .yaml file). Unused for synth.
    train_path: Optional[str] = None
    val_path: Optional[str] = None
    # COCO: the folder that `file_name` entries are relative to. CSV: the folder relative image
    # paths resolve against (None: the CSV's own folder). VOC: unused (JPEGImages is implied).
    train_images_dir: Optional[str] = None
    val_images_dir: Optional[str] = None
    # VOC: the ImageSets/Main list of each split; YOLO: the data.yaml key of each split. None: the
    # kind's usual one (VOC trainval / test, YOLO train / val; retinanet/data/build.py DEFAULT_SPLITS).
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    class_map: Optional[str] = None  # CSV: "class_name,id" lines
    on_bad: Literal["error", "skip"] = "error"  # a malformed entry: raise, or skip it with a warning
    # Keep training images without a (non-crowd) box as pure negatives (all anchors background;
    # users ask for this). The paper's Detectron code and torchvision's reference scripts drop
    # them: set false to do the same. Evaluation always keeps every image.
    keep_empty: bool = True
    # Decode every image once before training and evaluation: a truncated or empty file, or one
    # whose size disagrees with its annotation, is found then (an error, or a counted skip with
    # on_bad=skip) instead of by a data-loading worker mid-run.
    verify_images: bool = False
    num_workers: int = 2
    aspect_ratio_grouping: bool = True  # batch landscape with landscape images (Detectron)
    hflip_prob: float = 0.5  # horizontal flip, the paper's only augmentation (§4)
    # More augmentation for small datasets, in order (retinanet/data/augment.py): photometric,
    # vflip, rot90, iou_crop, zoom_out, lsj, each optionally with parameters: "zoom_out(max_scale=3)".
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choices(self, "data", ConfigError)
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ConfigError(f"data.hflip_prob={self.hflip_prob}: expected 0..1")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers}: expected >= 0")


@dataclass
class TrainConfig:
    # The paper's recipe (§4 "Optimization"): SGD, 16 images per iteration over 8 GPUs, 90k iterations,
    # LR 0.01 divided by 10 at 60k and 80k, momentum 0.9, weight decay 1e-4.
    batch_size: int = 16  # images per iteration, all processes together
    base_lr: float = 0.01  # at base_batch_size; linear scaling rule otherwise (see `scaled_lr`)
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 90000
    lr_steps: tuple[int, ...] = (60000, 80000)
    lr_gamma: float = 0.1
    # Linear warmup from warmup_factor * lr over the first iterations (Detectron's RetinaNet
    # settings; not in the paper's text).
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3
    clip_grad_norm: Optional[float] = None  # max global gradient norm; None = off
    # "auto": bf16 autocast on a CUDA device that supports it, float32 elsewhere (the GPU configs'
    # setting); "off" is float32 everywhere.
    amp: Literal["off", "auto", "bf16", "fp16"] = "off"
    checkpoint_period: int = 5000  # iterations; a checkpoint is also written at the end
    eval_period: int = 0  # iterations; 0 = evaluate only at the end
    # Fine-tuning on small data: model_best.pth written (atomically) whenever this metric of an
    # evaluation improves (None = off), and the run stopped after `patience` evaluations in a
    # row without improvement (0 = off; the metric is save_best's, else AP). Both need eval_period.
    save_best: Optional[Literal["AP", "AP50", "AP75", "APs", "APm", "APl"]] = None
    patience: int = 0
    log_period: int = 20
    # non-finite losses in a row before training stops (counted on the device, read at the log period)
    max_nonfinite: int = 10
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    deterministic: bool = False  # torch.use_deterministic_algorithms, at some speed cost

    def __post_init__(self) -> None:
        check_choices(self, "train", ConfigError)
        positive = ("batch_size", "base_batch_size", "max_iter", "log_period", "max_nonfinite")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: expected >= 1")
        for name in ("warmup_iters", "checkpoint_period", "eval_period", "weight_decay", "patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)}: expected >= 0")
        if self.base_lr <= 0:
            raise ConfigError(f"train.base_lr={self.base_lr}: expected > 0")
        if (self.patience or self.save_best) and not self.eval_period:
            what = "train.patience" if self.patience else "train.save_best"
            raise ConfigError(f"{what} needs evaluations during the run: set train.eval_period (iterations)")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum={self.momentum}: expected 0 <= momentum < 1")
        if not 0.0 < self.warmup_factor <= 1.0:
            raise ConfigError(f"train.warmup_factor={self.warmup_factor}: expected 0 < factor <= 1")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"train.clip_grad_norm={self.clip_grad_norm}: expected > 0 or null (off)")
        if list(self.lr_steps) != sorted(set(self.lr_steps)) or any(s < 1 for s in self.lr_steps):
            raise ConfigError(f"train.lr_steps={list(self.lr_steps)}: expected increasing positive iterations")
        if any(s >= self.max_iter for s in self.lr_steps):
            # Detectron2 warns the same way: a shortened run that forgot its steps never decays.
            warnings.warn(
                f"train.lr_steps={list(self.lr_steps)} has steps at or after train.max_iter={self.max_iter}; "
                "they will never apply",
                stacklevel=2,
            )

    @property
    def lr(self) -> float:
        """The learning rate actually used: see `scaled_lr`."""
        return scaled_lr(self)


@dataclass
class EvalConfig:
    batch_size: int = 8  # images per process
    backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval"

    def __post_init__(self) -> None:
        check_choices(self, "eval", ConfigError)
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size={self.batch_size}: expected >= 1")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "outputs"
    seed: int = 0


def scaled_lr(train: TrainConfig) -> float:
    """base_lr * batch_size / base_batch_size: the linear scaling rule (Goyal et al., 2017), so a
    smaller batch keeps the paper's LR per image (0.01 at 16 images -> 0.005 at 8)."""
    return train.base_lr * train.batch_size / train.base_batch_size


# ---------------------------------------------------------------------------------------------
# Keys and types
# ---------------------------------------------------------------------------------------------


@cache
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations of `from __future__ import annotations`.
    return get_type_hints(cls)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


@cache
def _all_keys(cls: type = None, prefix: str = "") -> tuple[str, ...]:
    """Every dotted leaf key of the tree, e.g. "model.focal_gamma"."""
    cls = Config if cls is None else cls
    keys: list[str] = []
    for name in _field_names(cls):
        tp = _hints(cls)[name]
        if is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return tuple(keys)


def _unknown_key(full_key: str, key: str, names: Sequence[str], prefix: str, source: str = "") -> ConfigError:
    leaves = _all_keys()
    suggestions = [prefix + m for m in difflib.get_close_matches(key, names, n=3, cutoff=0.6)]
    suggestions += [k for k in leaves if k.rsplit(".", 1)[-1] == key]  # right name, wrong section
    suggestions += difflib.get_close_matches(full_key, leaves, n=3, cutoff=0.75)
    suggestions = list(dict.fromkeys(s for s in suggestions if s != full_key))
    where = f"{source}: " if source else ""
    msg = f"{where}unknown config key '{full_key}'"
    if suggestions:
        msg += "; did you mean " + " or ".join(f"'{s}'" for s in suggestions[:3]) + "?"
    else:
        msg += f"; known keys{' under ' + repr(prefix.rstrip('.')) if prefix else ''}: {', '.join(names)}"
    return ConfigError(msg)


def _type_name(tp: Any) -> str:
    if is_dataclass(tp):
        return f"a mapping of {tp.__name__} options"
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _wrong_value(key: str, tp: Any, value: Any) -> str:
    """ "{key}={value!r}: expected ..." for a value that does not fit type `tp`."""
    args = get_args(tp)
    fixed_tuple = get_origin(tp) is tuple and Ellipsis not in args
    if fixed_tuple and isinstance(value, (list, tuple)) and len(value) != len(args):
        return f"{key}={value!r}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}"
    if (choices := literal_choices(tp)) is not None:
        return f"{key}={value!r}: expected one of {list(choices)}"
    return f"{key}={value!r}: expected {_type_name(tp)}, got {type(value).__name__}"


def _is_json(value: Any) -> bool:
    """Whether `value` is made of JSON types only (YAML can also give dates, bytes and sets)."""
    if value is None or isinstance(value, (str, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _json_input(value: Any) -> Any:
    """`value` with every integral float an int: strict mode refuses a float for an int, but
    YAML reads 9e4 as a float; a float field takes the int back unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _json_input(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_input(v) for v in value]
    return value


def _not_json(value: Any) -> Any:
    # Only a Config built in Python can hold such a value: `_merge` checks what it merges.
    raise ConfigError(f"{value!r}: a {type(value).__name__} is not a config value (plain YAML types only)")


@cache
def _adapter() -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(Config)


def _error(err: Mapping[str, Any], tree: Mapping[str, Any], sources: Mapping[str, str]) -> ConfigError:
    """A ConfigError from one pydantic error: the dotted key and the value at its location, the
    type declared there, and the file or override the value came from."""
    if err["type"] in ("value_error", "assertion_error"):  # a range check in a __post_init__
        cause = err["ctx"]["error"]
        return cause if isinstance(cause, ConfigError) else ConfigError(str(cause))
    key, field_key, tp, value = "", "", Config, tree
    for part in err["loc"]:
        args = get_args(tp)
        items = get_origin(tp) is tuple and isinstance(value, (list, tuple))
        if is_dataclass(tp) and isinstance(value, Mapping) and part in value:
            key = field_key = f"{key}.{part}" if key else str(part)
            tp, value = _hints(tp)[part], value[part]
        elif items and isinstance(part, int) and part < len(value) and (Ellipsis in args or part < len(args)):
            key, tp, value = f"{key}[{part}]", args[0] if Ellipsis in args else args[part], value[part]
        else:  # a union member's name, or an item a fixed-length tuple lacks: the field is at fault
            break
    msg = _wrong_value(key, tp, value)
    return ConfigError(f"{sources[field_key]}: {msg}" if field_key in sources else msg)


def _validate(tree: Mapping[str, Any], sources: Mapping[str, str]) -> Config:
    """The Config of a nested dict whose keys `_merge` has checked (missing ones: defaults);
    `sources` maps dotted keys to the file or override each value came from."""
    text = json.dumps(_json_input(tree), default=_not_json)
    try:
        return _adapter().validate_json(text, strict=True)
    except pydantic.ValidationError as e:
        raise _error(e.errors()[0], tree, sources) from None


# ---------------------------------------------------------------------------------------------
# Loading, overriding, saving
# ---------------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """safe_load with YAML 1.2's plain scalars where PyYAML's YAML 1.1 surprises: `1e-4` is a
    float (1.1 needs a dot, "1.0e-4", else it is a string), and only true/false are booleans
    (1.1 also reads on/off/yes/no as booleans, so `train.amp=off` would be False)."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_YamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None


def _merge(tree: dict, update: Any, cls: type, prefix: str, source: str, sources: dict[str, str]) -> None:
    """Merge `update` (nested, partial) into `tree` (a nested dict of dataclass `cls`), checking
    every key against the schema and noting in `sources` where each value came from, so that
    errors name it. Values are type-checked afterwards, all at once, by `_validate`."""
    if not isinstance(update, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping of options, got {update!r}")
    names = _field_names(cls)
    hints = _hints(cls)
    for key, value in update.items():
        full_key = f"{prefix}{key}"
        if key not in names:
            raise _unknown_key(full_key, str(key), names, prefix, source)
        tp = hints[key]
        if is_dataclass(tp) and isinstance(value, tp):
            value = config_to_dict(value)
        if is_dataclass(tp) and isinstance(value, Mapping):
            if not isinstance(tree.get(key), dict):
                tree[key] = {}
            _merge(tree[key], value, tp, f"{full_key}.", source, sources)
            continue
        if not _is_json(value):
            raise ConfigError(f"{source}: {_wrong_value(full_key, tp, value)}")
        tree[key] = value
        sources[full_key] = source


def _nest(dotted: str, value: Any) -> dict:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"malformed config key '{dotted}'")
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any]) -> list[tuple[str, Any]]:
    """[(dotted key, value)] from `key=value` strings (values parsed as YAML) or from a mapping of
    dotted keys to Python values (an ablation row)."""
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of key=value strings, got the string {overrides!r}")
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. model.focal_gamma=0)")
        pairs.append((key.strip(), _parse_yaml(text, f"override {item!r}")))
    return pairs


def _read_yaml_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    data = _parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of options, got {type(data).__name__}")
    return data


def _yaml_chain(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """[(source, differences)] of a config file: its `_base_` first (one level), then itself."""
    path = Path(path)
    data = _read_yaml_file(path)
    chain = []
    base = data.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: {BASE_KEY} must be a file name, got {base!r}")
        base_path = path.parent / base
        base_data = _read_yaml_file(base_path)
        if BASE_KEY in base_data:
            raise ConfigError(
                f"{base_path}: a {BASE_KEY} file may not have its own {BASE_KEY} (included from {path}); "
                "keep configs one level deep"
            )
        chain.append((str(base_path), base_data))
    chain.append((str(path), data))
    return chain


def apply_overrides(cfg: Config, overrides: Sequence[str] | Mapping[str, Any]) -> Config:
    """A new Config: `cfg` with dotted overrides applied, e.g. ["model.focal_gamma=0"] or
    {"model.focal_gamma": 0.0, "model.focal_alpha": 0.75} (one row of an ablation table)."""
    tree: dict = config_to_dict(cfg)
    sources: dict[str, str] = {}
    for key, value in parse_overrides(overrides):
        _merge(tree, _nest(key, value), Config, "", "override", sources)
    return _validate(tree, sources)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """The defaults, then the YAML file at `path` (with its `_base_`), then `overrides`."""
    tree: dict = {}
    sources: dict[str, str] = {}
    if path is not None:
        for source, data in _yaml_chain(path):
            _merge(tree, data, Config, "", source, sources)
    for key, value in parse_overrides(overrides):
        _merge(tree, _nest(key, value), Config, "", "override", sources)
    return _validate(tree, sources)


def config_to_dict(cfg: Any) -> Any:
    """A dataclass tree as nested dicts of plain YAML types (tuples become lists)."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (a crash mid-write leaves the old file)."""
    header = "# Resolved retinanet config: retinanet.config.load_config(this file) rebuilds it.\n"
    atomic_write(path, header + config_to_yaml(cfg))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model.focal_gamma": 2.0, ...} from a nested dict."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff_from_defaults(cfg: Config, base: Config | None = None) -> dict[str, Any]:
    """The dotted keys whose values differ from `base` (default: `Config()`), with their values
    as plain YAML types: what a run changed, for logs and result tables."""
    ours = flatten(config_to_dict(cfg))
    theirs = flatten(config_to_dict(Config() if base is None else base))
    return {k: v for k, v in ours.items() if theirs.get(k, object()) != v}


def format_overrides(diff: Mapping[str, Any]) -> list[str]:
    """`key=value` strings (lists without spaces) that `load_config(None, ...)` parses back."""

    def scalar(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()

    def value(v: Any) -> str:
        return "[" + ",".join(value(x) for x in v) + "]" if isinstance(v, (list, tuple)) else scalar(v)

    return [f"{k}={value(v)}" for k, v in diff.items()]


__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "config_to_yaml",
    "diff_from_defaults",
    "flatten",
    "format_overrides",
    "load_config",
    "parse_overrides",
    "save_config",
    "scaled_lr",
]

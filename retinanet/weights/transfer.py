"""Fine-tuning's start: the tensors of other weights that fit a model, copied into it.

A model for K classes starts from weights trained for K' classes (torchvision's COCO model, a
checkpoint of this library): every tensor whose name and shape agree is loaded; the classifier's
output layer (`head.cls_score`, A x K' outputs, anchor-major) is kept as the model initialised it
(σ = 0.01 and the prior bias -log((1-π)/π), §3.3 and §4 "Initialization") when the class count
differs, or, with class_map="names", gets the rows of the source classes of the same name
(e.g. COCO's "person" and "car"). Any other difference in shape is an architecture that the
weights were not trained as: an error naming the tensor, both shapes and the options that differ.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..model.config import ModelConfig

CLASSIFIER = ("head.cls_score.weight", "head.cls_score.bias")
# Options that change the shape or the set of the model's tensors: named in errors.
SHAPE_OPTIONS = ("backbone", "fpn_channels", "p6_from", "head_convs", "head_norm", "aspect_ratios", "scales_per_octave")
# Options that change what the loaded tensors mean without changing a shape: listed in the
# report, since fine-tuning with other values starts from a model working differently.
MEANING_OPTIONS = (
    "norm",
    "anchor_sizes",
    "anchor_offset",
    "anchor_style",
    "box_coder_weights",
    "pixel_mean",
    "pixel_std",
)
# Names that are no class (torchvision's unused COCO ids and its background slot).
NOT_CLASSES = {"n/a", "__background__", "background"}


class TransferError(ValueError):
    """Weights whose tensors do not fit the model apart from its classifier."""


@dataclass
class LoadReport:
    """What `transfer_state` did: which tensors came from the weights and which did not."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    source_classes: int = 0
    target_classes: int = 0
    class_map: str = "index"
    # target class name -> source class name, for the rows copied by name
    classes_from_source: dict[str, str] = field(default_factory=dict)
    # option -> [the model's value, the weights' value] for options that change no shape
    differences: dict[str, list] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"weights {self.source}: {len(self.loaded)} tensors loaded, {len(self.reinitialised)} re-initialised"
            + (f" ({', '.join(self.reinitialised)})" if self.reinitialised else "")
            + f", {len(self.unused)} unused",
        ]
        if self.source_classes != self.target_classes or self.class_map == "names":
            parts.append(f"classes {self.source_classes} -> {self.target_classes}")
        if self.class_map == "names":
            copied = ", ".join(f"{t}<-{s}" for t, s in self.classes_from_source.items()) or "none"
            parts.append(f"classifier rows copied by name: {copied}")
        if self.differences:
            parts.append(
                "options that differ from the weights' (model / weights): "
                + ", ".join(f"{k} {v[0]} / {v[1]}" for k, v in self.differences.items())
            )
        return "; ".join(parts)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, default=list)


def _differing(target: ModelConfig, source: ModelConfig, names: Sequence[str]) -> dict[str, list]:
    out = {}
    for name in names:
        a, b = getattr(target, name), getattr(source, name)
        if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out[name] = [list(a) if isinstance(a, tuple) else a, list(b) if isinstance(b, tuple) else b]
    return out


def _shape_error(source: str, key: str, detail: str, target: ModelConfig, src: ModelConfig) -> TransferError:
    diff = _differing(target, src, SHAPE_OPTIONS)
    hint = (
        "; ".join(f"model.{k} is {v[0]!r} here and {v[1]!r} in the weights" for k, v in diff.items())
        if diff
        else "the weights are of another architecture"
    )
    return TransferError(f"{source}: {key} {detail}: {hint}")


def _norm(name: str) -> str:
    return name.strip().casefold()


def class_rows(source_names: Sequence[str], target_names: Sequence[str]) -> dict[int, int]:
    """target label -> source label for the classes whose names agree (case and surrounding
    spaces ignored; "N/A" and background entries are no class)."""
    index: dict[str, int] = {}
    for i, n in enumerate(source_names):
        if _norm(n) not in NOT_CLASSES:
            index.setdefault(_norm(n), i)
    return {t: index[_norm(n)] for t, n in enumerate(target_names) if _norm(n) in index}


def transfer_state(
    model: nn.Module,
    state: Mapping[str, Tensor],
    target: ModelConfig,
    source_cfg: ModelConfig,
    *,
    source: str = "the weights",
    source_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    class_map: str = "index",
) -> LoadReport:
    """Copy the tensors of `state` (this library's layout, for the architecture `source_cfg`)
    that fit `model` (built from `target`, freshly initialised) into it; see the module
    docstring. TransferError for any other mismatch; the report says what was done."""
    own = model.state_dict()
    anchors = len(target.aspect_ratios) * target.scales_per_octave
    src_anchors = len(source_cfg.aspect_ratios) * source_cfg.scales_per_octave
    k_t, k_s = target.num_classes, source_cfg.num_classes
    report = LoadReport(source, source_classes=k_s, target_classes=k_t, class_map=class_map)
    report.differences = _differing(target, source_cfg, MEANING_OPTIONS)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise _shape_error(
            source, missing[0], f"(and {len(missing) - 1} more) is not in the weights", target, source_cfg
        )
    if anchors != src_anchors:
        raise _shape_error(source, "head.box_pred.weight", "has another number of anchors", target, source_cfg)
    new = {}
    for key, value in state.items():
        if key not in own:
            report.unused.append(key)
            continue
        if key in CLASSIFIER:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            detail = f"has shape {tuple(value.shape)} in the weights but {tuple(own[key].shape)} in the model"
            raise _shape_error(source, key, detail, target, source_cfg)
        new[key] = value
        report.loaded.append(key)

    if class_map == "names":
        if source_names is None or target_names is None:
            raise TransferError(
                f"{source}: model.weights_class_map=names needs the class names of the weights and of the "
                "dataset (the weights carry none: use weights_class_map=index)"
            )
        rows = class_rows(source_names, target_names)
        report.classes_from_source = {target_names[t]: source_names[s] for t, s in rows.items()}
        for key in CLASSIFIER:
            fresh = own[key].clone()
            src = state[key]
            for a in range(anchors):  # output channel a * K + k: anchor-major
                for t, s in rows.items():
                    fresh[a * k_t + t] = src[a * k_s + s]
            new[key] = fresh
            (report.loaded if len(rows) == k_t else report.reinitialised).append(key)
    elif k_t == k_s:
        for key in CLASSIFIER:
            new[key] = state[key]
            report.loaded.append(key)
    else:
        report.reinitialised.extend(CLASSIFIER)  # as the model initialised them (prior bias)
    with torch.no_grad():
        model.load_state_dict({**own, **new}, strict=True)
    return report


__all__ = ["LoadReport", "TransferError", "class_rows", "transfer_state"]

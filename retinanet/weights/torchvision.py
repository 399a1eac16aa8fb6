"""Weight compatibility with torchvision's `retinanet_resnet50_fpn` (v1) and `_v2`.

`from_torchvision(state_dict)` builds our model configured exactly like torchvision's (91 classes,
its anchors, 800/1333 resize padded to 32, 300 detections; v1: P6 from P5, L1 box loss; v2: P6
from C5, GroupNorm head, GIoU loss; per-image loss normalization) and loads the weights:
torchvision's published COCO checkpoints (36.4 and 41.5 AP) become models of this library. The
version is read from the keys (v2's head convs are followed by GroupNorm).
"""

from __future__ import annotations

import re

from torch import Tensor

from ..model.build import build_model
from ..model.config import ModelConfig, torchvision_v1_config, torchvision_v2_config
from ..model.retinanet import RetinaNet

# torchvision key pattern -> ours. Backbone trunk names are shared (conv1, bn1, layer1-4).
_RULES = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"fpn.output.\1."),
    (r"^backbone\.fpn\.extra_blocks\.p6\.", "fpn.p6."),
    (r"^backbone\.fpn\.extra_blocks\.p7\.", "fpn.p7."),
    (r"^head\.classification_head\.conv\.", "head.cls_subnet."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_score."),
    (r"^head\.regression_head\.conv\.", "head.box_subnet."),
    (r"^head\.regression_head\.bbox_reg\.", "head.box_pred."),
]
# torchvision < 0.13 stored the head convs without the Conv2dNormActivation level.
_OLD_HEAD = re.compile(r"^(head\.(?:classification|regression)_head\.conv\.)(\d)\.(weight|bias)$")


def convert_torchvision_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision RetinaNet keys -> this library's keys. Unknown keys are an error."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping; our backbone norm is frozen
        key = _OLD_HEAD.sub(r"\g<1>\2.0.\3", key)
        for pattern, repl in _RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(f"unexpected key in torchvision RetinaNet state dict: {key}")
    # v2's head convs have no bias (GroupNorm follows); ours keep one: zero, the same outputs.
    for key in [k for k in out if re.fullmatch(r"head\.(cls|box)_subnet\.\d+\.0\.weight", k)]:
        bias = key[: -len("weight")] + "bias"
        if bias not in out:
            out[bias] = out[key].new_zeros(out[key].shape[0])
    return out


def torchvision_version(state_dict: dict) -> int:
    """2 for the key layout of `retinanet_resnet50_fpn_v2` (GroupNorm after the head convs), else 1."""
    return 2 if "head.classification_head.conv.0.1.weight" in state_dict else 1


def is_torchvision_state_dict(state_dict: dict) -> bool:
    """True for the key layout of torchvision's RetinaNet ("backbone.body.*", "head.*_head.*")."""
    return any(isinstance(k, str) and k.startswith("backbone.body.") for k in state_dict)


def torchvision_model_config(state_dict: dict[str, Tensor], **overrides) -> ModelConfig:
    """torchvision's `retinanet_resnet50_fpn` (or `_v2`, read from the keys) configuration, the
    number of classes read from the weights (9 anchors per location), with ModelConfig field
    overrides."""
    num_classes = state_dict["head.classification_head.cls_logits.weight"].shape[0] // 9
    make = torchvision_v2_config if torchvision_version(state_dict) == 2 else torchvision_v1_config
    return make(**{"num_classes": num_classes, **overrides})


def from_torchvision(state_dict: dict[str, Tensor], **overrides) -> RetinaNet:
    """A model configured like torchvision's `retinanet_resnet50_fpn` holding `state_dict`.

    overrides: any ModelConfig field, typically score_thresh, nms_thresh, topk_candidates,
    detections_per_img. The number of classes is read from the weights.
    """
    model = build_model(torchvision_model_config(state_dict, **overrides))
    model.load_state_dict(convert_torchvision_state_dict(state_dict), strict=True)
    return model

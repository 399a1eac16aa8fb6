"""RetinaNet and the Focal Loss (Lin et al., "Focal Loss for Dense Object Detection", 2017)."""

import sys as _sys

from .deploy.optimize import optimize_for_inference
from .model import losses
from .model.build import build_model
from .model.config import ModelConfig
from .model.retinanet import RetinaNet
from .weights import VARIANTS, LoadedModel, from_torchvision, get_model, load_model

__all__ = [
    "RetinaNet",
    "ModelConfig",
    "LoadedModel",
    "build_model",
    "get_model",
    "load_model",
    "from_torchvision",
    "optimize_for_inference",
    "VARIANTS",
]
__version__ = "0.1.0"

# `retinanet.losses` is public API (import retinanet.losses, from retinanet.losses import ...):
# the same module object as its home, retinanet.model.losses.
_sys.modules[__name__ + ".losses"] = losses

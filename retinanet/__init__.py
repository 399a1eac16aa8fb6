"""RetinaNet and the Focal Loss (Lin et al., "Focal Loss for Dense Object Detection", 2017)."""

import sys as _sys

from .model import losses
from .weights.torchvision import from_torchvision
from .model.build import build_model
from .model.config import ModelConfig
from .model.retinanet import RetinaNet
from .weights.zoo import VARIANTS, get_model

__all__ = ["RetinaNet", "ModelConfig", "build_model", "get_model", "from_torchvision", "VARIANTS"]
__version__ = "0.1.0"

# `retinanet.losses` is public API (import retinanet.losses, from retinanet.losses import ...):
# the same module object as its home, retinanet.model.losses.
_sys.modules[__name__ + ".losses"] = losses

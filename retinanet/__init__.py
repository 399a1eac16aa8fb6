"""RetinaNet and the Focal Loss (Lin et al., "Focal Loss for Dense Object Detection", 2017)."""

from .convert import from_torchvision
from .model.build import build_model
from .model.config import ModelConfig
from .model.retinanet import RetinaNet
from .zoo import VARIANTS, get_model

__all__ = ["RetinaNet", "ModelConfig", "build_model", "get_model", "from_torchvision", "VARIANTS"]
__version__ = "0.1.0"

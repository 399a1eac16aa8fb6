"""Weights: the named variants and published checkpoints (zoo), torchvision's layout
(torchvision), and the one loader from any of them to a model (loader)."""

from .loader import LoadedModel, UnknownNameError, WeightsError, get_model, load_checkpoint, load_model
from .torchvision import convert_torchvision_state_dict, from_torchvision
from .zoo import TORCHVISION_COCO, VARIANTS, WEIGHTS, model_config

__all__ = [
    "TORCHVISION_COCO",
    "VARIANTS",
    "WEIGHTS",
    "LoadedModel",
    "UnknownNameError",
    "WeightsError",
    "convert_torchvision_state_dict",
    "from_torchvision",
    "get_model",
    "load_checkpoint",
    "load_model",
    "model_config",
]

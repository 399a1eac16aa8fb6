"""Training and evaluation: the training loop (trainer), the evaluation loop (evaluate) with
COCO's metrics (metrics), checkpoints (checkpoint) and torch.distributed's process group
(distributed)."""

from .checkpoint import CheckpointWriteError, ResumeError, atomic_save, load_checkpoint, save_final, save_training_state
from .distributed import init_distributed, is_main, resolve_device, unwrap
from .evaluate import EVAL_EXAMPLES, autocast, evaluate
from .metrics import CocoEvaluator, format_ap_table, format_per_class_table
from .trainer import NonFiniteLossError, lr_factor, train

__all__ = [
    "EVAL_EXAMPLES",
    "CheckpointWriteError",
    "CocoEvaluator",
    "NonFiniteLossError",
    "ResumeError",
    "atomic_save",
    "autocast",
    "evaluate",
    "format_ap_table",
    "format_per_class_table",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "lr_factor",
    "resolve_device",
    "save_final",
    "save_training_state",
    "train",
    "unwrap",
]

"""Constants shared by the sections of `retinanet benchmark`: the sections, the dtypes, the
targets of the issue, and two formatters used by sections and report alike."""

from __future__ import annotations

import torch

SECTIONS = ("ablation", "inference", "train", "focal", "assign", "postprocess", "breakdown", "ap", "loader")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 91  # torchvision's COCO head: 90 category ids + its unused 0
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3-P7 (Lin et al. 2017, §4): the anchors' feature maps

# Targets of the issue, as ratios ours / torchvision (same run).
TARGETS = {
    "inference_fp32": 0.85,  # at 800 px, identical detections
    "inference_fast": 0.45,  # >= 99 % of detections matched, AP within 0.5
    "fast_matched": 0.99,
    "ap_delta": 0.5,
    "train_fp32": 0.85,
    "train_lowp": 0.55,
    "focal": 0.15,
    "assign": 0.30,
    "postprocess": 0.50,
}
MATCH_IOU = 0.9
DEFAULT_AP_WEIGHTS = "outputs/synth/retinanet_r18_synth/model_final.pth"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")

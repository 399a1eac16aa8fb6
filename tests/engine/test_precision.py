"""train.amp=auto: bf16 where the GPU has it, float32 elsewhere; the GPU configs use it."""

import torch

from retinanet.config import load_config
from retinanet.engine.evaluate import autocast, resolve_amp


def test_auto_is_bf16_on_a_cuda_device_with_bf16_and_fp32_elsewhere(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp("auto", cpu) == "off"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", cuda) == "bf16"
    assert resolve_amp("auto", cpu) == "off"  # the CPU emulates bf16: slower, never automatic
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", cuda) == "off"
    for explicit in ("off", "bf16", "fp16"):
        assert resolve_amp(explicit, cuda) == explicit


def test_auto_on_the_cpu_computes_in_float32():
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast("auto", torch.device("cpu")):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16


def test_the_gpu_configs_train_with_auto_precision_and_the_cpu_ones_in_float32():
    for path in (
        "configs/coco/retinanet_r50_fpn_1x.yaml",
        "configs/coco/retinanet_r101_fpn_1x.yaml",
        "configs/finetune/retinanet_r50_fpn_coco.yaml",
    ):
        assert load_config(path).train.amp == "auto", path
    assert load_config("configs/synth/retinanet_r18_synth.yaml").train.amp == "off"

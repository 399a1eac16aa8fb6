"""The models and inputs of `retinanet benchmark`: torchvision's R50-FPN RetinaNet with weights
made to behave like a trained detector, ours holding the same weights, random images and boxes,
and the inference call and training step that the sections time."""

from __future__ import annotations

import contextlib
import math

import torch
import torchvision
from torch import Tensor, nn

from ...deploy import optimize as fast
from ...engine.optim import SkippableSGD
from ...engine.trainer import all_finite
from ...model.backbone import freeze_batchnorm
from ...weights.torchvision import from_torchvision
from .common import NUM_CLASSES


def torchvision_model(seed: int = 0, size: int = 800) -> nn.Module:
    """torchvision's retinanet_resnet50_fpn with random weights made to behave like a trained
    model at inference: FrozenBatchNorm2d with non-trivial statistics (as its published model),
    stem + layer1 frozen (its trainable_backbone_layers=3), class logits of about N(-3, 1) from
    128 to 800 px (every level fills its 1000 candidates above the 0.05 score threshold, NMS has
    work, the best scores stay unsaturated, ~0.6-0.9) and box deltas of std ~0.2 (sane boxes).

    Why not the parity tests' recipe (cls bias ~N(-1, 1), box weights x3): it is made for
    bit-identical paths. Its 300 best scores of a 128-px image are all above 0.9996, ties in
    fp32, and its box deltas (std ~6-9) make most boxes degenerate (zero area after clipping:
    IoU 0/0 with everything, so NMS keeps them in arbitrary numbers). Two paths that differ by
    float rounding (BN folding, another conv algorithm) then disagree through tie-breaking and
    NaN IoUs, not through their numerics: measured 58 % of detections matched at 512 px, against
    100 % (boxes within 4e-4 px) with this recipe."""
    torch.manual_seed(seed)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=size, max_size=size
    )
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        head = tv.head.classification_head.cls_logits
        head.weight.mul_(0.25)  # the feature term: std ~2-3.5 -> ~0.5-0.9 (measured, 128-512 px)
        head.bias.copy_(torch.randn_like(head.bias) * 0.5 - 3)
        tv.head.regression_head.bbox_reg.weight.mul_(0.08)  # deltas: std ~6-9 -> ~0.15-0.3 (measured)
    tv = freeze_batchnorm(tv)
    for name, p in tv.backbone.body.named_parameters():
        if name.startswith(("conv1.", "bn1.", "layer1.")):
            p.requires_grad_(False)
    return tv


def set_input_size(model: nn.Module, size: int) -> None:
    """Square `size` inputs go through both models unresized (scale 1)."""
    if hasattr(model, "transform"):  # torchvision
        model.transform.min_size = (size,)
        model.transform.max_size = size
    else:
        model.min_size = model.max_size = size


def random_images(n: int, size: int, device: torch.device, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g).to(device) for _ in range(n)]


def random_targets(
    n: int, boxes: int, size: int, device: torch.device, seed: int, num_classes: int = NUM_CLASSES
) -> list[dict]:
    """`boxes` boxes per image, sides log-uniform in [16, size/2], inside the image; labels in
    1..num_classes-1 (torchvision's COCO ids)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        wh = torch.exp(torch.empty(boxes, 2).uniform_(math.log(16), math.log(size / 2), generator=g))
        xy = torch.rand(boxes, 2, generator=g) * (size - wh)
        out.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).to(device),
                "labels": torch.randint(1, num_classes, (boxes,), generator=g).to(device),
            }
        )
    return out


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def infer(model: nn.Module, images: list[Tensor]) -> list[dict]:
    return model(images)


def training_setup(
    kind: str, options: dict | None, state: dict, size: int, device: torch.device, dtype: torch.dtype | None
):
    """A fresh training-mode model holding `state` (a torchvision state dict), optimized with
    fast.optimize_for_training(**options) unless options is None, its SGD optimizer and (fp16
    only) a GradScaler. Ours steps as `retinanet train` does: `SkippableSGD`, the update
    selected by the loss's finiteness on the device (engine/optim.py); torchvision's with
    torch's SGD (the same arithmetic)."""
    if kind == "torchvision":
        model = torchvision_model(0, size)
        model.load_state_dict(state)
    else:
        model = from_torchvision(state, min_size=size, max_size=size)
    model = model.to(device).train()
    if options is not None:
        fast.optimize_for_training(model, **options)
    params = [p for p in model.parameters() if p.requires_grad]
    # A small LR: the step is real (momentum, weight decay) but the weights stay where they are,
    # so every timed step does the same work.
    sgd = SkippableSGD if kind == "ours" and dtype != torch.float16 else torch.optim.SGD
    opt = sgd(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return model, opt, scaler


def train_step(model, opt, images, targets, device, dtype, scaler):
    """zero_grad, forward (autocast for low precision), backward, SGD step. Returns the losses
    as tensors (no .item(): no host-device synchronisation)."""
    opt.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        out = model(images, targets)
        loss = sum(out.values())
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    elif isinstance(opt, SkippableSGD):  # the engine's step: no host read of the loss
        ok = all_finite(loss, 1)
        loss.backward()
        opt.step_if(ok)
    else:
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in out.items()}

"""The RetinaNet detector: one module from raw images to losses or detections."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .assignment import BoxCoder
from .backbone import ResNetBackbone
from .criterion import RetinaNetCriterion
from .fpn import FPN
from .head import RetinaNetHead
from .postprocess import postprocess_detections
from .preprocess import resize_geometry


class RetinaNet(nn.Module):
    """RetinaNet (Lin et al. 2017, §4): backbone + FPN (P3-P7) + shared class and box subnets.

    The model contract:

    - ``model.train(); losses = model(images, targets)``: images a list of B tensors (3, H_i, W_i),
      float in [0, 1] (uint8 is accepted and divided by 255), or a (B, 3, H, W) tensor; targets
      a list of B dicts {"boxes": (n_i, 4) float xyxy in input-image pixels, "labels": (n_i,)
      int64 in [0, num_classes)}, n_i may be 0. Returns {"cls": scalar, "box": scalar}, each
      normalized by the number of foreground anchors (see RetinaNetCriterion).
    - ``model.eval(); detections = model(images)``: a list of B dicts {"boxes": (D, 4) xyxy in
      input-image pixels, "scores": (D,), "labels": (D,) int64}, D <= detections_per_img.

    Preprocessing happens inside: each image is resized so that its shorter side is `min_size`
    (or one of `train_min_sizes`, drawn per image, in training) unless the longer side would
    exceed `max_size`, normalized with `pixel_mean`/`pixel_std`, and the batch zero-padded to
    a multiple of `size_divisor`.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        fpn: FPN,
        head: RetinaNetHead,
        anchor_generator: AnchorGenerator,
        criterion: RetinaNetCriterion,
        box_coder: BoxCoder,
        *,
        min_size: int = 800,
        max_size: int = 1333,
        train_min_sizes: tuple[int, ...] = (),
        size_divisor: int = 128,
        pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.anchor_generator = anchor_generator
        self.criterion = criterion
        self.box_coder = box_coder
        self.min_size = min_size
        self.max_size = max_size
        self.train_min_sizes = tuple(train_min_sizes)
        self.size_divisor = size_divisor
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    # ---------------------------------------------------------------- preprocessing
    def preprocess(self, images: list[Tensor] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> padded batch (B, 3, Hp, Wp), resized sizes (B, 2) and original sizes (B, 2), (h, w)."""
        batch, sizes, orig = self._resize_batch(images)
        return batch, torch.tensor(sizes, device=batch.device), torch.tensor(orig, device=batch.device)

    def _resize_batch(self, images: list[Tensor] | Tensor) -> tuple[Tensor, list, list]:
        """`preprocess` with the sizes as Python (h, w) pairs: training needs no tensor of them,
        and making one from Python values would be a host-to-device copy on every step."""
        if isinstance(images, Tensor) and images.dim() == 3:
            raise ValueError(
                "images: expected a list of (3, H, W) tensors or a (B, 3, H, W) tensor, got one (3, H, W) tensor"
            )
        device = self.pixel_mean.device
        resized, sizes, padded, orig = [], [], [], []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected shape (3, H, W), got {tuple(img.shape)}")
            img = img.to(device)
            img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
            h, w = img.shape[-2:]
            min_size = self.min_size
            if self.training and self.train_min_sizes:  # scale jitter (Table 2), torch's RNG for reproducible runs
                min_size = self.train_min_sizes[int(torch.randint(len(self.train_min_sizes), ()))]
            _, size, pad = resize_geometry(h, w, min_size, self.max_size, self.size_divisor)
            # Normalize, then resize as torchvision's detection transform does (the same order and
            # ops; its recompute_scale_factor=True call resizes to this size), so converted weights
            # see the same input.
            img = (img - self.pixel_mean) / self.pixel_std
            img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
            resized.append(img)
            sizes.append(size)
            padded.append(pad)
            orig.append((h, w))
        # a multiple of size_divisor that holds every image: the largest padded size
        hp, wp = max(p[0] for p in padded), max(p[1] for p in padded)
        batch = resized[0].new_zeros((len(resized), 3, hp, wp))
        for b, img in zip(batch, resized):
            b[:, : img.shape[1], : img.shape[2]].copy_(img)
        return batch, sizes, orig

    # ---------------------------------------------------------------- forward
    def forward(self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("training mode needs targets: model(images, targets); call model.eval() to predict")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        batch, sizes, orig = self._resize_batch(images)
        feats = self.fpn(self.backbone(batch))
        cls_logits, box_deltas = self.head(feats)
        shapes = [tuple(f.shape[-2:]) for f in feats]
        anchors, per_level = self.anchor_generator(shapes, tuple(batch.shape[-2:]), batch.device)
        if self.training:
            return self.criterion(cls_logits, box_deltas, anchors, self._scale_targets(targets, sizes, orig))
        sizes = torch.tensor(sizes, device=batch.device)
        orig = torch.tensor(orig, device=batch.device)
        dets = postprocess_detections(
            cls_logits,
            box_deltas,
            anchors,
            per_level,
            sizes,
            self.box_coder,
            self.score_thresh,
            self.topk_candidates,
            self.nms_thresh,
            self.detections_per_img,
        )
        for d, r in zip(dets, orig.float() / sizes.float()):
            d["boxes"] = d["boxes"] * r[[1, 0, 1, 0]]
        return dets

    def _scale_targets(self, targets: list[dict[str, Tensor]], sizes: list, orig: list) -> list[dict[str, Tensor]]:
        """Targets in the network input's pixels: boxes times the (h, w) ratios of each resized
        size to its original size, float32 like torchvision, as Python scalars (no tensor made
        from Python values on every step).

        Checked with device-side asserts, so that a training step never waits for the device: a
        degenerate box or a label outside [0, num_classes) raises at once on the CPU, and is a
        device-side assert on an accelerator. The datasets check every box, naming the file."""
        out = []
        for i, (t, (h, w), (h0, w0)) in enumerate(zip(targets, sizes, orig)):
            device = self.pixel_mean.device
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
            labels = torch.as_tensor(t["labels"], dtype=torch.int64, device=device).reshape(-1)
            if boxes.shape[0] != labels.shape[0]:
                raise ValueError(f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
            ok = torch.isfinite(boxes).all() & (boxes[:, 2] > boxes[:, 0]).all() & (boxes[:, 3] > boxes[:, 1]).all()
            torch._assert_async(ok, f"target {i}: a box is degenerate (needs finite x1 < x2, y1 < y2)")
            in_range = ((labels >= 0) & (labels < self.num_classes)).all()
            torch._assert_async(in_range, f"target {i}: labels must be in [0, {self.num_classes})")
            rh = float(np.float32(h) / np.float32(h0))  # float32 division, as torchvision's ratios
            rw = float(np.float32(w) / np.float32(w0))
            scaled = torch.stack((boxes[:, 0] * rw, boxes[:, 1] * rh, boxes[:, 2] * rw, boxes[:, 3] * rh), dim=1)
            out.append({"boxes": scaled, "labels": labels})
        return out

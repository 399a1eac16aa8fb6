"""Deployment: a wrapper that turns a RetinaNet into one graph from an image batch to detections,
and its export to ONNX and TorchScript.

    wrapper = ExportableRetinaNet(model).eval()
    boxes, scores, labels, num_detections = wrapper(images)   # images (B, 3, H, W) float in [0, 1]
    export_onnx(model, "retinanet.onnx"); export_torchscript(model, "retinanet.pt")

Everything the eager model does at inference (Lin et al. 2017, §4 "Inference") is inside the
graph, built from standard ONNX operators only (Resize, Pad, Conv, TopK, NonZero,
NonMaxSuppression, CumSum, ScatterND, ...), with the batch size and the image size dynamic:

1. preprocessing as `RetinaNet.preprocess`: ImageNet normalisation, resize so that the shorter
   side is `min_size` unless the longer would exceed `max_size`, zero padding to a multiple of
   `size_divisor`; the sizes by the model's own `resize_geometry`, on the input's shape as
   tensors (float64, as the eager model computes them in Python, so the two agree on every size);
2. backbone, FPN, head, and the anchors of each level from the feature-map shapes by the model's
   `AnchorGenerator.grid`;
3. per level the top `topk_candidates` (anchor, class) pairs above `score_thresh`, decoded and
   clipped to the image (`clip_boxes`, as the eager post-processing);
4. class-wise NMS for the whole batch in ONE NonMaxSuppression: each (image, class) group is
   shifted to its own tile of a 2-D grid, (g mod G)·(W + 1) in x and (g div G)·(H + 1) in y with
   G = ceil(sqrt(B·K)), so that boxes of different groups never overlap. A 2-D grid instead of
   torchvision's 1-D offsets keeps the shifted coordinates √(B·K) times smaller, hence the
   float32 IoUs closer to the unshifted ones (at 1333 px, 91 classes, batch 2: coordinates up
   to ~19k, spacing 0.002 px, against 2.4e5 and 0.016 px);
5. the `detections_per_img` best survivors of each image scattered into fixed-size outputs.

Outputs (D = the model's `detections_per_img`):
    boxes          (B, D, 4) float32 xyxy in the input image's pixels
    scores         (B, D)    float32, decreasing within each image
    labels         (B, D)    int64 class index; -1 marks padding
    num_detections (B,)      int64: the first num_detections[b] rows of image b are detections,
                             the rest padding (boxes 0, scores 0, labels -1)
The images of a batch share one size (a tensor); pad or resize them beforehand otherwise.

The wrapper holds the model and reads its settings; it changes nothing in it, so deployment
concerns stay out of the core model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..model.postprocess import clip_boxes
from ..model.preprocess import resize_geometry
from ..model.retinanet import RetinaNet

OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
DEFAULT_OPSET = 17


def _tracing() -> bool:
    return torch.jit.is_tracing()


def _as_tensor(v, dtype: torch.dtype) -> Tensor:
    """A shape value (a Python int eagerly, a 0-dim tensor while tracing) as a 0-dim tensor, so
    that arithmetic on it is recorded in the graph instead of baked in as a constant."""
    return v.to(dtype) if isinstance(v, Tensor) else torch.tensor(v, dtype=dtype)


def _as_size(v):
    """A 0-dim integer tensor as what size arguments take: itself while tracing (the graph keeps
    it dynamic), a Python int in eager mode."""
    return v if _tracing() else int(v)


class ExportableRetinaNet(nn.Module):
    """images (B, 3, H, W) float32 in [0, 1] -> (boxes, scores, labels, num_detections), see the
    module docstring. `score_thresh`, `detections_per_img` default to the model's."""

    def __init__(self, model: RetinaNet, score_thresh: float | None = None, detections_per_img: int | None = None):
        super().__init__()
        self.model = model
        # copies of the cell anchors as buffers, so that they follow the wrapper's device
        for i, cell in enumerate(model.anchor_generator.cell):
            self.register_buffer(f"cell_{i}", cell.clone(), persistent=False)
        self.num_levels = len(model.anchor_generator.cell)
        self.min_size, self.max_size, self.size_divisor = model.min_size, model.max_size, model.size_divisor
        self.score_thresh = float(model.score_thresh if score_thresh is None else score_thresh)
        self.topk_candidates = int(model.topk_candidates)
        self.nms_thresh = float(model.nms_thresh)
        self.detections_per_img = int(model.detections_per_img if detections_per_img is None else detections_per_img)
        self.num_classes = model.num_classes

    # ---------------------------------------------------------------- preprocessing
    def preprocess(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> padded normalised batch, resized (h, w) int64 and original (h, w) int64."""
        m = self.model
        shape = torch._shape_as_tensor(images)  # traced as Shape: the image size stays dynamic
        orig_hw = shape[2:]
        # the eager model's geometry, on 0-dim tensors (float64 scale, as Python computes it)
        _, (h, w), (hp, wp) = resize_geometry(orig_hw[0], orig_hw[1], self.min_size, self.max_size, self.size_divisor)
        x = (images.float() - m.pixel_mean) / m.pixel_std
        x = F.interpolate(x, size=(_as_size(h), _as_size(w)), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, _as_size(wp - w), 0, _as_size(hp - h)))
        return x, torch.stack((h, w)), orig_hw

    # ---------------------------------------------------------------- anchors
    def anchors(self, feats: list[Tensor], padded: Tensor) -> tuple[Tensor, list]:
        """All levels' anchors (N, 4) from the feature shapes, by the model's AnchorGenerator
        (its grid, uncached: under tracing the shapes are tensors, so the graph computes the
        anchors for the input's size); and the count per level."""
        cells = [getattr(self, f"cell_{i}") for i in range(self.num_levels)]
        shapes = [(f.shape[-2], f.shape[-1]) for f in feats]
        levels = self.model.anchor_generator.grid(shapes, (padded.shape[-2], padded.shape[-1]), cells)
        return torch.cat(levels), [level.shape[0] for level in levels]

    # ---------------------------------------------------------------- forward
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        K, D = self.num_classes, self.detections_per_img
        batch, new_hw, orig_hw = self.preprocess(images)
        feats = m.fpn(m.backbone(batch))
        B = images.shape[0]
        anchors, counts = self.anchors(feats, batch)

        # Per level: the head (a call per level is the same computation as one over the list),
        # then top-k on logits; the sigmoid is monotonic, so only the survivors need it.
        scores, anchor_idx, labels, deltas = [], [], [], []
        start = 0
        for f, n in zip(feats, counts):
            cls, box = m.head([f])  # (B, n, K), (B, n, 4)
            logits = cls.reshape(B, -1)
            k = torch.clamp(_as_tensor(n * K, torch.int64), max=self.topk_candidates)
            top, idx = logits.topk(_as_size(k), dim=1)
            scores.append(top.float().sigmoid())
            anchor_idx.append(torch.div(idx, K, rounding_mode="floor") + start)
            labels.append(torch.remainder(idx, K))
            deltas.append(box)
            start = start + n
        scores, anchor_idx, labels = torch.cat(scores, 1), torch.cat(anchor_idx, 1), torch.cat(labels, 1)
        deltas = torch.cat(deltas, 1).reshape(-1, 4)
        num_anchors = anchors.shape[0]
        num_cand = scores.shape[1]

        # Candidates above the threshold, flattened over (image, candidate).
        flat = (scores.reshape(-1) > self.score_thresh).nonzero().reshape(-1)
        img = torch.div(flat, num_cand, rounding_mode="floor")
        a = anchor_idx.reshape(-1)[flat]
        s = scores.reshape(-1)[flat]
        lab = labels.reshape(-1)[flat]
        boxes = m.box_coder.decode(deltas[img * num_anchors + a].float(), anchors[a])
        hf, wf = new_hw[0].to(torch.float32), new_hw[1].to(torch.float32)
        boxes = clip_boxes(boxes, hf, wf)

        # Class-wise NMS of the whole batch at once: group g = image·K + class, each group
        # shifted to its own tile (see the module docstring); boxes lie within [0, W] x [0, H].
        group = img * K + lab
        n_groups = _as_tensor(B, torch.int64) * K
        grid = torch.ceil(torch.sqrt(n_groups.to(torch.float32))).to(torch.int64)
        gx = torch.remainder(group, grid).to(torch.float32) * (wf + 1)
        gy = torch.div(group, grid, rounding_mode="floor").to(torch.float32) * (hf + 1)
        shifted = boxes + torch.stack((gx, gy, gx, gy), dim=1)
        keep = torchvision.ops.nms(shifted, s, self.nms_thresh)  # by decreasing score

        # The first D survivors of each image: NMS returns them by decreasing score, so a
        # detection's rank in its image is the running count of its image's detections.
        kimg = img[keep]
        onehot = (kimg[:, None] == torch.arange(B, device=kimg.device)[None, :]).to(torch.int64)  # (M, B)
        rank = (onehot.cumsum(0) * onehot).sum(1) - 1
        sel = rank < D
        keep, slot = keep[sel], kimg[sel] * D + rank[sel]
        out_boxes = boxes.new_zeros((B * D, 4)).index_put((slot,), boxes[keep])
        out_scores = s.new_zeros((B * D,)).index_put((slot,), s[keep])
        out_labels = torch.full_like(out_scores, -1, dtype=torch.int64).index_put((slot,), lab[keep])
        num_detections = (onehot * sel[:, None].to(torch.int64)).sum(0)

        # Back to input-image pixels: float32 (original / resized) ratios, as the eager model.
        ratio = orig_hw.to(torch.float32) / new_hw.to(torch.float32)  # shapes live on the CPU
        out_boxes = out_boxes * torch.stack((ratio[1], ratio[0], ratio[1], ratio[0])).to(out_boxes.device)
        return out_boxes.reshape(B, D, 4), out_scores.reshape(B, D), out_labels.reshape(B, D), num_detections


def unpad_detections(boxes: Tensor, scores: Tensor, labels: Tensor, num_detections: Tensor) -> list[dict[str, Tensor]]:
    """The wrapper's padded outputs (tensors or numpy arrays) as the eager model's per-image
    dicts {"boxes", "scores", "labels"}."""
    out = []
    for b, s, lab, n in zip(boxes, scores, labels, num_detections):
        n = int(n)
        out.append(
            {"boxes": torch.as_tensor(b[:n]), "scores": torch.as_tensor(s[:n]), "labels": torch.as_tensor(lab[:n])}
        )
    return out


def example_input(
    model: RetinaNet, batch: int = 1, height: int | None = None, width: int | None = None, seed: int = 0
) -> Tensor:
    """A batch of smooth random images (bilinearly upsampled 16x coarser noise), by default
    3/4 of the model's `min_size` high and `min_size` wide, so that the graph's resize is
    exercised. Smooth, because resizing pixel noise magnifies the runtimes' last-bit differences
    in the sampling positions (onnxruntime divides by output/input, torch multiplies by
    input/output) into visible pixel differences; natural images behave like smooth ones."""
    height = height or max(32, round(model.min_size * 3 / 4))
    width = width or model.min_size
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 16 + 2, width // 16 + 2, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).clamp_(0, 1)


def export_onnx(
    model: RetinaNet,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    score_thresh: float | None = None,
    detections_per_img: int | None = None,
    example: Tensor | None = None,
) -> Path:
    """Write `model` (with preprocessing, decoding and NMS) as an ONNX file with dynamic batch,
    height and width. Input "images" (B, 3, H, W) float32 in [0, 1]; outputs OUTPUT_NAMES.
    The model is moved to the CPU and put in eval mode. `example` is the tracing input (default
    `example_input`); any size works, since every shape stays symbolic.

    Uses torch.onnx's TorchScript-based exporter (`dynamo=False`): it needs nothing beyond
    torch, and torchvision registers the NonMaxSuppression translation of its `nms` for it.
    """
    path, wrapper, example = _prepare(model, path, score_thresh, detections_per_img, example)
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on shape arithmetic and the exporter's deprecation notice: the
        # shapes are deliberately traced as tensors (see _as_tensor), and the legacy exporter
        # is the one that needs no extra package
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}},
        )
    return path


def _prepare(model: RetinaNet, path, score_thresh, detections_per_img, example):
    """(path with its folder made, the eval-mode CPU wrapper, the tracing input) of an export."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableRetinaNet(model.cpu().eval(), score_thresh, detections_per_img).eval()
    return path, wrapper, example_input(model) if example is None else example


def export_torchscript(
    model: RetinaNet,
    path: str | Path,
    score_thresh: float | None = None,
    detections_per_img: int | None = None,
    example: Tensor | None = None,
) -> Path:
    """Write `model` as a traced TorchScript module (same inputs and outputs as the ONNX graph;
    the model is moved to the CPU and put in eval mode). Load it with `torch.jit.load(path)`
    after `import torchvision` (which provides the nms op)."""
    path, wrapper, example = _prepare(model, path, score_thresh, detections_per_img, example)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    traced.save(str(path))
    return path


def onnx_session(path: str | Path):
    """An onnxruntime CPU session of an exported file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: Tensor) -> list[dict[str, Tensor]]:
    """Per-image detections of an onnxruntime session on an image batch (B, 3, H, W)."""
    outputs = session.run(list(OUTPUT_NAMES), {"images": images.float().cpu().numpy()})
    return unpad_detections(*[torch.from_numpy(o) for o in outputs])


def compare_detections(expected: list[dict[str, Tensor]], got: list[dict[str, Tensor]]) -> dict:
    """How far `got` is from `expected` (per image lists of detections): {"detections",
    "same_counts", "same_labels", "max_box_diff", "max_score_diff"}; the diffs over the images
    whose counts agree."""
    same_counts = len(expected) == len(got) and all(len(e["scores"]) == len(g["scores"]) for e, g in zip(expected, got))
    box = score = 0.0
    same_labels = same_counts
    for e, g in zip(expected, got):
        if len(e["scores"]) != len(g["scores"]) or not len(e["scores"]):
            continue
        box = max(box, float((e["boxes"].float() - g["boxes"].float()).abs().max()))
        score = max(score, float((e["scores"].float() - g["scores"].float()).abs().max()))
        same_labels &= bool(torch.equal(e["labels"].long(), g["labels"].long()))
    return {
        "detections": int(sum(len(e["scores"]) for e in expected)),
        "same_counts": same_counts,
        "same_labels": same_labels,
        "max_box_diff": box,
        "max_score_diff": score,
    }


@torch.no_grad()
def verify_onnx(
    model: RetinaNet,
    path: str | Path,
    images: Tensor,
    score_thresh: float | None = None,
    detections_per_img: int | None = None,
) -> dict:
    """Run the exported file with onnxruntime and the eager model on `images` (B, 3, H, W);
    returns `compare_detections` of the two."""
    model = model.cpu().eval()
    saved = model.score_thresh, model.detections_per_img
    try:
        if score_thresh is not None:
            model.score_thresh = score_thresh
        if detections_per_img is not None:
            model.detections_per_img = detections_per_img
        eager = model(list(images))
    finally:
        model.score_thresh, model.detections_per_img = saved
    return compare_detections(eager, run_onnx(onnx_session(path), images))


__all__ = [
    "ExportableRetinaNet",
    "OUTPUT_NAMES",
    "compare_detections",
    "example_input",
    "export_onnx",
    "export_torchscript",
    "onnx_session",
    "run_onnx",
    "unpad_detections",
    "verify_onnx",
]

"""Tiled prediction: a large image cut into overlapping tiles, each tile through the model at its
native scale, the detections mapped to image pixels and merged into one set. The core of
`retinanet predict --tile` (files: retinanet/inference/tiling.py) and `retinanet eval --tile`
(engine/evaluate.py).

Native scale. The model resizes every input: shorter side to model.min_size, longer side at most
model.max_size (retinanet/model/preprocess.py). A tile must not be resized, or the small objects
it was cut for lose (or gain) pixels and tiling changes nothing but the cost. All tiles of an
image have the same size h x w (the grid of retinanet/data/tile.py), so for the tiles' forward
passes the model's min_size / max_size are set to min(h, w) / max(h, w) (`native_scale`): the
scale is then exactly 1, the resize the identity (bilinear at scale 1 copies the pixels), and
the sizes are restored afterwards. The model should have been trained at that scale too: on
`retinanet data tile` output with model.min_size = model.max_size = the tile size.

Memory is bounded by the tiles, not the image: the image stays uint8 (numpy (H, W, 3), a PIL
image) and each chunk of `batch_size` tiles becomes tensors only when it is run (uint8 views of
the array; the model makes them float). A tensor image (evaluation's float (3, H, W)) is cut into
views. The optional full-image pass first shrinks a uint8 image by an integer factor, strip by
strip, so that no full-size copy is made either.

Objects on tile borders. A detection of a tile is *cut* when its box comes within `margin`
pixels (default 2 % of the tile, at least 1) of an inner edge of its tile (an edge that is not
the image border): the object may go on beyond the tile. Every other detection is *whole*. With
an overlap of o pixels, any object up to o - 2 · margin pixels across lies, with a margin to
spare, inside some tile, so that tile reports it whole. Then:

1. a cut detection is dropped when a whole detection of the same class, from a tile that
   overlaps its own (or the full-image pass), matches it where both tiles see the image: both
   boxes clipped to the intersection of the two tiles have IoU >= iou_threshold (the partial box
   of an object is the whole box as the partial tile sees it);
2. the remaining cut detections are objects larger than the overlap, cut in every tile that
   sees them (or missed where they were whole). Two of them are pieces of one object when they
   have the same class, come from overlapping tiles, are cut at the sides that face each other
   (a's side inside b's window, b's inside a's), match as in 1 and are each other's best such
   match. Connected pieces become one detection, the union of their boxes with the best score,
   provided each piece is that union as its tile sees it (IoU >= iou_threshold with the union
   clipped to its tile); otherwise (noise chained along a seam) the pieces stay as they are, as
   does a piece that matches nothing;
3. the whole detections and the joined pieces go through class-wise NMS (torchvision's
   batched_nms at iou_threshold, default the model's nms_thresh), which removes the copies of an
   object that several tiles saw whole.

So an object cut by an inner tile border is reported once, with its whole box. Simpler rules do
worse (README, measured on mosaics of the synthetic dataset): dropping every cut detection loses
the objects larger than the overlap; plain NMS over all tiles keeps partial boxes beside whole
ones; joining every overlapping pair of partial boxes (greedy merging by intersection over the
smaller box) also joins neighbouring objects and the model's noise along a seam.

The full-image pass (optional) runs the model on the whole image at its own scale, for objects
larger than the tiles; its detections count as those of one more tile whose edges are all image
borders (never cut), so they drop the pieces they match. Only its detections larger than
overlap - 2 · margin are kept: a tile sees the smaller ones whole, at full resolution.
"""

from __future__ import annotations

import math
import warnings
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import batched_nms
from tqdm import tqdm

from ..data.common import to_rgb8
from ..data.tile import check_tile_args, overlap_pixels, tile_windows
from ..model.preprocess import resize_geometry

# Without `progress`, a bar over the tiles is shown from this many tiles on (a big image).
PROGRESS_MIN_TILES = 64


@dataclass(frozen=True)
class TileSpec:
    """How to tile: `size` px tiles overlapping by `overlap` of their size, `batch_size` tiles per
    forward pass, plus a full-image pass (`full_image`) for objects larger than the tiles (its
    detections are kept when their longer side exceeds `whole_up_to`, what the tiles see whole).
    iou_threshold: of the merge (None: the model's nms_thresh). margin: px from an inner tile
    edge within which a detection counts as cut (None: 2 % of the tile, at least 1)."""

    size: int
    overlap: float = 0.25
    full_image: bool = False
    iou_threshold: Optional[float] = None
    margin: Optional[float] = None
    batch_size: int = 4

    def __post_init__(self):
        check_tile_args(self.size, self.overlap)
        if self.iou_threshold is not None and not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"tile IoU threshold {self.iou_threshold}: expected a value in (0, 1]")
        if self.margin is not None and not self.margin >= 0:
            raise ValueError(f"tile border margin {self.margin}: expected >= 0 pixels")
        if self.batch_size < 1:
            raise ValueError(f"tiles per batch {self.batch_size}: expected >= 1")

    @property
    def border_margin(self) -> float:
        return float(self.margin) if self.margin is not None else max(1.0, round(0.02 * self.size))

    @property
    def whole_up_to(self) -> float:
        """The largest object (px) that some tile is guaranteed to see whole."""
        return max(0.0, overlap_pixels(self.size, self.overlap) - 2 * self.border_margin)


@contextmanager
def native_scale(model, height: int, width: int):
    """The model's resize set to the identity for (height, width) inputs, then restored."""
    if not (hasattr(model, "min_size") and hasattr(model, "max_size")):
        yield  # a model without the resize (a stub): nothing to do
        return
    old = model.min_size, model.max_size
    model.min_size, model.max_size = min(height, width), max(height, width)
    try:
        yield
    finally:
        model.min_size, model.max_size = old


class _Image:
    """A uint8 (H, W, 3) array, a PIL image or a (3, H, W) tensor, cut into tile tensors."""

    def __init__(self, image):
        if isinstance(image, Image.Image):
            self.kind, self.width, self.height = "pil", image.width, image.height
        elif isinstance(image, Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
            self.kind, self.height, self.width = "tensor", int(image.shape[1]), int(image.shape[2])
        else:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
            self.kind, self.height, self.width = "array", image.shape[0], image.shape[1]
        self.image = image

    def crop(self, window) -> Tensor:
        """(3, h, w) tensor of a window: uint8 (the model divides by 255), or the tensor's dtype."""
        x0, y0, x1, y1 = (int(v) for v in window)
        if self.kind == "tensor":
            return self.image[:, y0:y1, x0:x1]
        if self.kind == "pil":
            return torch.from_numpy(to_rgb8(self.image.crop((x0, y0, x1, y1)))).permute(2, 0, 1)
        with warnings.catch_warnings():  # a read-only array (decoded by Pillow): the tile is only read
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(self.image[y0:y1, x0:x1]).permute(2, 0, 1)  # a view: no copy

    def reduced(self, factor: int) -> Tensor:
        """(3, H // f, W // f) uint8 or float: the image shrunk by an integer factor, by block means
        over strips of rows (a uint8 image never has a float copy of its full size)."""
        if self.kind == "tensor":  # in memory already: the model shrinks it as it shrinks any image
            if factor == 1:
                return self.image
            image = self.image.float().div_(255.0) if self.image.dtype == torch.uint8 else self.image.float()
            return torch.nn.functional.avg_pool2d(image[None], factor)[0]  # float in [0, 1] either way
        if factor == 1:  # an image at most twice the model's input
            return self.crop((0, 0, self.width, self.height))
        if self.kind == "pil":
            return torch.from_numpy(to_rgb8(self.image.reduce(factor))).permute(2, 0, 1)
        h, w, f = self.height // factor, self.width // factor, factor
        out = np.empty((h, w, 3), np.uint8)
        rows = max(1, 2**25 // (12 * self.width * f))  # output rows per strip: ~32 MB of float32 input
        for r in range(0, h, rows):
            strip = self.image[r * f : min(h, r + rows) * f, : w * f].astype(np.float32)
            out[r : r + rows] = (strip.reshape(-1, f, w, f, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
        return torch.from_numpy(out).permute(2, 0, 1)


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def _to_cpu(det: dict, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    boxes = det["boxes"].float().cpu() * scale + torch.tensor([dx, dy, dx, dy])
    return boxes, det["scores"].float().cpu(), det["labels"].cpu().long()


class _Detections:
    """The detections of all tiles, gathered into four growing flat buffers (Python arrays).

    Not a list of small tensors per tile: glibc's allocator puts such survivors between the
    large blocks of the next tiles' activations, and the freed blocks then cannot be reused (the
    heap grew by the sum of all tiles' activations: 2.9 GB for the 441 tiles of 500 px of a
    10,000 px image, in a test). The buffers grow geometrically and hold no tensor."""

    def __init__(self):
        self.boxes, self.scores, self.labels, self.tile = array("f"), array("f"), array("q"), array("q")

    def add(self, boxes: Tensor, scores: Tensor, labels: Tensor, tile: int) -> None:
        self.boxes.frombytes(boxes.contiguous().numpy().tobytes())
        self.scores.frombytes(scores.contiguous().numpy().tobytes())
        self.labels.frombytes(labels.contiguous().numpy().tobytes())
        self.tile.extend([tile] * len(labels))

    def tensors(self) -> dict[str, Tensor]:
        def tensor(buffer, dtype):  # frombuffer warns about (and refuses) empty buffers
            return torch.frombuffer(buffer, dtype=dtype).clone() if len(buffer) else torch.zeros(0, dtype=dtype)

        return {
            "boxes": tensor(self.boxes, torch.float32).reshape(-1, 4),
            "scores": tensor(self.scores, torch.float32),
            "labels": tensor(self.labels, torch.int64),
            "tile": tensor(self.tile, torch.int64),
        }


@torch.no_grad()
def detect_tiles(
    model, image, spec: TileSpec, device: Optional[torch.device] = None, progress: Optional[bool] = None
) -> dict[str, Tensor]:
    """The raw detections of every tile of `image` (and of the full-image pass with
    `spec.full_image`), in image pixels, before the merge: {"boxes", "scores", "labels", "tile"
    (index into "windows"), "windows" (T, 4) xyxy (the full-image pass: the last, the whole
    image), "size" (H, W)}."""
    src = _Image(image)
    device = device or _model_device(model)
    windows = torch.from_numpy(tile_windows(src.height, src.width, spec.size, spec.overlap))
    th, tw = int(windows[0, 3] - windows[0, 1]), int(windows[0, 2] - windows[0, 0])
    show = len(windows) >= PROGRESS_MIN_TILES if progress is None else progress
    found = _Detections()
    bar = tqdm(total=len(windows), desc="tiles", unit="tile", leave=False, disable=not show)
    with native_scale(model, th, tw):
        for start in range(0, len(windows), spec.batch_size):
            chunk = windows[start : start + spec.batch_size]
            dets = model([src.crop(w).to(device) for w in chunk])
            for k, (w, det) in enumerate(zip(chunk.tolist(), dets)):
                found.add(*_to_cpu(det, w[0], w[1]), start + k)
            del dets
            bar.update(len(chunk))
    bar.close()
    if spec.full_image:  # one more "tile": the whole image, whose edges are all image borders
        boxes, scores, labels = _full_image_pass(model, src, device)
        # Objects that fit the tiles' overlap are seen whole and sharp by a tile; the shrunk image
        # adds only coarser copies of them (which NMS would keep beside the sharp ones when the
        # coarse box is too far off): the full-image pass is for the larger objects only.
        large = (boxes[:, 2:] - boxes[:, :2]).amax(1) > spec.whole_up_to
        found.add(boxes[large], scores[large], labels[large], len(windows))
        windows = torch.cat([windows, torch.tensor([[0, 0, src.width, src.height]])])
    return {**found.tensors(), "windows": windows, "size": (src.height, src.width)}


def _full_image_pass(model, src: _Image, device) -> tuple[Tensor, Tensor, Tensor]:
    """The model on the whole image at its own scale; a uint8 image is first shrunk by the
    largest integer factor that keeps it at least as large as the model's input."""
    factor = 1
    if hasattr(model, "min_size") and src.kind != "tensor":
        scale = resize_geometry(src.height, src.width, model.min_size, model.max_size, 1)[0]
        factor = max(1, math.floor(1.0 / scale)) if scale < 1 else 1
    small = src.reduced(factor)
    (det,) = model([small.to(device)])
    boxes, scores, labels = _to_cpu(det, scale=float(factor))
    boxes = torch.minimum(boxes, torch.tensor([src.width, src.height] * 2, dtype=boxes.dtype))
    return boxes, scores, labels


def cut_sides(boxes: Tensor, windows: Tensor, height: int, width: int, margin: float) -> Tensor:
    """bool (n, 4): for each box (image pixels), whether it comes within `margin` px of the left,
    top, right, bottom edge of its tile's window (n, 4) where that edge is inner (not on the
    image border)."""
    w = windows.to(boxes.dtype)
    return torch.stack(
        [
            (w[:, 0] > 0) & (boxes[:, 0] - w[:, 0] <= margin),
            (w[:, 1] > 0) & (boxes[:, 1] - w[:, 1] <= margin),
            (w[:, 2] < width) & (w[:, 2] - boxes[:, 2] <= margin),
            (w[:, 3] < height) & (w[:, 3] - boxes[:, 3] <= margin),
        ],
        1,
    )


def cut_mask(boxes: Tensor, windows: Tensor, height: int, width: int, margin: float) -> Tensor:
    """bool (n,): which boxes are cut, i.e. near an inner edge of their tile (`cut_sides`)."""
    return cut_sides(boxes, windows, height, width, margin).any(1)


def _inside(edges: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """bool (K, 4): whether each of the 4 window edges x0, y0, x1, y1 lies strictly inside the
    x or y range [lo, hi] of the other window (K, 4)."""
    lo, hi = lo[..., [0, 1, 0, 1]], hi[..., [2, 3, 2, 3]]
    return (lo < edges) & (edges < hi)


def _clip(boxes: Tensor, regions: Tensor) -> Tensor:
    return torch.cat(
        [torch.maximum(boxes[..., :2], regions[..., :2]), torch.minimum(boxes[..., 2:], regions[..., 2:])], -1
    )


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of broadcast xyxy boxes that may be empty (then 0). Elementwise, not torchvision's
    pairwise box_iou: each pair here is clipped to its own pair of tiles first."""

    def area(x):
        return (x[..., 2] - x[..., 0]).clamp(min=0) * (x[..., 3] - x[..., 1]).clamp(min=0)

    inter = area(_clip(a, b))
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def _segments(starts: Tensor, counts: Tensor) -> Tensor:
    """The concatenated ranges starts[i] .. starts[i] + counts[i]."""
    total = int(counts.sum())
    first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    return first + torch.arange(total)


def _components(n: int, edges: Tensor) -> Tensor:
    """The connected component of each of n nodes (its smallest member) under (2, e) edges."""
    comp = torch.arange(n)
    if edges.numel() == 0:
        return comp
    a, b = edges
    while True:
        low = torch.minimum(comp[a], comp[b])
        new = comp.scatter_reduce(0, a, low, "amin").scatter_reduce(0, b, low, "amin")
        new = new[new]  # pointer jumping: a long chain collapses in log(length) rounds
        if torch.equal(new, comp):
            return comp
        comp = new


def merge_tile_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    tile: Tensor,
    windows: Tensor,
    size: tuple[int, int],
    iou_threshold: float,
    margin: float,
) -> dict[str, Tensor]:
    """One detection per object from the detections of overlapping tiles (image pixels; `tile`
    indexes `windows`, (T, 4) xyxy; size (H, W)): the rule of the module docstring. Returns
    {"boxes", "scores", "labels"} sorted by decreasing score."""
    height, width = size
    n = len(boxes)
    if n == 0:
        return {"boxes": boxes.reshape(0, 4), "scores": scores, "labels": labels}
    win = windows.to(boxes.dtype)
    sides = cut_sides(boxes, win[tile], height, width, margin)
    cut = sides.any(1)
    covered = torch.zeros(n, dtype=torch.bool)
    order = torch.argsort(tile, stable=True)  # detections grouped by tile
    counts = torch.bincount(tile, minlength=len(win))
    starts = torch.cumsum(counts, 0) - counts
    edges = []
    for a in torch.unique(tile[cut]).tolist():
        wa = win[a]
        near = (win[:, 0] < wa[2]) & (win[:, 2] > wa[0]) & (win[:, 1] < wa[3]) & (win[:, 3] > wa[1])
        near[a] = False
        others = near.nonzero().squeeze(1)
        cand = order[_segments(starts[others], counts[others])]
        mine = order[starts[a] : starts[a] + counts[a]]
        mine = mine[cut[mine]]
        if cand.numel() == 0:
            continue
        wk = win[tile[cand]]
        # Compared where both tiles see the image: each box clipped to the two windows' overlap.
        common = _clip(wa.expand(len(cand), 4), wk)
        iou = _iou(_clip(boxes[mine][:, None], common[None]), _clip(boxes[cand], common)[None])
        match = (labels[mine][:, None] == labels[cand][None]) & (iou >= iou_threshold)
        # The whole detection keeps its own score: giving it a piece's higher one (both are views
        # of one object) cost 2.2 AP on mosaics of the synthetic dataset (README).
        covered[mine] = (match & ~cut[cand][None]).any(1)
        # Pieces of one object are cut at the sides that face each other (a's side inside b's
        # window and b's inside a's), and are each other's best such match: one piece per tile,
        # so that noise along a seam does not chain different objects into one box.
        toward = (sides[mine][:, None] & _inside(wa.expand_as(wk), wk, wk)[None]).any(-1)
        toward &= (sides[cand] & _inside(wk, wa.expand_as(wk), wa.expand_as(wk))).any(-1)[None]
        fuse = torch.where(match & cut[cand][None] & toward, iou, torch.zeros_like(iou))
        local = torch.unique(tile[cand], return_inverse=True)[1].expand_as(fuse)
        per_tile = torch.zeros(len(mine), int(local.max()) + 1).scatter_reduce(1, local, fuse, "amax")
        mutual = (fuse > 0) & (fuse == per_tile.gather(1, local)) & (fuse == fuse.amax(0, keepdim=True))
        i, k = mutual.nonzero(as_tuple=True)
        edges.append(torch.stack([mine[i], cand[k]]))
    pieces = (cut & ~covered).nonzero().squeeze(1)
    e = torch.cat(edges, 1) if edges else torch.zeros(2, 0, dtype=torch.int64)
    e = e[:, ~covered[e[0]] & ~covered[e[1]]]
    # Pieces of one object (connected by matches) become the union of their boxes, if each piece
    # is that union as its tile sees it (clipped to the tile): a chain of pieces of different
    # objects is not, and its pieces stay apart.
    group = torch.unique(_components(n, e)[pieces], return_inverse=True)[1]
    pb = boxes[pieces]
    joined = _union(pb, group)
    fits = _iou(pb, _clip(joined[group], win[tile[pieces]])) >= iou_threshold
    split = torch.zeros(len(joined), dtype=torch.bool).index_fill_(0, group[~fits], True)
    alone = torch.where(split[group], len(joined) + torch.arange(len(group)), group)  # a group per piece
    group = torch.unique(alone, return_inverse=True)[1]
    joined = _union(pb, group)
    g = len(joined)
    joined_scores = torch.full((g,), -math.inf).scatter_reduce(0, group, scores[pieces], "amax")
    joined_labels = torch.zeros(g, dtype=labels.dtype).scatter(0, group, labels[pieces])  # one class per group
    whole = ~cut
    out_boxes = torch.cat([boxes[whole], joined])
    out_scores = torch.cat([scores[whole], joined_scores])
    out_labels = torch.cat([labels[whole], joined_labels])
    keep = batched_nms(out_boxes, out_scores, out_labels, iou_threshold)
    return {"boxes": out_boxes[keep], "scores": out_scores[keep], "labels": out_labels[keep]}


def _union(boxes: Tensor, group: Tensor) -> Tensor:
    """(g, 4): the union box of each group of boxes (dense group ids 0..g-1)."""
    g = int(group.max()) + 1 if len(group) else 0
    index = group[:, None].expand(-1, 2)
    lo = torch.full((g, 2), math.inf).scatter_reduce(0, index, boxes[:, :2], "amin")
    return torch.cat([lo, torch.full((g, 2), -math.inf).scatter_reduce(0, index, boxes[:, 2:], "amax")], 1)


def predict_tiled(
    model, image, spec: TileSpec, device: Optional[torch.device] = None, progress: Optional[bool] = None
) -> dict[str, Tensor]:
    """Detections of a large image by tiles (module docstring), on the CPU, sorted by score:
    {"boxes" (D, 4) xyxy image pixels, "scores", "labels"}. `image`: (H, W, 3) uint8 array, PIL
    image or (3, H, W) tensor. The model must be in eval mode; progress None: a bar from
    PROGRESS_MIN_TILES tiles on."""
    raw = detect_tiles(model, image, spec, device, progress)
    iou = spec.iou_threshold if spec.iou_threshold is not None else float(getattr(model, "nms_thresh", 0.5))
    return merge_tile_detections(
        raw["boxes"], raw["scores"], raw["labels"], raw["tile"], raw["windows"], raw["size"], iou, spec.border_margin
    )


__all__ = [
    "PROGRESS_MIN_TILES",
    "TileSpec",
    "cut_mask",
    "cut_sides",
    "detect_tiles",
    "merge_tile_detections",
    "native_scale",
    "predict_tiled",
]

"""torch.hub entry points of this repository:

    model = torch.hub.load("path/to/retinanet", "retinanet_r50_fpn", source="local", weights="torchvision-coco")
    model = torch.hub.load("path/to/retinanet", "retinanet_r18_fpn", source="local", num_classes=20)

Each entry builds the named variant of `retinanet.VARIANTS` (`retinanet.get_model`) and returns
the model in eval mode, ready to predict: with fast=True (the default) through
`retinanet.optimize_for_inference` (BatchNorm folded into the convolutions, channels_last; the
same detections, faster); fast=False returns the plain model, to fine-tune or to read its state
dict. Keyword arguments are ModelConfig fields (num_classes=20,
score_thresh=0.3, ...). weights: None (random initialisation; pretrained_backbone=True loads
torchvision's ImageNet backbone), "torchvision-coco" (R50 only: torchvision's COCO checkpoint,
downloaded once into $TORCH_HOME/hub/checkpoints and converted; offline, put the file there), or
a path to a state dict / training checkpoint of this library.
"""

from retinanet import VARIANTS as _VARIANTS
from retinanet import get_model as _get_model
from retinanet import optimize_for_inference as _optimize_for_inference

dependencies = ["torch", "torchvision"]  # checked by torch.hub.load


def _entry(name: str):
    def entry(weights=None, fast=True, **kwargs):
        model = _get_model(name, weights=weights, **kwargs).eval()
        return _optimize_for_inference(model, inplace=True) if fast else model

    entry.__name__ = entry.__qualname__ = name
    backbone = _VARIANTS[name]["backbone"]
    entry.__doc__ = (
        f"RetinaNet (Lin et al. 2017) with a {backbone} FPN backbone, in eval mode.\n\n"
        "weights: None, 'torchvision-coco' (retinanet_r50_fpn only) or a .pth path; "
        "fast: optimized for inference (default) or the plain model (False, e.g. to fine-tune); "
        "kwargs: ModelConfig fields, e.g. num_classes=20, score_thresh=0.3."
    )
    return entry


# One entry per named variant (retinanet_r18_fpn, retinanet_r50_fpn, ...), always in step with
# retinanet.VARIANTS.
for _name in _VARIANTS:
    globals()[_name] = _entry(_name)

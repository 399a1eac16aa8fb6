"""Named presets of the synthetic dataset: other class lists and scene statistics, drawn by the
same code (retinanet/data/synth.py) from the plain drawing parameters defined here.

A preset is chosen by name: `ensure_synthetic(preset="focal")`, `retinanet data synth --preset
focal`, or `data.synth_preset: focal` in a config. No preset (None) is the default dataset, whose
files and parameter record stay as they were.

"focal": a small-scale copy of the imbalance the focal loss targets (§1, §3 of the paper). On
COCO a RetinaNet faces ~47,000 negative (anchor, class) pairs per positive pair; on the default
dataset (6 classes, ~3.5 objects of 24-180 px per 320 px image) only ~1,200, too few for the
loss's effect to stand out of seed noise. This preset measures ~12,500 at 224 px with the
paper's anchors (`retinanet analyze anchors` with configs/synth/retinanet_r18_focal.yaml,
"negative pairs per positive pair"), with
- many classes: the 6 shapes times 8 hue families 45 degrees apart, 48 classes named
  "<hue>_<shape>" (red_circle, orange_circle, ...). The hue spread is small (sigma = 4 degrees)
  and saturation and value are high, so colour is a reliable cue; textures are drawn at random
  for every object, a nuisance rather than a cue;
- few and small objects: 1-4 per image (uniform; 5% of images hold none), box sides sqrt(w h)
  drawn from 24-30 px (90%) or 33-64 px (10%) at 224 px, measured 23-75 px: ~72% small (< 32²),
  ~28% medium. None is much below 24 px: the smallest anchor is 32 px at stride 8, and a box
  reaches IoU 0.5 with it only from ~24 px on. Sizes scale with `image_size`;
- distractors (1-4 per image, uniform hue, the same saturation and value as the objects) and
  the default dataset's cluttered backgrounds.
Why small objects: a class's positive (anchor, class) pairs per image are the anchors per image
over the imbalance, whatever the class count, so at a given imbalance and image size only fewer
positive anchors per object (~14 for these boxes, ~25 for 33-128 px ones) leave more objects
per class to learn from. With 1-4 objects of 24-128 px instead (1.6 per image at a similar
imbalance) the config's model reached AP 4.6 after 300 iterations at the full LR; with these
boxes, 10.1 after 200.
"""

from __future__ import annotations

from typing import Optional

from .synth import CLASSES

# The "focal" preset's classes: the 6 shapes of synth.CLASSES times 8 hue families 45 degrees apart.
FOCAL_HUES = {
    "red": 0.0,
    "orange": 45.0,
    "lime": 90.0,
    "green": 135.0,
    "cyan": 180.0,
    "azure": 225.0,
    "violet": 270.0,
    "magenta": 315.0,
}

# Each preset: "defaults" (num_train, num_val, image_size, as synth.DEFAULTS) and "scene", the
# drawing parameters `synth.make_image` takes:
#   styles: class name -> (shapes it is drawn as, one at random; hue centre; value range): the
#     classes, in label order
#   hue_sigma: spread of an object's hue around its class's centre (degrees)
#   saturation: range of the objects' and distractors' HSV saturation; value: the distractors'
#     value range (their hue is uniform); contrast: range of the texture contrast
#   empty_p: probability of an image without objects; count_p: probabilities of 1, 2, ... objects
#   distractors: [low, high) of the number of distractors per image
#   size_bands, size_band_p: box side bands (px at base_size, scaled with the image) and their probabilities
PRESETS: dict[str, dict] = {
    "focal": {
        "defaults": {"num_train": 2000, "num_val": 400, "image_size": 224},
        "scene": {
            "styles": {
                f"{hue}_{shape}": ((shape,), centre, (0.55, 1.0))
                for shape in CLASSES
                for hue, centre in FOCAL_HUES.items()
            },
            "hue_sigma": 4.0,
            "saturation": (0.7, 1.0),
            "value": (0.55, 1.0),
            "contrast": (0.25, 0.5),
            "empty_p": 0.05,
            "count_p": (0.25, 0.25, 0.25, 0.25),
            "distractors": (1, 5),
            "size_bands": ((24.0, 30.0), (33.0, 64.0)),
            "size_band_p": (0.9, 0.1),
            "base_size": 224,
        },
    },
}


def check_preset(preset: Optional[str]) -> Optional[str]:
    """`preset` when it is None or a known preset's name; else a ValueError naming the known ones."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"synthetic dataset preset {preset!r}: expected one of {sorted(PRESETS)} (or none)")
    return preset


def preset_defaults(preset: str) -> dict:
    """num_train, num_val, image_size of a preset."""
    return dict(PRESETS[check_preset(preset)]["defaults"])


def preset_scene(preset: Optional[str]) -> Optional[dict]:
    """The drawing parameters of a preset (None for the default dataset)."""
    return None if check_preset(preset) is None else PRESETS[preset]["scene"]


def class_names(preset: Optional[str]) -> tuple[str, ...]:
    """All classes of a preset, in label order (the default dataset's: synth.CLASSES)."""
    scene = preset_scene(preset)
    return CLASSES if scene is None else tuple(scene["styles"])

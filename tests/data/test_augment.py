"""data.augment: boxes move with the pixels, the visible-area rule, parsing."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from retinanet.config import ConfigError, load_config
from retinanet.data.augment import AUGMENTATIONS, Augment, LargeScaleJitter, parse_item
from retinanet.data.build import build_datasets

# Each augmentation with every random branch taken (p=1), so that the test always transforms.
FORCED = {
    "photometric": "photometric(p=1.0)",
    "vflip": "vflip(p=1.0)",
    "rot90": "rot90",
    "iou_crop": "iou_crop",
    "zoom_out": "zoom_out(p=1.0)",
    "lsj": "lsj(min_scale=2.0, max_scale=2.0)",  # exact pixel doubling: a mask scales as its box
}


def _sample(seed):
    """A 3 x 160 x 224 image and 4 integer boxes, each also drawn as a filled mask."""
    g = torch.Generator().manual_seed(seed)
    h, w = 160, 224
    boxes = []
    for _ in range(4):
        x0, y0 = int(torch.randint(0, w - 60, (), generator=g)), int(torch.randint(0, h - 60, (), generator=g))
        bw, bh = int(torch.randint(30, 60, (), generator=g)), int(torch.randint(30, 60, (), generator=g))
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    masks = torch.zeros(4, h, w, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = 1  # pixels x0..x1-1: the box's edges x0 and x1
    return {
        "image": tv_tensors.Image(torch.rand(3, h, w, generator=g)),
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(4),  # box k is mask k
        "masks": tv_tensors.Mask(masks),
    }


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_every_augmentation_has_a_forced_case():
    assert set(FORCED) == set(AUGMENTATIONS)


@pytest.mark.parametrize("name", sorted(FORCED))
def test_boxes_move_with_the_image(name):
    item_name, params = parse_item(FORCED[name])
    step = AUGMENTATIONS[item_name](**params)
    sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=lambda s: s["labels"])
    kept = 0
    for seed in range(8):
        torch.manual_seed(seed)
        sample = _sample(seed)
        out = sanitize(step(sample))
        assert out["image"].shape[-2:] == out["masks"].shape[-2:] == out["boxes"].canvas_size
        # SanitizeBoundingBoxes drops the masks of the boxes it drops; lsj's crop keeps all masks
        by_position = len(out["masks"]) == len(out["boxes"])
        for i, (box, k) in enumerate(zip(out["boxes"], out["labels"])):
            mask = out["masks"][i if by_position else k]
            assert mask.any(), f"{name}: box {k} kept but its mask left the image"
            got = _mask_box(mask)
            inter = (torch.minimum(box[2:], got[2:]) - torch.maximum(box[:2], got[:2])).clamp(min=0).prod()
            union = (box[2:] - box[:2]).prod() + (got[2:] - got[:2]).prod() - inter
            assert inter / union >= 0.99, f"{name} seed {seed}: box {box.tolist()} vs drawn {got.tolist()}"
            kept += 1
    assert kept >= 8  # most boxes survive: the comparison ran


def test_lsj_keeps_a_cut_box_by_its_visible_area():
    # Scale 1 and a crop offset of 0: nothing moves; then a crop that cuts the box.
    sample = _sample(0)
    sample["boxes"] = tv_tensors.BoundingBoxes(
        torch.tensor([[200.0, 10, 260, 50], [214.0, 60, 254, 100]]), format="XYXY", canvas_size=(160, 224)
    )
    sample["labels"] = torch.tensor([0, 1])
    torch.manual_seed(0)
    out = LargeScaleJitter(1.0, 1.0, min_visible=0.3)(sample)
    # box 0: 24 of 60 px wide stay visible (40 %): kept, clipped to 224; box 1: 10 of 40 (25 %): dropped
    assert out["labels"].tolist() == [0] and out["boxes"][0].tolist() == [200.0, 10.0, 224.0, 50.0]


def test_augment_on_a_training_image_and_empty_results():
    aug = Augment(["photometric", "rot90", "zoom_out", "lsj", "iou_crop", "vflip"])
    torch.manual_seed(3)
    image, target = aug(torch.rand(3, 120, 90), {"boxes": torch.tensor([[10.0, 10, 60, 80]]), "labels": torch.tensor([2])})
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].shape[1] == 4 and target["boxes"].dtype == torch.float32
    assert len(target["labels"]) == len(target["boxes"]) <= 1
    # an image without boxes stays one
    image, target = aug(torch.rand(3, 50, 50), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)})
    assert target["boxes"].shape == (0, 4)


def test_bad_items_are_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'zoom_in'.*expected one of"):
        parse_item("zoom_in")
    with pytest.raises(ValueError, match=r"unexpected keyword argument 'scale'"):
        parse_item("lsj(scale=2)")
    assert parse_item("zoom_out(max_scale=3, p=0.2)") == ("zoom_out", {"max_scale": 3, "p": 0.2})
    from retinanet.data.synth import generate_synthetic

    root = generate_synthetic(tmp_path / "s", num_train=2, num_val=1, image_size=64)
    with pytest.raises(ConfigError, match="data.augment item 'bad'"):
        build_datasets(load_config(None, [f"data.train_path={root}", "data.augment=[bad]"]))

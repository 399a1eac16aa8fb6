"""One input geometry: the model, the export wrapper and the diagnostics agree with `resize_geometry`."""

import pytest
import torch
import torch.nn.functional as F

from retinanet import ModelConfig, build_model
from retinanet.deploy.export import ExportableRetinaNet
from retinanet.diagnostics.anchors import input_geometry
from retinanet.model.preprocess import resize_geometry

ODD_SIZES = [(333, 517), (1, 999), (799, 801), (1000, 1)]
# (min_size, max_size, size_divisor), both divisors: the max_size cap binds for 1x999 and 1000x1
# always, for 333x517 under the last two and for 799x801 under the last one (checked below);
# max_size >= 1000 keeps the 1-pixel sides at 1 pixel (the model cannot resize to 0)
SETTINGS = [(800, 1333, 128), (600, 1000, 32), (800, 1000, 32), (1000, 1001, 128)]


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(backbone="resnet18", num_classes=3, fpn_channels=32, head_convs=1)).eval()


def _configure(model, min_size, max_size, size_divisor):
    model.min_size, model.max_size, model.size_divisor = min_size, max_size, size_divisor
    return ModelConfig(min_size=min_size, max_size=max_size, size_divisor=size_divisor)


def test_settings_cover_both_sides_of_the_cap():
    capped = [[max_size / max(h, w) < min_size / min(h, w) for h, w in ODD_SIZES] for min_size, max_size, _ in SETTINGS]
    assert capped == [[False, True, False, True], [False, True, False, True], [True, True, False, True], [True] * 4]


def test_hand_computed():
    # 480x640 to the paper's 800 / 1333: scale 5/3, 800x1066 (floor), padded to 128: 896x1152
    scale, resized, padded = resize_geometry(480, 640, 800, 1333, 128)
    assert scale == 800 / 480 and resized == (800, 1066) and padded == (896, 1152)
    # the longer side caps the scale: 100x400 -> 1333 / 400, 333x1333, padded to 32: 352x1344
    assert resize_geometry(100, 400, 800, 1333, 32)[1:] == ((333, 1333), (352, 1344))


@pytest.mark.parametrize("setting", SETTINGS)
def test_model_export_and_diagnostics_agree(model, setting):
    cfg = _configure(model, *setting)
    wrapper = ExportableRetinaNet(model).eval()
    divisor = setting[2]
    for h, w in ODD_SIZES:
        scale, resized, padded = resize_geometry(h, w, *setting)
        assert all(p % divisor == 0 and 0 <= p - r < divisor for r, p in zip(resized, padded))
        # torchvision's resize call (scale_factor, recompute_scale_factor=True) gives the same size
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
        tv = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )
        assert tuple(tv.shape[-2:]) == resized
        # the tensor path (0-dim tensors, as the export traces them) computes the same numbers
        t_scale, t_resized, t_padded = resize_geometry(torch.tensor(h), torch.tensor(w), *setting)
        assert t_scale.dtype == torch.float64 and float(t_scale) == scale
        assert tuple(int(v) for v in t_resized) == resized and tuple(int(v) for v in t_padded) == padded
        with torch.no_grad():
            batch, sizes, orig = model.preprocess([image])
            x, new_hw, orig_hw = wrapper.preprocess(image[None])
        assert tuple(sizes[0].tolist()) == resized and tuple(batch.shape[-2:]) == padded
        assert tuple(orig[0].tolist()) == tuple(orig_hw.tolist()) == (h, w)
        assert tuple(new_hw.tolist()) == resized and tuple(x.shape[-2:]) == padded
        assert torch.equal(x, batch)  # the same pixels, padding included
        assert input_geometry(h, w, cfg) == (resized, padded)


def test_model_pads_a_batch_to_its_largest_padded_size(model):
    _configure(model, 600, 1000, 32)
    images = [torch.rand(3, h, w) for h, w in ODD_SIZES]
    with torch.no_grad():
        batch, sizes, _ = model.preprocess(images)
    geometry = [resize_geometry(h, w, 600, 1000, 32) for h, w in ODD_SIZES]
    assert sizes.tolist() == [list(g[1]) for g in geometry]
    assert tuple(batch.shape[-2:]) == (max(g[2][0] for g in geometry), max(g[2][1] for g in geometry))

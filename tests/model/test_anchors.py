import math

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retinanet.model.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_hand_computed():
    # P3, base 32, one scale, ratios h/w = 0.5, 1, 2 at constant area 32^2:
    # w = 32 / sqrt(r), h = 32 * sqrt(r)
    a = cell_anchors(32.0, 1, (0.5, 1.0, 2.0))
    s2 = math.sqrt(2)
    expected = torch.tensor(
        [
            [-16 * s2, -16 / s2, 16 * s2, 16 / s2],
            [-16, -16, 16, 16],
            [-16 / s2, -16 * s2, 16 / s2, 16 * s2],
        ]
    )
    torch.testing.assert_close(a, expected)


def test_exact_sizes_are_powers_of_two_thirds():
    a = cell_anchors(32.0, 3, (1.0,))
    widths = a[:, 2] - a[:, 0]
    torch.testing.assert_close(widths, torch.tensor([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]))
    # torchvision style: int sizes 32, 40, 50
    tv = cell_anchors(32.0, 3, (1.0,), style="torchvision")
    assert (tv[:, 2] - tv[:, 0]).tolist() == [32.0, 40.0, 50.0]


def test_one_level_grid_hand_computed():
    # a 2x3 P3 map (stride 8), one anchor per location of size 32, offset 0.5 (pixel centres)
    gen = AnchorGenerator(sizes=(32, 64, 128, 256, 512), scales_per_octave=1, aspect_ratios=(1.0,), offset=0.5)
    shapes = [(2, 3), (1, 2), (1, 1), (1, 1), (1, 1)]
    anchors, per_level = gen(shapes, (16, 24))
    assert per_level == [6, 2, 1, 1, 1]
    p3 = anchors[:6]
    centres = [(4, 4), (12, 4), (20, 4), (4, 12), (12, 12), (20, 12)]  # (x, y), row-major
    expected = torch.tensor([[x - 16, y - 16, x + 16, y + 16] for x, y in centres], dtype=torch.float32)
    torch.testing.assert_close(p3, expected)
    # P4 (stride 16, size 64): centres at x = 8, 24
    torch.testing.assert_close(anchors[6:8], torch.tensor([[-24.0, -24, 40, 40], [-8.0, -24, 56, 40]]))


def _shapes(h, w):
    out = []
    h, w = math.ceil(h / 8), math.ceil(w / 8)
    for _ in range(5):
        out.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return out


def test_anchor_count_800x1067():
    # Paper setup (padding to 128): 896x1152 -> P3 112x144 ... P7 7x9
    gen = AnchorGenerator()
    anchors, per_level = gen(_shapes(896, 1152), (896, 1152))
    assert per_level == [112 * 144 * 9, 56 * 72 * 9, 28 * 36 * 9, 14 * 18 * 9, 7 * 9 * 9]
    assert anchors.shape == (193347, 4)
    # torchvision setup (padding to 32): 800x1088 -> 100x136, 50x68, 25x34, 13x17, 7x9
    tv_anchors, tv_per_level = AnchorGenerator(offset=0.0, style="torchvision")(_shapes(800, 1088), (800, 1088))
    assert tv_anchors.shape == (163206, 4)


def test_torchvision_style_equals_torchvision_generator():
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in [32, 64, 128, 256, 512])
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    shapes = _shapes(800, 1088)
    feats = [torch.zeros(1, 1, h, w) for h, w in shapes]
    expected = tv(ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1088)]), feats)[0]
    ours, _ = AnchorGenerator(offset=0.0, style="torchvision")(shapes, (800, 1088))
    assert torch.equal(ours, expected)


def test_cache_returns_same_tensor():
    gen = AnchorGenerator()
    a1, _ = gen(_shapes(256, 256), (256, 256))
    a2, _ = gen(_shapes(256, 256), (256, 256))
    assert a1 is a2
    a3, _ = gen(_shapes(384, 256), (384, 256))
    assert a3.shape[0] > a1.shape[0]


def test_table_1c_anchor_counts():
    for sc, ratios in [(1, (1.0,)), (2, (1.0,)), (4, (0.5, 1.0, 2.0))]:
        gen = AnchorGenerator(scales_per_octave=sc, aspect_ratios=ratios)
        assert gen.num_anchors_per_location == sc * len(ratios)

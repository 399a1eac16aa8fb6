"""grouped_nms against torchvision's batched_nms: the same kept indices in the same order."""

import pytest
import torch
from torchvision.ops import batched_nms

from retinanet.model.postprocess import grouped_nms


def random_boxes(n: int, num_groups: int, seed: int, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300 + offset
    wh = torch.rand(n, 2, generator=g) * 60 + 2
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, num_groups, (n,), generator=g)
    return boxes, scores, groups


@pytest.mark.parametrize(
    "n,num_groups,chunk", [(3000, 728, 256), (3000, 728, 7), (5000, 3, 256), (400, 1, 64), (2000, 2000, 256)]
)
def test_grouped_nms_equals_batched_nms(n, num_groups, chunk):
    boxes, scores, groups = random_boxes(n, num_groups, seed=n + num_groups)
    ref = batched_nms(boxes, scores, groups, 0.5)
    got = grouped_nms(boxes, scores, groups, 0.5, chunk_size=chunk)
    assert 0 < ref.numel() < n or num_groups == n  # the case has work: some boxes suppressed
    assert torch.equal(got, ref)


def test_grouped_nms_negative_coordinates_and_large_groups_ids():
    boxes, scores, groups = random_boxes(1500, 50, seed=3, offset=-400.0)
    groups = groups * 100_000 + 7  # sparse, large group ids
    assert torch.equal(grouped_nms(boxes, scores, groups, 0.4, chunk_size=100), batched_nms(boxes, scores, groups, 0.4))


def test_grouped_nms_hand_case_and_empty():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # Boxes 0 and 1 overlap at IoU 81/119 = 0.68 in the same group: 1 goes. Box 2 is box 0 in another group: stays.
    assert grouped_nms(boxes, scores, torch.tensor([0, 0, 1, 0]), 0.5, chunk_size=2).tolist() == [0, 2, 3]
    assert grouped_nms(boxes, scores, torch.tensor([0, 0, 1, 0]), 0.7).tolist() == [0, 1, 2, 3]
    empty = grouped_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0

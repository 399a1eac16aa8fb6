"""Parity with torchvision's retinanet_resnet50_fpn: same weights, same detections and losses."""

import pytest
import torch
import torchvision
from helpers import assert_same_detections

from retinanet import from_torchvision
from retinanet.model.backbone import freeze_batchnorm


@pytest.fixture(scope="module")
def tv_model():
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        for m in tv.modules():  # non-trivial BatchNorm statistics, so that their conversion matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        # Class logits spread by the bias (~N(-1, 1)) and the features (std ~2): detections at
        # every score, none saturated at 1.0 (where ties would make the order arbitrary)
        head = tv.head.classification_head.cls_logits
        head.bias.copy_(torch.randn_like(head.bias) - 1)
        tv.head.regression_head.bbox_reg.weight.mul_(3)
    # torchvision builds its published (pretrained) model with FrozenBatchNorm2d; so do we here
    return freeze_batchnorm(tv)


@pytest.mark.slow
def test_inference_parity_two_sizes(tv_model):
    tv = tv_model.eval()
    tv.score_thresh = 0.0
    ours = from_torchvision(tv.state_dict(), score_thresh=0.0).eval()
    torch.manual_seed(1)
    images = [torch.rand(3, 300, 400), torch.rand(3, 480, 360)]  # two sizes, one padded batch
    with torch.no_grad():
        expected = tv(images)
        got = ours(images)
    for a, b in zip(expected, got):
        assert len(a["boxes"]) == 300  # torchvision's detections_per_img
        assert_same_detections(a, b)


@pytest.mark.slow
def test_training_loss_parity(tv_model):
    tv = tv_model.train()
    ours = from_torchvision(tv.state_dict()).train()
    torch.manual_seed(2)
    images = [torch.rand(3, 320, 427)]
    targets = [
        {
            "boxes": torch.tensor([[20.0, 30, 200, 220], [150, 100, 410, 300], [5, 5, 30, 25]]),
            "labels": torch.tensor([1, 17, 60]),
        }
    ]
    expected = tv(images, targets)
    got = ours(images, targets)
    torch.testing.assert_close(got["cls"], expected["classification"], rtol=1e-4, atol=0)
    torch.testing.assert_close(got["box"], expected["bbox_regression"], rtol=1e-4, atol=0)


@pytest.mark.slow
def test_inference_parity_at_torchvisions_default_thresholds(tv_model):
    # score_thresh 0.05, nms 0.5, 1000 candidates per level, 300 detections: the threshold branch
    # of the post-processing, which score_thresh=0 never takes.
    tv = tv_model.eval()
    tv.score_thresh = 0.05
    ours = from_torchvision(tv.state_dict()).eval()
    assert ours.score_thresh == tv.score_thresh == 0.05
    torch.manual_seed(3)
    images = [torch.rand(3, 280, 350), torch.rand(3, 360, 300)]
    with torch.no_grad():
        expected = tv(images)
        got = ours(images)
    for a, b in zip(expected, got):
        assert len(a["boxes"]) > 0 and a["scores"].min() >= 0.05
        assert_same_detections(a, b)


@pytest.mark.slow
def test_training_loss_parity_on_a_batch_with_an_empty_image(tv_model):
    # Three images with 3, 1 and 0 boxes: torchvision normalizes each image's loss by its own
    # foreground anchors and averages over images (loss_normalizer="image"), which a single
    # image cannot tell from normalizing by the batch's foreground anchors.
    tv = tv_model.train()
    ours = from_torchvision(tv.state_dict()).train()
    torch.manual_seed(4)
    images = [torch.rand(3, 320, 427), torch.rand(3, 300, 300), torch.rand(3, 256, 320)]
    targets = [
        {
            "boxes": torch.tensor([[20.0, 30, 200, 220], [150, 100, 410, 300], [5, 5, 30, 25]]),
            "labels": torch.tensor([1, 17, 60]),
        },
        {"boxes": torch.tensor([[40.0, 50, 120, 260]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    expected = tv(images, targets)
    got = ours(images, targets)
    torch.testing.assert_close(got["cls"], expected["classification"], rtol=1e-4, atol=0)
    torch.testing.assert_close(got["box"], expected["bbox_regression"], rtol=1e-4, atol=0)

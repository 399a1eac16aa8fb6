"""Fine-tuning's start: published or own weights loaded into a model for other classes."""

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision

from retinanet import get_model, load_model
from retinanet.utils.download import cached_path
from retinanet.weights.loader import WeightsError
from retinanet.weights.torchvision import convert_torchvision_state_dict
from retinanet.weights.transfer import class_rows
from retinanet.weights.zoo import TORCHVISION_COCO_URL, coco_category_names

CLASSIFIER = {"head.cls_score.weight", "head.cls_score.bias"}


@pytest.fixture(scope="module")
def torchvision_coco_state():
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    return tv.state_dict()


@pytest.fixture
def published_file(torch_home, torchvision_coco_state):
    """torchvision's COCO file (random weights) where the download would put it: no network."""
    path = Path(cached_path(TORCHVISION_COCO_URL))
    path.parent.mkdir(parents=True)
    torch.save(torchvision_coco_state, path)
    return convert_torchvision_state_dict(torchvision_coco_state)


def test_a_3_class_model_from_torchvision_coco_keeps_every_tensor_but_the_class_layer(published_file):
    loaded = load_model("torchvision-coco", num_classes=3)
    state = loaded.model.state_dict()
    assert state["head.cls_score.weight"].shape == (9 * 3, 256, 3, 3)
    prior_bias = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(state["head.cls_score.bias"], torch.full((27,), prior_bias))
    assert 0.005 < state["head.cls_score.weight"].std().item() < 0.015  # σ = 0.01 (§4)
    for key, value in published_file.items():
        if key not in CLASSIFIER:
            assert torch.equal(state[key], value), key  # backbone, FPN, box head, subnets: the file's
    report = loaded.report
    assert set(report.reinitialised) == CLASSIFIER
    assert set(report.loaded) == set(published_file) - CLASSIFIER and report.unused == []
    assert (report.source_classes, report.target_classes) == (91, 3)
    # The model's labels are 0..2 of its own classes now, not COCO category ids.
    assert not loaded.labels_are_category_ids and loaded.category_ids == [1, 2, 3]
    # get_model, the one-line form of the issue, gives the same model
    torch.manual_seed(0)
    a = get_model("retinanet_r50_fpn", weights="torchvision-coco", num_classes=3).state_dict()
    assert all(torch.equal(a[k], state[k]) for k in published_file if k not in CLASSIFIER)


def test_weights_class_map_names_copies_the_rows_of_coco_classes_of_the_same_name(published_file):
    names = ["Person", "pallet", "car"]  # COCO's "person" (id 1) and "car" (id 3); case ignored
    loaded = load_model("torchvision-coco", class_names=names, weights_class_map="names")
    w, b = loaded.model.head.cls_score.weight.detach(), loaded.model.head.cls_score.bias.detach()
    src_w, src_b = published_file["head.cls_score.weight"], published_file["head.cls_score.bias"]
    for a in range(9):  # output channel a * K + k
        assert torch.equal(w[a * 3 + 0], src_w[a * 91 + 1]) and torch.equal(b[a * 3 + 0], src_b[a * 91 + 1])
        assert torch.equal(w[a * 3 + 2], src_w[a * 91 + 3]) and torch.equal(b[a * 3 + 2], src_b[a * 91 + 3])
        assert b[a * 3 + 1].item() == pytest.approx(-math.log(99))  # "pallet": not in COCO, prior bias
    assert loaded.report.classes_from_source == {"Person": "person", "car": "car"}
    assert loaded.class_names == names


def test_class_rows_match_names_and_skip_non_classes():
    assert class_rows(coco_category_names(), ["n/a", "dog", " DOG ", "unicorn"]) == {1: 18, 2: 18}
    assert class_rows(["a", "b", "a"], ["a"]) == {0: 0}  # the first of a repeated name


def test_a_shape_other_than_the_class_layer_is_an_error_naming_the_tensor_shapes_and_option(published_file):
    with pytest.raises(WeightsError) as e:
        load_model("torchvision-coco", num_classes=3, p6_from="c5")  # torchvision's P6 is from P5
    text = str(e.value)
    assert "fpn.p6.weight" in text and "(256, 256, 3, 3)" in text and "(256, 2048, 3, 3)" in text
    assert "model.p6_from is 'c5' here and 'p5' in the weights" in text
    with pytest.raises(WeightsError, match=r"head\.cls_subnet\.0\.1\.weight.*not in the weights.*model\.head_norm"):
        load_model("torchvision-coco", num_classes=3, head_norm="gn")
    with pytest.raises(WeightsError, match="another number of anchors.*model.aspect_ratios"):
        load_model("torchvision-coco", num_classes=3, aspect_ratios=(1.0,))


def test_own_checkpoint_with_other_classes_and_the_report_json(tmp_path):
    torch.manual_seed(1)
    src = get_model("retinanet_r18_fpn", num_classes=4, fpn_channels=64, head_convs=1)
    path = tmp_path / "src.pth"
    torch.save({"model": src.state_dict(), "class_names": ["a", "b", "c", "d"]}, path)
    loaded = load_model(
        str(path),
        name="retinanet_r18_fpn",
        class_names=["d", "x"],
        weights_class_map="names",
        fpn_channels=64,
        head_convs=1,
    )
    w = loaded.model.head.cls_score.weight.detach()
    for a in range(9):
        assert torch.equal(w[a * 2 + 0], src.head.cls_score.weight.detach()[a * 4 + 3])
    report = json.loads(loaded.report.to_json())
    assert report["classes_from_source"] == {"d": "d"} and set(report["reinitialised"]) == CLASSIFIER
    # the same classes, same order: a plain load, no report
    same = load_model(str(path), name="retinanet_r18_fpn", fpn_channels=64, head_convs=1)
    assert same.report is None and torch.equal(same.model.head.cls_score.weight, src.head.cls_score.weight)
    # names asked for, but a bare state dict carries none: a clear error
    torch.save(src.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(WeightsError, match="weights_class_map=names needs the class names"):
        load_model(
            str(tmp_path / "bare.pth"),
            name="retinanet_r18_fpn",
            class_names=["d"],
            weights_class_map="names",
            fpn_channels=64,
            head_convs=1,
        )


def test_the_fine_tuning_recipe_is_torchvisions_architecture(published_file):
    from retinanet.config import load_config
    from retinanet.utils.paths import project_path

    cfg = load_config(project_path("configs/finetune/retinanet_r50_fpn_coco.yaml"))
    loaded = load_model(None, config=cfg, class_names=["pallet", "forklift"])
    # Nothing but the class layer differs from the weights: no option that changes what they mean.
    assert loaded.report.differences == {} and set(loaded.report.reinitialised) == CLASSIFIER
    assert loaded.model.head.cls_score.out_channels == 9 * 2 and loaded.class_names == ["pallet", "forklift"]
    state = loaded.model.state_dict()
    assert torch.equal(state["fpn.p6.weight"], published_file["fpn.p6.weight"])

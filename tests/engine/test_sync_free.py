"""The training step never makes the host wait for the device: synchronisation points counted
with a dispatch mode over steady-state steps of the engine (batch 2, on the CPU, where the same
ops would block on a GPU), against torchvision's RetinaNet step."""

import pytest
import torch

from retinanet.config import load_config
from retinanet.data.synth import generate_synthetic
from retinanet.engine import train
from retinanet.utils.syncs import SyncCounter


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    generate_synthetic(d, seed=5, num_train=8, num_val=2)
    return d


def _count_engine_steps(synth_dir, out, first: int, last: int, monkeypatch) -> SyncCounter:
    """Syncs from the end of step `first` to the end of step `last`, none of them a log step.
    Not counted: the data loader's work (one loader process reads and collates; the batch
    sampler's shuffling runs on the CPU in the main process, on a GPU run too)."""
    import retinanet.engine.trainer as trainer

    counter = SyncCounter()

    class Loader(trainer.DataLoader):
        def __iter__(self):
            batches = super().__iter__()
            while True:
                counter.paused = True
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                finally:
                    counter.paused = False
                yield batch

    monkeypatch.setattr(trainer, "DataLoader", Loader)
    cfg = load_config(
        "configs/synth/retinanet_r18_synth.yaml",
        [
            f"data.train_path={synth_dir}",
            f"output_dir={out}",
            "train.max_iter=6",
            "train.batch_size=2",
            "train.log_period=100",
            "train.eval_period=0",
            "train.checkpoint_period=100",
            "train.warmup_iters=2",
            "train.lr_steps=[]",
            "data.num_workers=1",
            "data.val_path=null",
            "model.min_size=128",
            "model.max_size=128",
            "model.pretrained_backbone=false",
        ],
    )

    def on_step(it, model):
        if it == first:
            counter.__enter__()
        elif it == last:
            counter.__exit__(None, None, None)

    train(cfg, on_step=on_step)
    return counter


def _torchvision_step_syncs() -> SyncCounter:
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        trainable_layers=3,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    model = RetinaNet(backbone, num_classes=4, min_size=128, max_size=128).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12, 60, 70], [30, 40, 90, 100]]), "labels": torch.tensor([1, 2])}
        for _ in range(2)
    ]
    with SyncCounter() as counter:
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return counter


def test_steady_state_training_steps_make_no_synchronisation(synth_dir, tmp_path, monkeypatch):
    ours = _count_engine_steps(synth_dir, tmp_path / "run", 2, 5, monkeypatch)  # steps 3, 4, 5 (an epoch ends)
    theirs = _torchvision_step_syncs()
    print(
        f"synchronisations per training step: ours {ours.total / 3:g}, torchvision {theirs.total} {dict(theirs.counts)}"
    )
    assert ours.total == 0, dict(ours.counts)
    assert theirs.total > 0  # the counter sees the syncs of a step that makes them


def test_the_count_sees_a_synchronisation_added_to_the_step(synth_dir, tmp_path, monkeypatch):
    # The zero above is not the counter missing the step: one `.item()` per loss call is seen.
    import retinanet.model.criterion as criterion

    original = criterion.RetinaNetCriterion.__call__

    def with_a_read(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out["cls"].item()
        return out

    monkeypatch.setattr(criterion.RetinaNetCriterion, "__call__", with_a_read)
    counted = _count_engine_steps(synth_dir, tmp_path / "run", 2, 4, monkeypatch)
    assert dict(counted.counts) == {"_local_scalar_dense": 2}

"""The training batch stream (data.samplers): aspect groups, determinism, resume, process split."""

from itertools import islice

import pytest

from retinanet.data import DatasetError, SeededSamples, TrainingBatches, aspect_groups

# 10 landscape and 6 portrait images, interleaved.
RATIOS = [1.5 if i % 8 < 5 else 0.7 for i in range(16)]


def test_aspect_groups():
    assert aspect_groups([1.0, 1.33, 0.75, 0.999]) == [0, 0, 1, 1]


def test_batches_are_single_group_and_cover_an_epoch_once():
    groups = aspect_groups(RATIOS)
    stream = TrainingBatches(groups, batch_size=2, seed=3)
    assert stream.per_epoch == 5 + 3
    epoch = list(islice(iter(stream), stream.per_epoch))
    for batch in epoch:
        assert len(batch) == 2 and len({groups[i % 16] for i in batch}) == 1
    seen = sorted(i for b in epoch for i in b)
    assert seen == sorted(set(seen)) and len(seen) == 16  # every image once (both groups are even)
    nxt = next(islice(iter(stream), stream.per_epoch, None))
    assert all(16 <= i < 32 for i in nxt)  # the next epoch's indices carry their epoch


def test_the_stream_is_a_pure_function_of_the_iteration():
    groups = aspect_groups(RATIOS)
    full = list(islice(iter(TrainingBatches(groups, 2, seed=3)), 20))
    assert full == list(islice(iter(TrainingBatches(groups, 2, seed=3)), 20))
    assert list(islice(iter(TrainingBatches(groups, 2, seed=3, start=13)), 7)) == full[13:]
    assert full != list(islice(iter(TrainingBatches(groups, 2, seed=4)), 20))


def test_processes_share_each_global_batch():
    groups = aspect_groups(RATIOS)
    one = list(islice(iter(TrainingBatches(groups, 4, seed=0)), 6))
    ranks = [list(islice(iter(TrainingBatches(groups, 2, seed=0, rank=r, world=2)), 6)) for r in (0, 1)]
    for step in range(6):
        a, b = ranks[0][step], ranks[1][step]
        assert not set(a) & set(b) and len({groups[i % 16] for i in a + b}) == 1
    assert sorted(i for r in ranks for b in r for i in b) == sorted(i for b in one for i in b)


def test_too_few_images_for_a_batch_is_a_clear_error():
    with pytest.raises(DatasetError, match="cannot fill one batch of 8"):
        TrainingBatches([0, 0, 1], batch_size=4, seed=0, world=2)


def test_seeded_samples_draw_the_same_augmentation_for_a_position():
    import torch

    class Noise:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1).item()

    s = SeededSamples(Noise(), seed=1)
    assert s[5] == s[5] and s[5] != s[1]  # position 5 = image 1 in epoch 1: its own draw

import pytest
import torch

from dann.data.batches import PairedBatches
from dann.data.domains import DomainData, Split
from dann.errors import DataError


def _split(n=10, features=2):
    return Split(torch.randn(n, features), torch.randint(0, 3, (n,)))


def _data(**replace):
    splits = dict(source_train=_split(), source_test=_split(), target_train=_split(), target_test=_split())
    splits.update(replace)
    return DomainData(**splits, n_classes=3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (Split(torch.tensor([[0.0, float("nan")]]), torch.tensor([0])), "source_train: inputs contain NaN"),
        (Split(torch.randn(2, 2), torch.tensor([0, 3])), r"labels must be in \[0, 2\], found 0..3"),
        (Split(torch.randn(2, 2), torch.tensor([0, -1])), r"labels must be in \[0, 2\]"),
        (Split(torch.randn(3, 2), torch.tensor([0, 1])), "3 inputs but labels of shape"),
        (Split(torch.randn(2, 2), torch.tensor([0.0, 1.0])), "labels must be int64"),
        (Split(torch.randn(2, 5), torch.tensor([0, 1])), "same sample shape"),
        (Split(torch.randn(0, 2), torch.zeros(0, dtype=torch.long)), "no samples"),
    ],
)
def test_bad_splits_are_named(bad, message):
    with pytest.raises(DataError, match=message):
        _data(source_train=bad)


def test_batches_cover_every_sample_once_per_epoch_and_repeat_with_the_seed():
    source, target = Split(torch.arange(10.0).unsqueeze(1), torch.zeros(10, dtype=torch.long)), _split(7)
    batches = PairedBatches(source, target, batch_size=5, seed=1)
    epoch = torch.cat([batches.next().source_x for _ in range(2)]).squeeze(1)
    assert sorted(epoch.tolist()) == list(range(10))
    again = PairedBatches(source, target, batch_size=5, seed=1)
    assert torch.equal(torch.cat([again.next().source_x for _ in range(2)]).squeeze(1), epoch)


def test_shards_of_processes_partition_the_global_batch():
    source, target = _split(12), _split(12)
    whole = PairedBatches(source, target, batch_size=6, seed=0).next()
    shards = [PairedBatches(source, target, batch_size=6, seed=0, rank=r, world_size=2).next() for r in (0, 1)]
    merged = torch.cat([s.source_x for s in shards])
    assert sorted(merged[:, 0].tolist()) == sorted(whole.source_x[:, 0].tolist())


def test_sampler_state_round_trip_continues_identically():
    source, target = _split(9), _split(9)
    a = PairedBatches(source, target, batch_size=4, seed=0)
    a.next()
    state = a.state_dict()
    expected = [a.next().source_x for _ in range(3)]
    b = PairedBatches(source, target, batch_size=4, seed=5)
    b.load_state_dict(state)
    assert all(torch.equal(b.next().source_x, e) for e in expected)

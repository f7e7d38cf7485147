"""Training options that change what the loop does around a method: weight averaging, augmentation."""

import pytest
import torch

from dann.data.augment import RandomInvert
from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.errors import ConfigError, DataError
from dann.fit import fit
from dann.methods.adversarial import DANN
from dann.models.network import mlp_network
from dann.train.checkpoint import load_checkpoint
from dann.train.loop import TrainConfig


def _data():
    return make_blobs_domains(BlobsConfig(train_per_class=20, test_per_class=5))


def _trained(steps, checkpoint_path=None, method_cls=DANN, **overrides):
    torch.manual_seed(0)
    method = method_cls(mlp_network(2, 3, [8], [8]))
    cfg = TrainConfig(steps=steps, batch_size=16, lr_schedule="constant", lambda_schedule="constant", checkpoint_every=10, **overrides)
    fit(_data(), method, train_config=cfg, seed=0, checkpoint=checkpoint_path)
    return method.state_dict()


def test_ema_ends_with_the_moving_average_of_the_weights():
    # Constant schedules: a 1-step run's weights are the first step of a 2-step run.
    after_1, after_2 = _trained(1), _trained(2)
    averaged = _trained(2, ema_decay=0.9)
    decay = min(0.9, (1 + 1) / (10 + 1))  # warm-up: the second update keeps 2/11 of the average
    for key in after_2:
        assert torch.allclose(averaged[key], decay * after_1[key] + (1 - decay) * after_2[key], atol=1e-7), key
    assert not torch.allclose(averaged["model.label_predictor.weight"], after_2["model.label_predictor.weight"])


def test_ema_averages_batch_norm_statistics_and_copies_its_step_counter():
    torch.manual_seed(0)
    model = mlp_network(2, 3, [8], [8])
    model.feature_extractor = torch.nn.Sequential(model.feature_extractor, torch.nn.BatchNorm1d(8))
    method = DANN(model)
    cfg = TrainConfig(steps=5, batch_size=16, ema_decay=0.9)
    fit(_data(), method, train_config=cfg, seed=0)  # integer buffers cannot be interpolated: this used to crash
    bn = method.model.feature_extractor[1]
    assert int(bn.num_batches_tracked) == 5 and not torch.equal(bn.running_mean, torch.zeros(8))


class _Crash(RuntimeError):
    pass


class _CrashesAtStep25(DANN):
    def forward(self, batch, ctx, stage="model"):
        if ctx.step == 25:
            raise _Crash
        return super().forward(batch, ctx, stage)


def test_ema_run_resumed_after_a_crash_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path):
    uninterrupted = _trained(40, ema_decay=0.95)
    path = tmp_path / "ck.pt"
    with pytest.raises(_Crash):
        _trained(40, path, _CrashesAtStep25, ema_decay=0.95)
    assert load_checkpoint(path)["step"] == 20
    resumed = _trained(40, path, ema_decay=0.95)
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_resuming_without_the_averaged_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    _trained(10, path)
    with pytest.raises(DataError, match="checkpoint does not fit this run.*delete it to train from the start"):
        _trained(20, path, ema_decay=0.9)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_ema_decay_outside_zero_one_is_rejected(decay):
    with pytest.raises(ConfigError, match=r"train.ema_decay must be in \[0, 1\)"):
        TrainConfig(ema_decay=decay)


def test_random_invert_negates_whole_images_at_the_given_rate():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 5, 5) + 0.1  # all positive: a negated image is all negative
    out = RandomInvert(0.5)(x)
    negated = (out < 0).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((negated | kept).all()), "each image is either kept or negated as a whole"
    assert torch.equal(out[negated], -x[negated])
    assert 0.45 < negated.float().mean() < 0.55
    assert torch.equal(RandomInvert(0.0)(x), x) and torch.equal(RandomInvert(1.0)(x), -x)


def test_random_invert_keeps_channels_last_layout():
    x = torch.randn(8, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    assert RandomInvert(0.5)(x).is_contiguous(memory_format=torch.channels_last)


def test_random_invert_rejects_a_probability_outside_zero_one():
    with pytest.raises(ValueError, match=r"inversion probability must be in \[0, 1\], got 1.5"):
        RandomInvert(1.5)

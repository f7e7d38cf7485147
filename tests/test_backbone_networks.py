"""Backbone networks by name: registry options, the loop's learning-rate scales, frozen features computed once."""

import pytest
import torch

from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.data.domains import DomainData, Split
from dann.errors import ConfigError
from dann.fit import fit
from dann.models.frozen import backbone_features, is_frozen_backbone
from dann.models.registry import NETWORKS, ModelConfig, NetworkRequest, backbone_arch
from dann.train.callbacks import Callback
from dann.train.loop import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def image_data(n: int = 8, size: int = 32) -> DomainData:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, n, 3, size, size), dtype=torch.uint8, generator=generator)
    source, target, y = x[0], x[1], torch.arange(n) % 3
    prepare = lambda batch: batch.float() / 255 - 0.5  # noqa: E731
    return DomainData(Split(source, y), Split(source, y), Split(target), Split(target), 3, prepare=prepare)


class LearningRates(Callback):
    """Records each step's learning rate of every parameter group."""

    def __init__(self) -> None:
        self.seen: list[list[float]] = []

    def on_step(self, state) -> None:
        self.seen.append([group["lr"] for group in state.optimizers["model"].param_groups])


def test_backbone_networks_are_registered_with_their_options():
    for name in ("resnet18", "resnet34", "resnet50", "torchvision"):
        assert name in NETWORKS
    model = ModelConfig("resnet50", options={"weights": "imagenet", "freeze_backbone": True, "bottleneck": None})
    assert backbone_arch(model) == "resnet50" and is_frozen_backbone(model)
    assert backbone_arch(ModelConfig("torchvision", options={"arch": "mobilenet_v3_small"})) == "mobilenet_v3_small"
    assert backbone_arch(ModelConfig("lenet")) is None and not is_frozen_backbone(ModelConfig("lenet"))
    with pytest.raises(ConfigError, match="network torchvision needs model.arch"):
        ModelConfig("torchvision")
    with pytest.raises(ConfigError, match="unknown config key 'model.hidden'"):
        ModelConfig("resnet18", options={"hidden": [3]})
    with pytest.raises(ConfigError, match="model.bottleneck must be at least 1"):
        ModelConfig("resnet18", options={"bottleneck": 0})
    with pytest.raises(ConfigError, match="similar: resnet18"):
        ModelConfig("torchvision", options={"arch": "resnet181"}).build(NetworkRequest((3, 32, 32), 3, 1, (8,)))
    with pytest.raises(ConfigError, match=r"takes RGB images \(n, 3, H, W\)"):
        ModelConfig("resnet18").build(NetworkRequest((1, 32, 32), 3, 1, (8,)))


def test_init_leaves_the_backbone_alone():
    request = NetworkRequest((3, 32, 32), 3, 1, (8,))
    torch.manual_seed(0)
    plain = ModelConfig("resnet18", init="torch").build(request)
    torch.manual_seed(0)
    xavier = ModelConfig("resnet18", init="xavier").build(request)
    assert all(torch.equal(a, b) for a, b in zip(plain.backbone.parameters(), xavier.backbone.parameters()))
    assert not torch.equal(plain.label_predictor.weight, xavier.label_predictor.weight)


@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_the_loop_gives_the_backbone_its_learning_rate_scale(scale):
    rates = LearningRates()
    model = ModelConfig("resnet18", options={"bottleneck": 16, "backbone_lr_scale": scale})
    cfg = TrainConfig(steps=2, batch_size=4, lr=0.01, lr_schedule="paper")
    fit(image_data(), "dann", model=model, train_config=cfg, callbacks=[rates])
    for heads, backbone in rates.seen:
        assert backbone == pytest.approx(scale * heads)
    assert rates.seen[0][0] == 0.01 and rates.seen[1][0] < 0.01  # the schedule still anneals both


def test_a_network_without_backbone_keeps_one_group_at_the_schedules_rate():
    rates = LearningRates()
    fit(make_blobs_domains(BlobsConfig(), 0), "dann", train_config=TrainConfig(steps=3, lr_schedule="constant", lr=0.02), callbacks=[rates])
    assert rates.seen == [[0.02]] * 3


def test_frozen_backbone_on_cached_features_trains_as_on_images():
    """Features computed once give the training the frozen network would get on the images."""
    data = image_data()
    model = ModelConfig("resnet18", options={"bottleneck": 16, "freeze_backbone": True})
    cfg = TrainConfig(steps=3, batch_size=4, lr=0.05)
    on_images = fit(data, "dann", model=model, train_config=cfg, seed=3).method
    features, encode = backbone_features(data, model, seed=3)
    assert features.input_shape == (512,) and features.source_test.x is features.source_train.x  # one tensor, encoded once
    on_features = fit(features, "dann", model=model, train_config=cfg, seed=3).method
    assert on_features.model.backbone is None  # the heads alone
    with torch.no_grad():
        expected = on_images.model(data.prepare(data.target_test.x))
        got = on_features.model(encode(data.target_test.x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_frozen_features_refuse_augmentation():
    data = image_data()
    data.augment = lambda x: x.flip(-1)
    with pytest.raises(ConfigError, match="cannot be augmented"):
        backbone_features(data, ModelConfig("resnet18", options={"freeze_backbone": True}))

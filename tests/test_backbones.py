"""torchvision backbones as DomainAdversarialNets: import shim, heads, weights, freezing, cached features."""

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dann._torchvision
from dann._torchvision import import_torchvision
from dann.errors import ConfigError
from dann.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    backbone_preprocessing,
    cache_backbone_features,
    heads_only,
    torchvision_network,
)
from dann.models.network import lr_scaled_groups

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    torch.manual_seed(0)


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_import_torchvision_in_a_fresh_interpreter():
    script = textwrap.dedent("""
        import sys, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from dann._torchvision import import_torchvision
            tv = import_torchvision()
            assert import_torchvision() is tv is sys.modules["torchvision"]
        assert type(tv.models.resnet18()).__name__ == "ResNet"
        import torchvision.transforms.v2, torchvision.datasets
        stubbed = not hasattr(sys.modules["torchvision._meta_registrations"], "__file__")
        ours = [str(w.message) for w in caught if "compiled operators" in str(w.message)]
        assert len(ours) == (1 if stubbed else 0), ours
        assert all("models and transforms" in m and "nms" in m for m in ours)
        print("stubbed" if stubbed else "plain")
    """)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in ("stubbed", "plain")


def test_missing_torchvision_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setattr(dann._torchvision, "_torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes "import torchvision" fail as if absent
    with pytest.raises(ConfigError, match=r"^torchvision is needed for .*: pip install torchvision \(a build matching your torch\)$"):
        import_torchvision()


def test_other_import_errors_are_not_hidden(monkeypatch):
    monkeypatch.setattr(dann._torchvision, "_torchvision", None)

    def broken(name):
        raise RuntimeError("something else")

    monkeypatch.setattr(dann._torchvision.importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="something else"):
        import_torchvision()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small"])
def test_shapes(name):
    net = torchvision_network(name, n_classes=5, n_domain_outputs=2, domain_hidden=[16])
    x = Preprocessing()(images())
    features = net.features(x)
    assert features.shape == (3, 256)
    assert net.classify(features).shape == (3, 5)
    assert net.discriminate(features).shape == (3, 2)
    assert net.n_classes == 5
    assert net.backbone is net.feature_extractor.backbone
    assert not any(key.startswith("backbone.") for key in net.state_dict())  # a path, not a second registration
    assert copy.deepcopy(net).backbone is not net.backbone  # a copy (EMA teacher) finds its own


def test_backward_moves_heads_and_backbone():
    net = torchvision_network("resnet18", n_classes=4, n_domain_outputs=1, domain_hidden=[8])
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    features = net.features(Preprocessing()(images()))
    loss = F.cross_entropy(net.classify(features), torch.tensor([0, 1, 2]))
    loss = loss + F.binary_cross_entropy_with_logits(net.discriminate(features).squeeze(1), torch.tensor([0.0, 1.0, 1.0]))
    loss.backward()
    optimizer.step()
    moved = {name for name, p in net.named_parameters() if not torch.equal(p, before[name])}
    for part in ("feature_extractor.backbone.model.conv1", "feature_extractor.backbone.model.layer4", "feature_extractor.bottleneck", "label_predictor", "domain_classifier"):
        assert any(name.startswith(part) for name in moved), part


def test_frozen_backbone_gets_no_gradient_and_keeps_its_batchnorm_statistics():
    net = torchvision_network("resnet18", n_classes=4, n_domain_outputs=1, domain_hidden=[8], freeze_backbone=True)
    backbone = net.backbone
    stats = {name: b.clone() for name, b in backbone.named_buffers()}
    net.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert net.feature_extractor.bottleneck.training
    features = net.features(Preprocessing()(images()))
    (net.classify(features).sum() + net.discriminate(features).sum()).backward()
    assert all(not p.requires_grad and p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in net.label_predictor.parameters())
    assert all(p.grad is not None for p in net.feature_extractor.bottleneck.parameters())
    assert all(torch.equal(b, stats[name]) for name, b in backbone.named_buffers())


def test_lr_scaled_groups_put_the_backbone_at_a_tenth():
    net = torchvision_network("resnet18", n_classes=4, n_domain_outputs=1, domain_hidden=[8])
    extra = torch.nn.Parameter(torch.zeros(1))  # a method's own parameter counts as head
    groups = lr_scaled_groups([*net.parameters(), extra], net)
    heads, backbone = groups
    assert backbone["lr_scale"] == 0.1 and heads["lr_scale"] == 1.0
    assert {id(p) for p in backbone["params"]} == {id(p) for p in net.backbone.parameters()}
    assert len(heads["params"]) + len(backbone["params"]) == len(list(net.parameters())) + 1
    torch.optim.SGD(groups, lr=0.01)  # torch keeps the extra key in each group
    assert len(lr_scaled_groups(list(heads_only(net).parameters()), heads_only(net))) == 1


def test_heads_only_on_cached_features_match_the_frozen_network_on_images():
    net = torchvision_network("resnet18", n_classes=3, n_domain_outputs=1, domain_hidden=[8], freeze_backbone=True)
    x, y = images(4), torch.tensor([0, 1, 2, 0])
    prep = net.backbone.preprocessing
    cached = cache_backbone_features(net.backbone, x, prep, batch_size=3)
    assert cached.shape == (4, 512) and not cached.requires_grad
    heads = heads_only(net)
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.1)
    predictor_before = net.label_predictor.weight.detach().clone()
    heads.train()
    for _ in range(3):
        optimizer.zero_grad()
        features = heads.features(cached)
        loss = F.cross_entropy(heads.classify(features), y) + heads.discriminate(features).mean()
        loss.backward()
        optimizer.step()
    assert not torch.equal(net.label_predictor.weight, predictor_before)  # shared, not copied
    for mode in (True, False):
        net.train(mode)
        torch.testing.assert_close(heads(cached), net(prep(x)))
        torch.testing.assert_close(heads.discriminate(heads.features(cached)), net.discriminate(net.features(prep(x))))


def test_weights_from_a_path_round_trip(tmp_path):
    tv = import_torchvision()
    source = tv.models.resnet18()
    with torch.no_grad():
        source.layer4[1].bn2.running_mean.uniform_()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    net = torchvision_network("resnet18", 2, 1, [8], weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(net.backbone.model.conv1.weight, source.conv1.weight)
    assert torch.equal(net.backbone.model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert net.backbone.preprocessing.size == 224


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    tv = import_torchvision()
    torch.save(tv.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ConfigError, match=r"do not fit resnet18: unexpected keys layer1\.2\.") as caught:
        torchvision_network("resnet18", 2, 1, [8], weights=str(tmp_path / "resnet34.pth"))
    assert "\n" not in str(caught.value)


def test_imagenet_weights_absent_from_the_cache_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub", "torch.hub.set_dir was called elsewhere"
    url = import_torchvision().models.get_model_weights("resnet18").DEFAULT.url
    with pytest.raises(ConfigError) as caught:
        torchvision_network("resnet18", 2, 1, [8], weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert url in message and "model.weights=PATH" in message
    assert not (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_preprocessing():
    random = backbone_preprocessing("resnet18", None)
    assert (random.mean, random.std, random.size) == (IMAGENET_MEAN, IMAGENET_STD, None)
    imagenet = backbone_preprocessing("resnet18", "imagenet")  # needs no file
    assert (imagenet.mean, imagenet.std, imagenet.size, imagenet.resize_size) == (IMAGENET_MEAN, IMAGENET_STD, 224, 256)
    white = random(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(white[0, :, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))


def test_unknown_model_name_lists_similar_ones():
    with pytest.raises(ConfigError, match=r"^unknown torchvision classification model 'resnet19'; similar: .*resnet18") as caught:
        torchvision_network("resnet19", 2, 1, [8])
    assert "\n" not in str(caught.value)

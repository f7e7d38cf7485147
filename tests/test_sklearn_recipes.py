"""DANNClassifier's network_options and recipe: a registered network's own options, and dann run's tuned settings."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from dann.data.augment import RandomInvert
from dann.data.domains import DomainData, Split
from dann.experiments import get_experiment, resolve_config
from dann.experiments.mnist_mnistm import PerImage
from dann.fit import fit
from dann.sklearn import DANNClassifier, PixelNormalise


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def images(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.integers(0, 120, (n, 3, 28, 28)).astype(np.float32)
    for i, label in enumerate(y):
        X[i, :, :, label * 9 : label * 9 + 9] = 250.0
    return X, y, np.flip(X, axis=-1).copy()


def test_defaults_are_unchanged():
    est = DANNClassifier()
    assert est.network is None and est.network_options is None and est.recipe is None
    assert est._train_config().lr == 0.01 and est._train_config().optimizer == "sgd"
    assert est._model((4,)).options.hidden == [32, 32]


def test_recipe_brings_the_studys_settings_and_transforms():
    est = DANNClassifier(recipe="mnist-mnistm:default", steps=3)
    recipe = est._recipe_config()
    train = est._train_config(recipe)
    assert (train.optimizer, train.lr, train.momentum, train.ema_decay, train.batch_size) == ("adam", 0.001, 0.5, 0.995, 128)
    assert train.steps == 3  # a parameter set to anything but its default wins
    assert est._method_config(recipe).label_smoothing == 0.1
    model = est._model((3, 28, 28), recipe)
    assert (model.network, model.domain_hidden, model.deep_domain_hidden) == ("lenet", [100], [1024, 1024])
    X, y, X_target = images()
    est.set_params(batch_size=8).fit(X, y, X_target=X_target)
    assert isinstance(est.prepare_, PerImage)
    assert np.all(est.input_mean_ == 0) and np.all(est.input_scale_ == 1)  # per-image normalisation replaces standardize
    assert est.predict(X_target).shape == (24,) and est.transform(X[:2]).shape == (2, 48 * 7 * 7)
    paper = DANNClassifier(recipe="mnist-mnistm:paper")._train_config(DANNClassifier(recipe="mnist-mnistm:paper")._recipe_config())
    assert (paper.steps, paper.optimizer, paper.lr) == (10000, "sgd", 0.01)


def test_a_recipe_fit_is_the_study_fit():
    """recipe= trains exactly as fit() does with the study's config, transforms and network: the same weights."""
    X, y, X_target = images()
    est = DANNClassifier(recipe="mnist-mnistm", steps=4, batch_size=8, random_state=0).fit(X, y, X_target=X_target)
    experiment = get_experiment("mnist-mnistm")
    cfg = resolve_config(experiment, {"train": {"steps": 4, "batch_size": 8, "device": "cpu"}})
    source, target = torch.from_numpy(X), torch.from_numpy(X_target)
    prepare, augment = experiment.input_transforms(cfg, source, target)
    data = DomainData(Split(source, torch.from_numpy(y)), Split(source, torch.from_numpy(y)), Split(target), Split(target), 3,
                      prepare=prepare, augment=augment)
    study = fit(data, "dann", model=cfg.model, config=cfg.method, train_config=cfg.train, seed=0).method
    with torch.no_grad():
        expected = study.model(prepare(target)).double().softmax(1).numpy()
    np.testing.assert_allclose(est.predict_proba(X_target), expected, rtol=0, atol=1e-6)


def test_recipe_augmentation_is_used_in_training(monkeypatch):
    calls = []
    original = RandomInvert.__call__

    def counting(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(RandomInvert, "__call__", counting)
    X, y, X_target = images()
    DANNClassifier(recipe="mnist-mnistm", steps=2, batch_size=4, random_state=0).fit(X, y, X_target=X_target)
    assert calls == [4, 4, 4, 4]  # source and target batches of both steps


def test_network_options_reach_the_network_and_survive_clone():
    X, y, X_target = images()
    est = DANNClassifier(network="lenet", network_options={"batch_norm": True}, steps=2, batch_size=4, random_state=0)
    est.fit(X, y, X_target=X_target)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in est.network_.modules())
    assert clone(est).get_params()["network_options"] == {"batch_norm": True}


def test_frozen_resnet_trains_heads_on_features_and_predicts_images():
    X, y, X_target = images(12)
    est = DANNClassifier(network="resnet18", network_options={"freeze_backbone": True, "bottleneck": 16}, steps=3, batch_size=4, random_state=0)
    est.fit(X, y, X_target=X_target)
    assert est.backbone_features_ is not None and est.network_.backbone is None  # heads only
    proba = est.predict_proba(X_target)
    assert proba.shape == (12, 3) and np.allclose(proba.sum(1), 1)


def test_pretrained_weights_bring_their_normalisation(tmp_path):
    from dann._torchvision import import_torchvision

    torch.save(import_torchvision().models.resnet18().state_dict(), tmp_path / "resnet18.pt")
    X, y, X_target = images(12)
    est = DANNClassifier(network="resnet18", network_options={"weights": str(tmp_path / "resnet18.pt"), "freeze_backbone": True,
                                                              "bottleneck": 16}, steps=2, batch_size=4, random_state=0)
    est.fit(X, y, X_target=X_target)
    assert isinstance(est.prepare_, PixelNormalise) and np.all(est.input_scale_ == 1)
    white = est.prepare_(torch.full((1, 3, 2, 2), 255.0))[0, :, 0, 0]
    torch.testing.assert_close(white, (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"network": "mlp", "network_options": {"hidden": [3]}}, "hidden is a parameter of its own"),
        ({"network": "mlp", "network_options": {"depth": 3}}, "unknown config key 'model.depth'"),
        ({"network": lambda *a: None, "network_options": {}}, "a network callable takes none"),
        ({"recipe": "nosuch"}, "unknown experiment 'nosuch'"),
        ({"recipe": "mnist-mnistm:nosuch"}, "unknown recipe 'nosuch' for mnist-mnistm"),
        ({"recipe": ""}, "recipe must be 'EXPERIMENT:RECIPE'"),
    ],
)
def test_bad_options_raise_value_errors(params, message):
    X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        DANNClassifier(steps=2, **params).fit(X, np.arange(12) % 3, X_target=X)

"""``mnistm-mnist``: the reverse shift, MNIST-M labelled and MNIST unlabelled."""

from pathlib import Path

import pytest
import torch
from helpers import SHARED_DATA, needs_shared_data

from dann.data.mnist import load_mnist
from dann.data.mnistm import load_mnistm
from dann.experiments import get_experiment, resolve_config
from dann.experiments.mnist_mnistm import blend

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The built MNIST-M of the user cache when there is one, else one built here (~7 s)."""
    home = Path.home() / ".cache" / "dann"
    if (home / "mnistm" / "mnistm_seed0.npz").is_file():
        return home
    built = tmp_path_factory.mktemp("dann-cache")
    load_mnistm("test", SHARED_DATA, cache_dir=built)
    return built


def test_roles_swap(cache, monkeypatch):
    monkeypatch.setenv("DANN_CACHE", str(cache))
    overrides = {"data": {"train_limit": 300, "test_limit": 100, "intermediate": 0.25}, "validation": {"source": 0, "target": 0}}
    forward = get_experiment("mnist-mnistm")
    reverse = get_experiment("mnistm-mnist")
    data = reverse.load_data(resolve_config(reverse, overrides), str(SHARED_DATA))
    there = forward.load_data(resolve_config(forward, overrides), str(SHARED_DATA))

    def grey(x: torch.Tensor) -> bool:
        return bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())

    assert not grey(data.source_train.x) and grey(data.target_train.x)  # colour MNIST-M is the labelled source
    assert grey(there.source_train.x) and not grey(there.target_train.x)
    assert data.source_train.labelled and len(data.source_train) == 300 and len(data.target_test) == 100
    # a quarter of the way from MNIST-M to MNIST: three quarters MNIST-M
    digits, _ = load_mnist("train", str(SHARED_DATA))
    coloured, _ = load_mnistm("train", str(SHARED_DATA))
    blends = {image.tobytes() for image in blend(digits, coloured, 0.75)}
    middle = data.extra_domains[0].train.x.permute(0, 2, 3, 1).numpy()
    assert all(image.tobytes() in blends for image in middle)  # every intermediate image is a 3:1 blend

"""Each core mode's loss moves the parameters it should, and only those."""

import pytest
import torch

from dann.data.batches import Batch
from helpers import make_method

from dann.methods import StepContext
from dann.methods.losses import domain_loss
from dann.models.mnist_cnn import MNIST_FEATURES, mnist_network
from dann.models.network import mlp_network


def _batch():
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(8, 2, generator=g), torch.randint(0, 3, (8,), generator=g), torch.randn(8, 2, generator=g) + 2,
                 torch.randint(0, 3, (8,), generator=g))


def _grads(mode_name, lambda_=0.5):
    torch.manual_seed(0)
    method = make_method(mode_name, mlp_network(2, 3, [16, 8], [8]))
    out = method(_batch(), StepContext(0, 0.5, lambda_))
    out.loss.backward()
    parts = {"extractor": method.model.feature_extractor, "label": method.model.label_predictor, "domain": method.model.domain_classifier}
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()) for name, part in parts.items()}, method


@pytest.mark.parametrize(
    "mode, moves",
    [
        ("source_only", {"extractor": True, "label": True, "domain": False}),
        ("target_only", {"extractor": True, "label": True, "domain": False}),
        ("dann", {"extractor": True, "label": True, "domain": True}),
        ("domain_only", {"extractor": True, "label": True, "domain": True}),
    ],
)
def test_which_parts_a_mode_trains(mode, moves):
    assert _grads(mode)[0] == moves


def test_domain_only_extractor_gradient_is_the_unreversed_domain_gradient():
    torch.manual_seed(0)
    method = make_method("domain_only", mlp_network(2, 3, [16, 8], [8]))
    batch = _batch()
    extractor = list(method.model.feature_extractor.parameters())
    total = torch.autograd.grad(method(batch, StepContext(0, 0.5, 0.5)).loss, extractor)
    # label loss sits on detached features, so only the domain loss reaches the extractor, unreversed
    feats = method.model.features(torch.cat([batch.source_x, batch.target_x]))
    labels = torch.cat([torch.zeros(8), torch.ones(8)]).long()
    helps = torch.autograd.grad(domain_loss(method.model.domain_classifier(feats), labels), extractor)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(total, helps))


def test_dann_reverses_the_domain_gradient_into_the_extractor():
    torch.manual_seed(0)
    model = mlp_network(2, 3, [16, 8], [8])
    dann = make_method("dann", model)
    batch = _batch()
    feats = model.features(torch.cat([batch.source_x, batch.target_x]))
    labels = torch.cat([torch.zeros(8), torch.ones(8)]).long()
    w = model.feature_extractor[0][0].weight
    helps = torch.autograd.grad(domain_loss(model.domain_classifier(feats), labels), w)[0]
    out = dann(batch, StepContext(0, 0.5, 0.7))
    label_part = torch.autograd.grad(dann.label_loss(model.classify(model.features(batch.source_x)), batch.source_y), w)[0]
    total = torch.autograd.grad(out.loss, w)[0]
    assert torch.allclose(total, label_part - 0.7 * helps, atol=1e-6)


def test_paper_mnist_network_shapes():
    net = mnist_network([100], n_domain_outputs=1)
    x = torch.randn(4, 3, 28, 28)
    feats = net.features(x)
    assert feats.shape == (4, MNIST_FEATURES) == (4, 7 * 7 * 48)
    assert net(x).shape == (4, 10)
    assert net.discriminate(feats).shape == (4, 1)
    assert mnist_network([500, 500], n_domain_outputs=2).discriminate(feats).shape == (4, 2)

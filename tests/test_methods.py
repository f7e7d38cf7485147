"""The methods: which parameters each stage moves, the shared options, and Blobs results.

Blobs thresholds were measured on the default Blobs config, seed 0, one thread (source_only
0.745 target accuracy; dann 0.995, dann_alternating 0.995, adda 1.000, cdan 0.998, cdan_e 0.995,
vada 0.980). A method must beat source_only by 0.15, which a method that stopped adapting
(or adapted the wrong way) cannot.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import make_method

from dann.config import from_dict, to_dict
from dann.data.batches import Batch
from dann.errors import ConfigError
from dann.evaluate.metrics import evaluate
from dann.experiments import get_experiment, resolve_config
from dann.fit import fit
from dann.methods import METHODS, MethodConfig, StepContext, resolve_method_options
from dann.methods.adda import ADDAOptions
from dann.methods.alternating import generator_loss
from dann.methods.conditional import CDANOptions, MultilinearMap
from dann.methods.losses import class_imbalance, domain_loss
from dann.methods.teacher import DistributionAlignment, label_path
from dann.methods.vada import VADAOptions, virtual_adversarial_kl
from dann.models.network import DomainAdversarialNet, mlp, mlp_network
from dann.train.loop import TrainConfig
from dann.train.metrics_log import MetricsLog, read_metrics



pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _batch(n: int = 16) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        torch.randn(n, 2, generator=g),
        torch.randint(0, 3, (n,), generator=g),
        torch.randn(n, 2, generator=g) + 2,
        torch.randint(0, 3, (n,), generator=g),
    )


def _method(mode: str, **options):
    return make_method(mode, **options)


def _parts(method) -> dict[str, nn.Module]:
    parts = {
        "extractor": method.model.feature_extractor,
        "label": method.model.label_predictor,
        "domain": method.model.domain_classifier,
    }
    for name in ("target_encoder", "teacher"):
        if getattr(method, name, None) is not None:
            parts[name] = getattr(method, name)
    return parts


def _moved_by(method, stage: str, ctx: StepContext, batch: Batch | None = None) -> set[str]:
    """Which parts one stage changes, run exactly as the loop runs it (zero grad, loss, backward, step)."""
    batch = batch or _batch()
    method(batch, ctx, stage)  # let lazy state settle first (ADDA copies its target encoder at the switch)
    before = copy.deepcopy(method.state_dict())
    optimizer = torch.optim.SGD(method.parameter_groups()[stage], lr=0.1)
    optimizer.zero_grad(set_to_none=True)
    method(batch, ctx, stage).loss.backward()
    optimizer.step()
    moved = set()
    for part, module in _parts(method).items():
        prefix = next(name for name, m in method.named_modules() if m is module) + "."
        after = {key: value for key, value in method.state_dict().items() if key.startswith(prefix)}
        if any(not torch.equal(value, before[key]) for key, value in after.items()):
            moved.add(part)
    return moved


EARLY, LATE = StepContext(0, 0.1, 0.5), StepContext(90, 0.9, 0.5)


@pytest.mark.parametrize(
    "mode, ctx, stage, moves",
    [
        ("dann_alternating", LATE, "discriminator", {"domain"}),
        ("dann_alternating", LATE, "generator", {"extractor", "label"}),
        ("adda", EARLY, "source", {"extractor", "label"}),
        ("adda", LATE, "discriminator", {"domain"}),
        ("adda", LATE, "target", {"target_encoder"}),
        ("cdan", LATE, "model", {"extractor", "label", "domain"}),  # its own discriminator replaces the model's
        ("cdan_e", LATE, "model", {"extractor", "label", "domain"}),
        ("vada", LATE, "model", {"extractor", "label", "domain"}),
        ("dann_teacher", LATE, "model", {"extractor", "label", "domain"}),  # the teacher: never by gradient
    ],
)
def test_each_stage_moves_its_parameters_and_only_those(mode, ctx, stage, moves):
    method = _method(mode)
    assert stage in method.active_stages(ctx)
    assert _moved_by(method, stage, ctx) == moves


@pytest.mark.parametrize("mode", ["dann_alternating", "adda"])
def test_discriminator_stage_sends_no_gradient_into_the_features(mode):
    method = _method(mode)
    method(_batch(), LATE, "discriminator").loss.backward()
    for part in ("extractor", "label"):
        assert all(p.grad is None for p in _parts(method)[part].parameters())


def test_adda_phases_and_which_stages_run():
    method = _method("adda", pretrain_fraction=0.4)
    assert method.active_stages(StepContext(0, 0.39, 0.0)) == ("source",)
    assert method.active_stages(StepContext(0, 0.4, 0.0)) == ("discriminator", "target")
    x = _batch().target_x
    assert torch.equal(method.features(x, "target"), method.model.features(x))  # no target encoder yet


def test_adda_phase_two_leaves_source_encoder_and_classifier_alone(tmp_path):
    """Through the shared loop: weights at the phase switch (step 10) and at the end (step 20)."""
    data = get_experiment("blobs").load_data(resolve_config(get_experiment("blobs"), {}), None)
    method = _method("adda", pretrain_fraction=0.5)
    snapshots = []

    def snapshot(m):
        snapshots.append(copy.deepcopy(m.state_dict()))
        return {}

    cfg = TrainConfig(steps=20, batch_size=16, log_every=10, eval_every=10, checkpoint_every=0)
    with MetricsLog(tmp_path / "adda.jsonl") as log:
        fit(data, method, train_config=cfg, seed=0, log=log, evaluate=snapshot)
    at_switch, end = snapshots
    frozen = [k for k in end if k.startswith(("model.feature_extractor.", "model.label_predictor."))]
    assert frozen and all(torch.equal(at_switch[k], end[k]) for k in frozen)
    for prefix in ("target_encoder.", "model.domain_classifier."):
        assert any(not torch.equal(at_switch[k], end[k]) for k in end if k.startswith(prefix)), prefix
    # the target encoder started as a copy of the source encoder, then moved
    x = data.target_test.x[:50]
    assert not torch.allclose(method.features(x, "target"), method.features(x, "source"))
    rows = read_metrics(tmp_path / "adda.jsonl")
    assert [row["phase"] for row in rows] == [1.0, 2.0]
    assert "label_loss" in rows[0] and {"discriminator_loss", "generator_loss"} <= set(rows[1])


@pytest.mark.parametrize("mode", ["adda", "vada", "dann_teacher"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, mode):
    """Interrupted in ADDA's phase 2 (step 14, last checkpoint 12), resumed: same weights as one run.

    ADDA's phase flag and target encoder, VADA's random directions and the mean teacher come back
    with the checkpoint.
    """
    data = get_experiment("blobs").load_data(resolve_config(get_experiment("blobs"), {}), None)
    cfg = TrainConfig(steps=20, batch_size=16, log_every=1, eval_every=1, checkpoint_every=12)

    class Stop(Exception):
        pass

    def stop_at_14(method):
        if method_steps.pop(0) == 14:
            raise Stop
        return {}

    method_steps = list(range(1, 21))
    options = {"pretrain_fraction": 0.5} if mode == "adda" else {}
    interrupted = _method(mode, **options)
    with pytest.raises(Stop):
        fit(data, interrupted, train_config=cfg, seed=0, evaluate=stop_at_14, checkpoint=tmp_path / "ckpt.pt")
    resumed = _method(mode, **options)
    fit(data, resumed, train_config=cfg, seed=0, checkpoint=tmp_path / "ckpt.pt")
    straight = _method(mode, **options)
    fit(data, straight, train_config=cfg, seed=0)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.parametrize("mode", list(METHODS))
def test_stage_groups_are_disjoint_method_parameters(mode):
    method = _method(mode)
    groups = method.parameter_groups()
    assert set(groups) == set(method.stages)
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) and set(ids) <= {id(p) for p in method.parameters()}


def test_cdan_builds_the_discriminator_it_needs_and_no_other():
    method = _method("cdan")
    # features (8) x classes (3) = 24 inputs: the outer product, below the default threshold
    assert not method.conditional_map.randomised and method.conditional_map.out_features == 24
    # the model's domain classifier is CDAN's own, sized for the conditioned input: no unused head
    assert method.model.domain_classifier[0].in_features == 24
    trained = {id(p) for p in method.parameter_groups()["model"]}
    assert {id(p) for p in method.model.domain_classifier.parameters()} <= trained
    assert all(id(p) in trained for p in method.parameters() if p.requires_grad)


def test_multilinear_map_outer_product_and_its_random_approximation():
    f, g = torch.randn(5, 4), F.softmax(torch.randn(5, 3), 1)
    outer = MultilinearMap(4, 3, max_outer=12, random_dim=8)(f, g)
    assert outer.shape == (5, 12) and torch.allclose(outer.view(5, 3, 4), g[:, :, None] * f[:, None, :])
    torch.manual_seed(0)
    random_map = MultilinearMap(4, 3, max_outer=11, random_dim=50_000)
    assert random_map.randomised and random_map(f, g).shape == (5, 50_000)
    # inner products of the random map approximate those of the outer product
    assert torch.allclose(random_map(f, g) @ random_map(f, g).T, outer @ outer.T, rtol=0.1, atol=0.05)


def test_cdan_e_weights_favour_confident_samples_and_sum_to_one_per_domain():
    method = _method("cdan_e")
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 0], [0, 9.0, 0], [0, 0, 0.1]])
    labels = torch.tensor([0, 0, 1, 1])
    w = method.sample_weights(logits, labels)
    assert torch.allclose(torch.bincount(labels, weights=w), torch.ones(2))
    assert w[0] > w[1] and w[2] > w[3]


def test_virtual_adversarial_direction_beats_a_random_one():
    torch.manual_seed(0)
    model = mlp_network(2, 3, [32, 8], [8])
    x = 1.5 * torch.randn(256, 2)
    logits = model(x)
    adversarial = virtual_adversarial_kl(model, x, logits, epsilon=0.5)
    log_p = F.log_softmax(logits.detach(), 1)
    random = F.normalize(torch.randn_like(x), dim=1) * 0.5
    random_kl = (log_p.exp() * (log_p - F.log_softmax(model(x + random), 1))).sum(1)
    assert adversarial.shape == (256,) and (adversarial >= -1e-6).all()
    assert adversarial.mean() > 1.3 * random_kl.mean()


def _equivalent_ce_head(bce_head: nn.Linear) -> nn.Linear:
    """Two outputs ``(0, z)`` where the BCE head gives ``z``: softmax over them is ``(1 - sigmoid z, sigmoid z)``."""
    head = nn.Linear(bce_head.in_features, 2)
    with torch.no_grad():
        head.weight.copy_(torch.cat([torch.zeros_like(bce_head.weight), bce_head.weight]))
        head.bias.copy_(torch.cat([torch.zeros_like(bce_head.bias), bce_head.bias]))
    return head


@pytest.mark.parametrize("loss", ["domain", "flip", "uniform", "minimax"])
def test_bce_and_two_way_ce_give_the_same_feature_gradient(loss):
    torch.manual_seed(0)
    features = torch.randn(32, 8, requires_grad=True)
    labels = torch.cat([torch.zeros(16), torch.ones(16)]).long()
    bce_head = nn.Linear(8, 1)
    gradients = []
    for head in (bce_head, _equivalent_ce_head(bce_head)):
        logits = head(features)
        value = domain_loss(logits, labels) if loss == "domain" else generator_loss(logits, labels, loss)
        gradients.append(torch.autograd.grad(value, features)[0])
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6)
    assert F.cosine_similarity(gradients[0].flatten(), gradients[1].flatten(), dim=0) > 0.999


def test_bce_and_ce_push_features_the_same_way_with_different_heads():
    """With independently initialised heads the two losses differ, but push the features the same way on average."""
    torch.manual_seed(0)
    features = torch.randn(256, 8, requires_grad=True)
    labels = torch.cat([torch.zeros(128), torch.ones(128)]).long()
    # a discriminator that already separates the domains along one direction
    direction = torch.randn(8)
    bce_head, ce_head = nn.Linear(8, 1), nn.Linear(8, 2)
    with torch.no_grad():
        bce_head.weight.copy_(direction[None]), bce_head.bias.zero_()
        ce_head.weight.copy_(torch.stack([-direction / 2, direction / 2]) + 0.1 * torch.randn(2, 8))
        ce_head.bias.zero_()
    g_bce = torch.autograd.grad(domain_loss(bce_head(features), labels), features)[0]
    g_ce = torch.autograd.grad(domain_loss(ce_head(features), labels), features)[0]
    assert F.cosine_similarity(g_bce.flatten(), g_ce.flatten(), dim=0) > 0.9


def _loss(mode: str, ctx: StepContext = LATE, **options):
    method = _method(mode, **options)
    stage = method.active_stages(ctx)[-1]  # the stage that trains the features
    torch.manual_seed(1)  # VADA draws random directions
    return method(_batch(), ctx, stage)


@pytest.mark.parametrize("mode", list(METHODS))
def test_entropy_weight_adds_target_entropy_to_any_method(mode):
    off, on = _loss(mode), _loss(mode, entropy_weight=0.5)
    assert "target_entropy" in on.metrics
    assert torch.allclose(on.loss - off.loss, 0.5 * on.metrics["target_entropy"], atol=1e-5)


@pytest.mark.parametrize("mode", list(METHODS))
def test_class_balance_weight_adds_the_target_class_imbalance_to_any_method(mode):
    off, on = _loss(mode), _loss(mode, class_balance_weight=0.5)
    assert on.metrics["class_imbalance"] > 0
    assert torch.allclose(on.loss - off.loss, 0.5 * on.metrics["class_imbalance"], atol=1e-5)


def test_class_imbalance_is_zero_for_even_class_use_and_log_c_for_collapse():
    even = torch.eye(4) * 20.0  # four confident predictions, one per class
    collapsed = torch.zeros(4, 4).index_fill_(1, torch.tensor([2]), 20.0)  # all confident in class 2
    assert class_imbalance(even).item() == pytest.approx(0.0, abs=1e-6)
    assert class_imbalance(collapsed).item() == pytest.approx(math.log(4), abs=1e-6)
    # its gradient moves the over-used class's logit down and the unused classes' up
    logits = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]], requires_grad=True)
    class_imbalance(logits).backward()
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 2] < 0).all()


@pytest.mark.parametrize(
    "mode, key, factor",
    [
        ("dann", "domain_loss", 1.0),
        ("cdan", "domain_loss", 1.0),
        ("cdan_e", "domain_loss", 1.0),
        ("vada", "domain_loss", 1.0),
        ("dann_alternating", "generator_loss", LATE.lambda_),
        ("adda", "generator_loss", 1.0),
    ],
)
def test_transfer_weight_scales_the_adversarial_loss(mode, key, factor):
    off, on = _loss(mode, transfer_weight=0.0), _loss(mode, transfer_weight=2.0)
    assert on.metrics[key] > 0
    assert torch.allclose(on.loss - off.loss, 2.0 * factor * on.metrics[key], atol=1e-5)


@pytest.mark.parametrize("mode", ["source_only", "dann", "dann_alternating", "adda", "cdan", "vada"])
def test_label_smoothing_changes_the_label_loss(mode):
    ctx = EARLY if mode == "adda" else LATE
    plain, smooth = _loss(mode, ctx), _loss(mode, ctx, label_smoothing=0.2)
    batch = _batch()
    method = _method(mode)
    expected = F.cross_entropy(method.model(batch.source_x), batch.source_y, label_smoothing=0.2)
    assert torch.allclose(smooth.metrics["label_loss"], expected, atol=1e-6)
    assert not torch.allclose(smooth.metrics["label_loss"], plain.metrics["label_loss"])


def test_teacher_follows_the_student_as_a_moving_average():
    method = _method("dann_teacher", teacher_decay=0.9)
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)
    before = copy.deepcopy(method.teacher.network.state_dict())
    method(_batch(), LATE)
    student = label_path(method.model).state_dict()  # the teacher copies the label path alone
    assert set(student) == set(before)
    for key, teacher in method.teacher.network.state_dict().items():
        assert torch.allclose(teacher, 0.9 * before[key] + 0.1 * student[key], atol=1e-6), key


def test_pseudo_labels_are_the_confident_teacher_predictions_on_the_unaugmented_target():
    batch = _batch()
    batch.target_plain = -batch.target_x  # as if the loop had inverted every target image
    everyone = _method("dann_teacher", pseudo_label_threshold=0.0)(batch, LATE)
    method = _method("dann_teacher", pseudo_label_threshold=0.0)
    teacher_labels = method.teacher(batch.target_plain).argmax(1)
    assert not torch.equal(teacher_labels, method.teacher(batch.target_x).argmax(1))
    expected = F.cross_entropy(method.model(batch.target_x), teacher_labels)  # teacher == student at the start
    assert everyone.metrics["confident_fraction"] == 1.0
    assert torch.allclose(everyone.metrics["pseudo_label_loss"], expected, atol=1e-6)
    plain = _method("dann")(batch, LATE)
    assert torch.allclose(everyone.loss, plain.loss + LATE.lambda_ * expected, atol=1e-6)
    nobody = _method("dann_teacher", pseudo_label_threshold=0.999)(batch, LATE)  # an untrained net is never that sure
    assert nobody.metrics["confident_fraction"] == 0.0 and torch.allclose(nobody.loss, plain.loss)


def test_invalid_options_are_config_errors():
    for bad in ({"entropy_weight": -1.0}, {"class_balance_weight": -0.1}, {"label_smoothing": 1},
                {"teacher_decay": 1.0}, {"pseudo_label_threshold": -0.1}, {"pseudo_label_weight": -1.0}, {"transfer_weight": -1.0}):
        with pytest.raises(ConfigError):
            MethodConfig(**bad)
    for options_cls, bad in ((ADDAOptions, {"pretrain_fraction": 1.0}), (CDANOptions, {"random_dim": 0}), (VADAOptions, {"vat_epsilon": -1.0})):
        with pytest.raises(ConfigError):
            options_cls(**bad)


@pytest.mark.parametrize(
    "modes, section, message",
    [
        (["dann"], {"random_dim": 8}, "unknown config key 'method.random_dim'"),
        (["dann"], {"cdan": {"random_dim": 8}}, "method.cdan sets options for cdan, which is not among the modes"),
        (["dann"], {"dann": {"x": 1}}, "method.dann: dann has no options of its own"),
        (["cdan"], {"cdan": {"random_dimm": 8}}, "unknown config key 'method.cdan.random_dimm'"),
        (["adda", "dann"], {"self_training": True}, "self_training needs one-stage methods that take it; adda do not"),
    ],
)
def test_an_option_the_method_does_not_take_is_a_one_line_config_error(modes, section, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        resolve_method_options(from_dict(MethodConfig, section, prefix="method."), modes)
    assert "\n" not in str(err.value)


def test_a_methods_options_sit_under_its_name_and_are_filled_in():
    config = resolve_method_options(from_dict(MethodConfig, {"cdan": {"random_dim": 8}}), ["cdan", "cdan_e", "dann"])
    assert config.per_method == {"cdan": CDANOptions(random_dim=8), "cdan_e": CDANOptions()}
    assert to_dict(config)["cdan"]["random_dim"] == 8 and "per_method" not in to_dict(config)


# --- Blobs: the default study config, seed 0 -------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    experiment = get_experiment("blobs")
    cfg = resolve_config(experiment, {})
    data = experiment.load_data(cfg, None)
    results: dict[str, dict[str, float]] = {}

    def run(mode: str) -> dict[str, float]:
        if mode not in results:
            method_cfg = resolve_method_options(copy.deepcopy(cfg.method), [mode])
            fitted = fit(data, mode, model=cfg.model, config=method_cfg, train_config=cfg.train, seed=cfg.seed)
            results[mode] = evaluate(fitted.method, data, cfg.probe_samples, cfg.seed)
        return results[mode]

    return run


def test_alternating_dann_lands_in_danns_band(blobs):
    assert abs(blobs("dann_alternating")["target_acc"] - blobs("dann")["target_acc"]) <= 0.05


@pytest.mark.parametrize("mode", ["adda", "cdan", "cdan_e", "vada", "dann_teacher"])
def test_method_beats_source_only_on_blobs(blobs, mode):
    result = blobs(mode)
    assert result["source_acc"] >= 0.95
    assert result["target_acc"] >= blobs("source_only")["target_acc"] + 0.15


def test_cdan_bottleneck_conditions_on_the_label_predictors_last_hidden_layer():
    torch.manual_seed(0)
    label_predictor = mlp([8, 6, 3])
    model = DomainAdversarialNet(nn.Sequential(nn.Linear(2, 8), nn.ReLU()), label_predictor, mlp([8, 4, 1]))
    extractor_model = copy.deepcopy(model)
    method = make_method("cdan", model)
    # hidden (6) x classes (3): the discriminator's input; with extractor features it would be 8 x 3
    assert method.conditional_map.out_features == 18
    assert make_method("cdan", extractor_model, features="extractor").conditional_map.out_features == 24
    batch = _batch()
    features = model.features(torch.cat([batch.source_x, batch.target_x]))
    loss, _ = method.adversarial_loss(features, batch.domain_labels(), StepContext(1, 0.5, 1.0))
    loss.backward()
    # the adversarial gradient shapes the hidden layer, never the classifier (its predictions are detached)
    assert label_predictor[0].weight.grad.abs().sum() > 0
    assert label_predictor[-1].weight.grad is None


def test_cdan_dropout_sits_between_the_discriminators_hidden_layers_and_only_in_training():
    method = _method("cdan", dropout=0.5)
    discriminator = method.model.domain_classifier
    assert [type(m) for m in discriminator] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert not any(isinstance(m, nn.Dropout) for m in _method("cdan").model.domain_classifier)
    x = torch.randn(64, method.conditional_map.out_features)
    method.eval()
    assert torch.equal(discriminator(x), discriminator(x))
    method.train()
    assert not torch.equal(discriminator(x), discriminator(x))
    with pytest.raises(ConfigError, match="method.cdan.dropout"):
        CDANOptions(dropout=1.0)


@pytest.mark.parametrize("mode", ["source_only", "cdan_e", "vada"])
def test_self_training_is_an_option_of_every_one_stage_method(mode):
    plain = _method(mode)(_batch(), LATE)
    method = _method(mode, self_training=True, pseudo_label_threshold=0.0)
    out = method(_batch(), LATE)
    assert plain.metrics.keys() < out.metrics.keys() and out.metrics["confident_fraction"] == 1.0
    assert out.loss > plain.loss  # the pseudo-label loss of an untrained student is positive
    trained = {id(p) for p in method.parameter_groups()["model"]}
    assert not {id(p) for p in method.teacher.parameters()} & trained


@pytest.mark.parametrize("mode", ["target_only", "dann_alternating", "adda"])
def test_self_training_on_a_method_that_cannot_take_it_is_a_config_error(mode):
    with pytest.raises(ConfigError, match="self_training"):
        _method(mode, self_training=True)


def test_pseudo_label_threshold_is_a_fraction_of_the_confidence_label_smoothing_allows(monkeypatch):
    method = _method("dann_teacher", label_smoothing=0.3, pseudo_label_threshold=0.9)
    original, thresholds = method.teacher.pseudo_label_loss, []

    def spy(logits, plain_target, threshold, *rest):
        thresholds.append(threshold)
        return original(logits, plain_target, threshold, *rest)

    monkeypatch.setattr(method.teacher, "pseudo_label_loss", spy)
    method(_batch(), LATE)
    # 3 classes, smoothing 0.3: the smoothed target of the true class is 0.7 + 0.3 / 3 = 0.8
    assert thresholds == [pytest.approx(0.9 * 0.8)]


def test_smooth_pseudo_labels_gives_them_the_source_labels_smoothing():
    batch = _batch()
    batch.target_plain = batch.target_x
    method = _method("dann_teacher", label_smoothing=0.2, pseudo_label_threshold=0.0)  # the default
    teacher_labels = method.teacher(batch.target_x).argmax(1)
    expected = F.cross_entropy(method.model(batch.target_x), teacher_labels, label_smoothing=0.2)
    out = method(batch, LATE)
    assert torch.allclose(out.metrics["pseudo_label_loss"], expected, atol=1e-6)
    hard = _method("dann_teacher", label_smoothing=0.2, pseudo_label_threshold=0.0, smooth_pseudo_labels=False)(batch, LATE)
    assert not torch.allclose(hard.metrics["pseudo_label_loss"], expected, atol=1e-4)


def test_distribution_alignment_moves_target_class_use_to_the_sources():
    align = DistributionAlignment(3, decay=0.0)  # decay 0: the running averages are this batch's
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    source_labels = torch.tensor([0, 1, 2, 0, 1, 2])  # the source uses the classes evenly
    aligned = align(probs, source_labels)
    scaled = probs * (torch.full((3,), 1 / 3) / probs.mean(0))
    assert torch.allclose(aligned, scaled / scaled.sum(1, keepdim=True))
    assert torch.allclose(aligned.sum(1), torch.ones(4))
    # class 0, over-used on the target, loses: the third image's label moves to class 1, and the
    # second image falls below a 0.8 threshold it passed before
    assert aligned.argmax(1).tolist() == [0, 0, 1, 2]
    assert probs[1, 0] >= 0.8 > aligned[1, 0]
    # target already used like the source: nothing changes; eval mode leaves the averages alone
    align.eval()
    align.target_mean.copy_(align.source_frequency)
    assert torch.allclose(align(probs, torch.tensor([0, 0, 0])), probs)
    assert torch.allclose(align.source_frequency, torch.full((3,), 1 / 3))


def test_align_pseudo_labels_gives_the_teacher_an_alignment_and_uses_the_source_labels(monkeypatch):
    assert _method("dann_teacher").teacher.alignment is None
    method = _method("dann_teacher", align_pseudo_labels=True, pseudo_label_threshold=0.0)
    assert "regularisers.teacher.alignment.target_mean" in method.state_dict()
    seen = []
    original = method.teacher.alignment.forward

    def spy(probs, source_labels):
        seen.append(source_labels)
        return original(probs, source_labels)

    monkeypatch.setattr(method.teacher.alignment, "forward", spy)
    batch = _batch()
    method(batch, LATE)
    assert len(seen) == 1 and torch.equal(seen[0], batch.source_y)
    assert not torch.allclose(method.teacher.alignment.target_mean, torch.full_like(method.teacher.alignment.target_mean, 1 / 3))


@pytest.mark.parametrize("features", ["bottleneck", "extractor"])
def test_cdan_keeps_each_weight_once_in_its_state_dict(features):
    torch.manual_seed(0)
    model = DomainAdversarialNet(nn.Sequential(nn.Linear(2, 8), nn.ReLU()), mlp([8, 6, 3]), mlp([8, 4, 1]))
    method = make_method("cdan", model, features=features)
    state = method.state_dict()
    assert len({t.data_ptr() for t in state.values()}) == len(state)
    # a deep copy (the moving average of the weights is one) still uses the copied model's layers
    clone = copy.deepcopy(method)
    head = clone.model.label_predictor[-1] if features == "bottleneck" else clone.model.label_predictor
    assert clone.classifier_parts[1] is head and set(clone.state_dict()) == set(state)

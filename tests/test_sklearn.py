import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from dann.data.blobs import BlobsConfig, make_blobs_domains
from dann.evaluate.metrics import extract_features
from dann.experiments.blobs import Blobs, BlobsStudyConfig
from dann.fit import fit
from dann.methods import METHODS
from dann.models.network import DomainAdversarialNet, mlp
from dann.sklearn import DANNClassifier, NoTargetDataWarning, adaptation_modes

#: Checks that may fail for a reason that is not a bug (non-strict xfail); see the README's sklearn section.
EXPECTED_FAILED_CHECKS = {
    "check_methods_subset_invariance": (
        "float32 network: a row's outputs change at the 1e-7 level with the batch it is computed in "
        "(BLAS blocking), and the check's tolerance is 1e-7; passes or fails with the weights"
    ),
}


def blobs(seed: int = 0):
    """Blobs as arrays: labelled source and unlabelled target (train splits), and the target test split to score on."""
    data = make_blobs_domains(BlobsConfig(), seed)
    return (
        data.source_train.x.numpy(),
        data.source_train.y.numpy(),
        data.target_train.x.numpy(),
        data.target_test.x.numpy(),
        data.target_test.y.numpy(),
    )


def small_problem(n: int = 60, seed: int = 0):
    """Three shifted classes in 4-D, source and target, labels that are neither 0.. nor contiguous."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4)) + 3 * y[:, None]
    X_target = rng.normal(size=(n, 4)) + 3 * rng.integers(0, 3, n)[:, None] + 1.0
    return X, np.array([3, 7, 11])[y], X_target


FAST = dict(steps=30, lr=0.05, random_state=0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks on shared cores: one thread is fastest, and a busy machine makes more threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def study_params(cfg: BlobsStudyConfig) -> dict:
    """The estimator parameters that train like the Blobs study's config."""
    return dict(
        hidden=tuple(cfg.model.options.hidden), domain_hidden=tuple(cfg.model.domain_hidden), steps=cfg.train.steps,
        batch_size=cfg.train.batch_size, lr=cfg.train.lr, lambda_max=cfg.train.lambda_max, random_state=cfg.seed,
    )


def test_trains_exactly_like_the_blobs_study():
    """Same seed, network, loop and batches as ``dann run blobs``: the same weights, bit for bit."""
    cfg = BlobsStudyConfig()
    cfg.train.steps = 40
    data = Blobs().load_data(cfg, None)
    method = fit(data, "dann", model=cfg.model, config=cfg.method, train_config=cfg.train, seed=cfg.seed).method
    est = DANNClassifier(standardize=False, **study_params(cfg))  # the study feeds raw coordinates
    est.fit(data.source_train.x.numpy(), data.source_train.y.numpy(), X_target=data.target_train.x.numpy())
    expected = extract_features(method, data.target_test.x, data.prepare, "target").numpy()
    np.testing.assert_array_equal(est.transform(data.target_test.x.numpy()), expected)


def test_blobs_pipeline_dann_beats_source_only_in_the_study_band():
    """The study's settings in a Pipeline, seed 0, scored on target test.

    Measured over seeds 0-9 with this pipeline: source_only 0.62-0.81, dann 0.97-1.00 (the
    study itself, raw coordinates: source_only 0.61-0.78, dann 0.99-1.00 in 8 of 10 seeds).
    The study's own test asks dann >= source_only + 0.10.
    """
    Xs, ys, Xt, X_test, y_test = blobs(seed=0)
    X, y = np.concatenate([Xs, Xt]), np.r_[ys, np.full(len(Xt), -1)]
    scores = {}
    for mode in ("source_only", "dann"):
        est = DANNClassifier(mode=mode, unlabeled_label=-1, **study_params(BlobsStudyConfig()))
        scores[mode] = Pipeline([("scale", StandardScaler()), ("dann", est)]).fit(X, y).score(X_test, y_test)
    assert 0.6 <= scores["source_only"] <= 0.85
    assert scores["dann"] >= 0.95
    assert scores["dann"] >= scores["source_only"] + 0.10


def test_pipeline_target_rows_pass_through_earlier_steps():
    Xs, ys, Xt, _, _ = blobs()
    X, y = np.concatenate([Xs, Xt]), np.r_[ys, np.full(len(Xt), -1)]
    pipe = Pipeline([("scale", StandardScaler()), ("dann", DANNClassifier(unlabeled_label=-1, **FAST))]).fit(X, y)
    np.testing.assert_allclose(pipe.named_steps["scale"].mean_, X.mean(0), atol=1e-6)
    assert list(pipe.named_steps["dann"].classes_) == [0, 1, 2]  # the marker is not a class


def test_pipeline_routes_x_target_to_the_estimator_untransformed():
    """The documented pitfall: ``dann__X_target`` skips the scaler, which sees the source alone."""
    Xs, ys, Xt, _, _ = blobs()
    routed = Pipeline([("scale", StandardScaler()), ("dann", DANNClassifier(**FAST))]).fit(Xs, ys, dann__X_target=Xt)
    source_scaler = routed.named_steps["scale"]
    np.testing.assert_allclose(source_scaler.mean_, Xs.mean(0), atol=1e-6)
    direct = DANNClassifier(**FAST).fit(source_scaler.transform(Xs), ys, X_target=Xt)
    np.testing.assert_array_equal(routed.predict_proba(Xt), direct.predict_proba(source_scaler.transform(Xt)))


def test_target_rows_and_x_target_are_the_same_target():
    """String labels with -1 for unlabelled rows in an object array: the sklearn.semi_supervised convention."""
    X, y, Xt = small_problem()
    names = np.array(["a", "b", "c"], dtype=object)[np.searchsorted([3, 7, 11], y)]
    as_rows = DANNClassifier(unlabeled_label=-1, **FAST).fit(np.concatenate([X, Xt]), np.r_[names, [-1] * len(Xt)])
    as_arg = DANNClassifier(**FAST).fit(X, names, X_target=Xt)
    assert list(as_rows.classes_) == ["a", "b", "c"]
    np.testing.assert_array_equal(as_rows.predict_proba(Xt), as_arg.predict_proba(Xt))


def test_clone_and_get_params_round_trip():
    est = DANNClassifier(mode="dann_deep", hidden=(8,), deep_domain_hidden=(4, 4), steps=7, lr=0.05, random_state=5)
    params = est.get_params()
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    assert est.set_params(steps=9) is est and est.get_params()["steps"] == 9
    fitted = DANNClassifier(**FAST).fit(*small_problem()[:2], X_target=small_problem()[2])
    assert not hasattr(clone(fitted), "classes_")


def test_fixed_random_state_gives_identical_refits_and_leaves_torch_rng_alone():
    X, y, Xt = small_problem()
    est = DANNClassifier(**FAST)
    torch_state = torch.random.get_rng_state()
    first = est.fit(X, y, X_target=Xt).predict_proba(X)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(est.fit(X, y, X_target=Xt).predict_proba(X), first)
    np.testing.assert_array_equal(clone(est).fit(X, y, X_target=Xt).predict_proba(X), first)
    other = clone(est).set_params(random_state=1).fit(X, y, X_target=Xt).predict_proba(X)
    assert not np.array_equal(other, first)


def test_probabilities_follow_classes_and_sum_to_one():
    X, y, Xt = small_problem()
    labels = np.array(["emu", "cat", "dog"])[np.searchsorted([3, 7, 11], y)]
    est = DANNClassifier(**FAST).fit(X, labels, X_target=Xt)
    proba = est.predict_proba(Xt)
    assert list(est.classes_) == ["cat", "dog", "emu"]
    assert proba.shape == (len(Xt), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.classes_[proba.argmax(1)], est.predict(Xt))
    np.testing.assert_array_equal(est.decision_function(Xt).argmax(1), proba.argmax(1))


def test_transform_gives_the_learned_features():
    X, y, Xt = small_problem()
    est = DANNClassifier(hidden=(16, 5), **FAST).fit(X, y, X_target=Xt)
    features = est.transform(Xt)
    assert features.shape == (len(Xt), 5) and features.dtype == np.float32
    assert list(est.get_feature_names_out()) == [f"dannclassifier{i}" for i in range(5)]
    assert est.n_features_in_ == 4 and est.n_iter_ == FAST["steps"]


def test_binary_decision_function_is_the_margin_of_the_second_class():
    X, y, Xt = small_problem()
    keep = y != 11
    est = DANNClassifier(**FAST).fit(X[keep], y[keep], X_target=Xt)
    decision = est.decision_function(X)
    assert decision.shape == (len(X),)
    np.testing.assert_array_equal(est.classes_[(decision > 0).astype(int)], est.predict(X))


def test_images_get_the_paper_cnn_with_any_number_of_classes():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, (12, 1, 28, 28))
    y = np.arange(12) % 3
    est = DANNClassifier(steps=2, batch_size=8, random_state=0).fit(X, y, X_target=X + 10)
    assert est.predict_proba(X).shape == (12, 3)
    assert est.transform(X).shape == (12, 7 * 7 * 48)
    assert est.input_mean_.shape == (1, 1, 1, 1)  # per channel
    with pytest.raises(ValueError, match=r"samples of shape \(1, 14, 56\), but DANNClassifier was fitted on \(1, 28, 28\)"):
        est.predict(X.reshape(12, 1, 14, 56))


def test_custom_network_for_other_shapes():
    def network(shape, n_classes, n_domain_outputs):
        n_inputs = int(np.prod(shape))
        return DomainAdversarialNet(
            nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, 8), nn.ReLU()), nn.Linear(8, n_classes), mlp([8, n_domain_outputs])
        )

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 2, 5, 5)), np.arange(20) % 2
    with pytest.raises(ValueError, match="network lenet takes images .n, C, H, W. with H and W multiples of 4"):
        DANNClassifier(steps=2).fit(X, y, X_target=X)
    est = DANNClassifier(network=network, steps=2).fit(X, y, X_target=X)
    assert est.transform(X).shape == (20, 8)
    with pytest.raises(TypeError, match="must return a DomainAdversarialNet"):
        DANNClassifier(network=lambda *args: nn.Linear(2, 2), steps=2).fit(X, y, X_target=X)


def test_every_registered_mode_without_target_labels_fits():
    X, y, Xt = small_problem()
    modes = adaptation_modes()
    assert {"source_only", "dann", "domain_only", "dann_deep"} <= set(modes)
    assert not {name for name, entry in METHODS.items() if entry.cls.uses_target_labels} & set(modes)
    for mode in modes:
        assert DANNClassifier(mode=mode, steps=4).fit(X, y, X_target=Xt).predict(Xt).shape == (len(Xt),)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"mode": "target_only"}, "'target_only' reads target labels.*choose from source_only, dann"),
        ({"mode": "nope"}, "'nope' is not a registered method"),
        ({"optimizer": "rmsprop"}, "'optimizer' must be one of 'sgd', 'adam'"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"domain_loss": "mse"}, "'domain_loss' must be one of 'bce', 'ce'"),
        ({"method_options": {"nope": 1}}, "unknown method option 'nope' for mode 'dann'"),
        ({"method_options": {"transfer_weight": 2.0}}, "transfer_weight is a parameter of its own"),
    ],
)
def test_bad_hyperparameters_raise_value_error_at_fit(params, match):
    X, y, Xt = small_problem()
    est = DANNClassifier(**params)  # __init__ stores, never checks
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, X_target=Xt)


def test_bad_inputs_raise_sklearn_style_errors():
    X, y, Xt = small_problem()
    est = DANNClassifier(steps=2)
    for method in (est.predict, est.predict_proba, est.decision_function, est.transform):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(ValueError, match="X_target has 3 features, but X has 4 features"):
        est.fit(X, y, X_target=Xt[:, :3])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(np.where(X > 5, np.nan, X), y, X_target=Xt)
    with pytest.raises(ValueError, match="Input X_target contains infinity"):
        est.fit(X, y, X_target=np.where(Xt > 5, np.inf, Xt))
    with pytest.raises(ValueError, match="could not convert"):
        est.fit(X.astype(str).astype(object) + "x", y, X_target=Xt)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        est.fit(X[:, 0], y, X_target=Xt)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1], X_target=Xt)
    with pytest.raises(ValueError, match="y has 1 class"):
        est.fit(X, np.full(len(X), 7), X_target=Xt)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        est.fit(X, X[:, 0], X_target=Xt)
    with pytest.raises(ValueError, match="no labelled source"):
        DANNClassifier(unlabeled_label=-1, steps=2).fit(X, np.full(len(X), -1))
    est.fit(X, y, X_target=Xt)
    with pytest.raises(ValueError, match="X has 3 features, but DANNClassifier is expecting 4 features"):
        est.predict(X[:, :3])


def test_unseen_labels_in_score_count_as_wrong():
    X, y, Xt = small_problem()
    est = DANNClassifier(**FAST).fit(X, y, X_target=Xt)
    correct = est.predict(X) == y
    unseen = y.copy()
    unseen[:10] = 99
    assert est.score(X, unseen) == pytest.approx(correct[10:].sum() / len(y))


def test_missing_target_warns_and_trains_without_adaptation():
    X, y, _ = small_problem()
    with pytest.warns(NoTargetDataWarning, match="without domain adaptation"):
        DANNClassifier(steps=2).fit(X, y)


@pytest.mark.filterwarnings("ignore::dann.sklearn.NoTargetDataWarning")  # the checks call fit(X, y)
@parametrize_with_checks(
    [DANNClassifier(steps=20, lr=0.1)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS, xfail_strict=False
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_ema_decay_predicts_with_averaged_weights():
    X, y, Xt = small_problem()
    plain = DANNClassifier(**FAST).fit(X, y, X_target=Xt)
    averaged = DANNClassifier(ema_decay=0.9, **FAST).fit(X, y, X_target=Xt)
    assert averaged.predict_proba(Xt).shape == (len(Xt), 3)
    assert not np.allclose(averaged.predict_proba(Xt), plain.predict_proba(Xt))
    with pytest.raises(Exception, match=r"ema_decay must be in \[0, 1\)"):
        DANNClassifier(ema_decay=1.0, **FAST).fit(X, y, X_target=Xt)

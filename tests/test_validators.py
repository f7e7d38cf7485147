"""Label-free validators: each on a constructed case whose right answer is known, and none can see target labels."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score

from dann.errors import ConfigError, DataError
from dann.select import VALIDATORS, LabelledOutputs, Outputs, get_validator, importance_weights, make_scorer

C = 4  # classes in the cluster cases


def _clusters(n: int, seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` points around ``C`` well-separated centres in 8-D: (features, cluster of each point, centres)."""
    g = torch.Generator().manual_seed(seed)
    centres = 6.0 * torch.eye(C, 8, dtype=torch.float64)
    cluster = torch.arange(n) % C
    return centres[cluster] + spread * torch.randn(n, 8, generator=g, dtype=torch.float64), cluster, centres


def _nearest_centre(centres: torch.Tensor):
    """A model that follows the clusters: logits ``-||x - c_k||^2 / 2``."""
    return lambda x: -0.5 * torch.cdist(x.double(), centres) ** 2


def _scrambled(x: torch.Tensor) -> torch.Tensor:
    """A model that ignores the geometry: confident logits that jump about with every input."""
    code = (torch.sin(x.double() @ torch.arange(1.0, 9.0, dtype=torch.float64) * 997.0) * 1e4).long() % C
    return 8.0 * torch.nn.functional.one_hot(code, C).double()


def _all_inputs(n: int = 120, seed: int = 0):
    """Source and target outputs of the nearest-centre model, with everything any validator reads."""
    x_s, y_s, centres = _clusters(n, seed)
    x_t, _, _ = _clusters(n, seed + 1, spread=1.5)
    model = _nearest_centre(centres)
    source = LabelledOutputs(model(x_s), x_s, x_s, labels=y_s)
    return source, Outputs(model(x_t), x_t, x_t), model


def _score(name: str, source=None, target=None, predict=None, **options) -> float:
    return get_validator(name, **options)(source, target, predict)


# --- prediction-only validators ---------------------------------------------------------------

CONFIDENT_BALANCED = 50.0 * torch.eye(C).repeat(10, 1)
COLLAPSED = 50.0 * torch.eye(C)[[0] * 40]
UNCERTAIN = torch.zeros(40, C)


def test_source_acc_is_exact_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    source = LabelledOutputs(logits, labels=torch.tensor([0, 1, 1, 1, 1]))
    assert _score("source_acc", source) == pytest.approx(3 / 5)


def test_entropy_prefers_confident_predictions():
    assert _score("entropy", target=Outputs(CONFIDENT_BALANCED)) == pytest.approx(0.0, abs=1e-9)
    assert _score("entropy", target=Outputs(UNCERTAIN)) == pytest.approx(-math.log(C))
    half_sure = Outputs(torch.tensor([[2.0, 0.0, 0.0, 0.0]]).repeat(40, 1))
    assert _score("entropy", target=Outputs(UNCERTAIN)) < _score("entropy", target=half_sure) < 0


def test_im_rewards_confident_balanced_predictions_and_penalises_collapse():
    assert _score("im", target=Outputs(CONFIDENT_BALANCED)) == pytest.approx(math.log(C))
    assert _score("im", target=Outputs(COLLAPSED)) == pytest.approx(0.0, abs=1e-9)
    assert _score("im", target=Outputs(UNCERTAIN)) == pytest.approx(0.0, abs=1e-9)
    assert _score("entropy", target=Outputs(COLLAPSED)) == pytest.approx(0.0, abs=1e-9)  # what entropy misses


def test_bnm_prefers_confident_and_diverse_predictions():
    n = len(CONFIDENT_BALANCED)
    best = _score("bnm", target=Outputs(CONFIDENT_BALANCED))
    assert best == pytest.approx(math.sqrt(C / n))  # C orthogonal columns of norm sqrt(n / C)
    assert _score("bnm", target=Outputs(COLLAPSED)) == pytest.approx(1 / math.sqrt(n))  # rank 1
    assert _score("bnm", target=Outputs(UNCERTAIN)) == pytest.approx(1 / math.sqrt(C * n))  # rank 1, smaller norm
    two_classes = Outputs(50.0 * torch.eye(C)[[0, 1] * 20])
    assert _score("bnm", target=Outputs(COLLAPSED)) < _score("bnm", target=two_classes) < best


# --- structure validators -----------------------------------------------------------------------


def test_snd_prefers_predictions_that_follow_the_clusters():
    x, _, centres = _clusters(400, seed=0)
    following = _score("snd", target=Outputs(_nearest_centre(centres)(x)))
    g = torch.Generator().manual_seed(1)
    random_predictions = _score("snd", target=Outputs(3.0 * torch.randn(400, C, generator=g, dtype=torch.float64)))
    assert following > random_predictions + 0.25
    assert following == pytest.approx(math.log(400 / C - 1), abs=0.05)  # spread evenly over its own cluster


def test_snd_subsamples_to_max_samples():
    x, _, centres = _clusters(300, seed=0)
    target = Outputs(_nearest_centre(centres)(x))
    assert _score("snd", target=target, max_samples=100) == pytest.approx(math.log(100 / C), abs=0.3)


def test_class_ami_prefers_predictions_that_follow_the_clusters():
    x, cluster, centres = _clusters(400, seed=0)
    g = torch.Generator().manual_seed(1)
    following = Outputs(_nearest_centre(centres)(x), x)
    random_predictions = Outputs(torch.randn(400, C, generator=g, dtype=torch.float64), x)
    assert _score("class_ami", target=following) > 0.95
    assert abs(_score("class_ami", target=random_predictions)) < 0.05


def test_mixval_prefers_a_model_whose_decisions_follow_the_clusters():
    x, _, centres = _clusters(400, seed=0)
    model = _nearest_centre(centres)
    score = {
        (part, name): _score("mixval", target=Outputs(predict(x), inputs=x), predict=predict, part=part)
        for part in ("intra", "inter", "both")
        for name, predict in (("following", model), ("scrambled", _scrambled))
    }
    assert score["intra", "following"] == 1.0  # a mix of two points of one cluster stays in it
    for part in ("intra", "inter", "both"):
        assert score[part, "following"] > score[part, "scrambled"] + 0.4, part
        assert score[part, "scrambled"] < 0.35, part  # chance is 1 / C


def test_mixval_needs_the_model_and_the_inputs():
    x, _, centres = _clusters(40, seed=0)
    model = _nearest_centre(centres)
    with pytest.raises(DataError, match="predict"):
        _score("mixval", target=Outputs(model(x), inputs=x))
    with pytest.raises(DataError, match="inputs"):
        _score("mixval", target=Outputs(model(x)), predict=model)
    collapsed = lambda inputs: torch.zeros(len(inputs), C).index_fill_(1, torch.tensor([0]), 1.0)  # noqa: E731
    assert _score("mixval", target=Outputs(collapsed(x), inputs=x), predict=collapsed, part="inter") == 0.0


# --- DEV and DEVN ---------------------------------------------------------------------------------


def _shifted_gaussians(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Source N(0, 1) and target N(1, 1) in 1-D, as (n, 1) features: the true ratio is exp(x - 1/2)."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return source, 1.0 + torch.randn(n, 1, generator=g, dtype=torch.float64)


def test_importance_weights_match_the_true_density_ratio():
    source, target = _shifted_gaussians()
    weights = importance_weights(source, target)
    x = source[:, 0]
    true = torch.exp(x - 0.5)
    assert np.corrcoef(weights.log().numpy(), true.log().numpy())[0, 1] > 0.999
    central = x.abs() < 1.5
    relative_error = ((weights - true).abs() / true)[central]
    assert relative_error.median() < 0.05 and relative_error.max() < 0.25


def test_dev_ranks_the_model_right_where_the_target_lives_above_the_one_wrong_there():
    source, target = _shifted_gaussians()
    x = source[:, 0]
    labels = (x > 0).long()

    def outputs_wrong_where(wrong: torch.Tensor) -> LabelledOutputs:
        predicted = torch.where(wrong, 1 - labels, labels)
        return LabelledOutputs(4.0 * torch.nn.functional.one_hot(predicted, 2).double(), source, labels=labels)

    right_on_target = outputs_wrong_where(x < -0.5)  # wrong only where the target is sparse
    wrong_on_target = outputs_wrong_where(x > 0.5)  # wrong where the target is dense
    target_outputs = Outputs(torch.zeros(len(target), 2, dtype=torch.float64), target)
    accuracy = [_score("source_acc", m) for m in (right_on_target, wrong_on_target)]
    assert abs(accuracy[0] - accuracy[1]) < 0.05  # the source alone cannot tell them apart
    for name in ("dev", "devn"):
        assert _score(name, right_on_target, target_outputs) > _score(name, wrong_on_target, target_outputs) + 0.5, name


def test_dev_and_devn_are_the_control_variate_risk_of_the_paper():
    source, target = _shifted_gaussians(n=300)
    labels = (source[:, 0] > 0).long()
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 2, generator=g, dtype=torch.float64)
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    raw = importance_weights(source, target).numpy()
    for name, w in (("dev", raw), ("devn", raw / raw.max())):
        eta = -np.cov(w * losses, w)[0, 1] / w.var(ddof=1)
        risk = (w * losses).mean() + eta * w.mean() - eta
        outputs = (LabelledOutputs(logits, source, labels=labels), Outputs(torch.zeros(300, 2), target))
        assert _score(name, *outputs) == pytest.approx(-risk), name


def test_dev_refuses_too_few_samples_for_its_folds():
    source, target = _shifted_gaussians(n=3)
    labelled = LabelledOutputs(torch.zeros(3, 2), source, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="at least 5"):
        _score("dev", labelled, Outputs(torch.zeros(3, 2), target))


# --- no validator can read target labels -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_a_target_split_with_labels_is_refused(name):
    source, target, model = _all_inputs()
    labelled_target = LabelledOutputs(target.logits, target.features, target.inputs, labels=target.logits.argmax(1))
    with pytest.raises(DataError, match="target_val carries labels"):
        _score(name, source, labelled_target, model)


class _LabelSpy(Outputs):
    """Target outputs that record every read of a ``labels`` attribute."""

    reads: list = []

    @property
    def labels(self):
        _LabelSpy.reads.append(1)
        return torch.zeros(len(self), dtype=torch.long)


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_no_validator_reads_a_labels_attribute_of_the_target(name, monkeypatch):
    source, target, model = _all_inputs()
    monkeypatch.setattr(_LabelSpy, "reads", [])
    spy = _LabelSpy(target.logits, target.features, target.inputs)
    assert _score(name, source, spy, model) == _score(name, source, target, model)
    assert _LabelSpy.reads == []


# --- registry, determinism, layering -----------------------------------------------------------------


def test_get_validator_names_the_known_ones():
    with pytest.raises(ConfigError) as error:
        get_validator("nosuch")
    assert all(name in str(error.value) for name in VALIDATORS)
    with pytest.raises(ConfigError, match="temperature"):
        get_validator("snd", temprature=0.1)
    with pytest.raises(ConfigError, match="lam"):
        get_validator("mixval", lam=0.4)


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_each_validator_is_deterministic_for_a_fixed_seed(name):
    source, target, model = _all_inputs()
    assert _score(name, source, target, model) == _score(name, source, target, model)


def test_the_package_imports_only_torch_numpy_sklearn_scipy_and_dann_errors():
    standard_library = {"__future__", "abc", "collections", "dataclasses", "math", "typing"}
    allowed = {"torch", "numpy", "sklearn", "scipy"} | standard_library
    package = Path(__file__).parents[1] / "src" / "dann" / "select"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) else []
            for module in names:
                inside = module == "dann.errors" or module.startswith("dann.select.")
                assert inside or module.split(".")[0] in allowed, (path.name, module)


# --- scikit-learn scorers ------------------------------------------------------------------------------


class _StubClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on the labelled rows (``y != -1``); its features are the inputs themselves."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        labelled = np.asarray(y) != -1
        self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(X[labelled], y[labelled])
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)

    def transform(self, X):
        return np.asarray(X, dtype=np.float64)


def _semi_labelled(n: int = 240, seed: int = 0):
    """Labelled source clusters (labels 10, 20, 30, 40) and unlabelled target rows (y = -1) in one X."""
    x_s, cluster_s, _ = _clusters(n, seed)
    x_t, _, _ = _clusters(n, seed + 1, spread=1.5)
    y = np.r_[10 * (cluster_s.numpy() + 1), -np.ones(n, dtype=int)]
    return np.r_[x_s.numpy(), x_t.numpy()], y


def test_source_acc_scorer_is_accuracy_on_the_labelled_rows_in_cross_val_score():
    X, y = _semi_labelled()
    scores = cross_val_score(_StubClassifier(), X, y, scoring=make_scorer("source_acc"), cv=3)
    fitted = _StubClassifier().fit(X, y)
    labelled = y != -1
    assert make_scorer("source_acc")(fitted, X, y) == pytest.approx((fitted.predict(X[labelled]) == y[labelled]).mean())
    assert len(scores) == 3 and all(0.9 <= s <= 1.0 for s in scores)


def test_grid_search_with_a_target_only_scorer_prefers_the_confident_model():
    X, y = _semi_labelled()
    search = GridSearchCV(_StubClassifier(), {"C": [1e-5, 1.0]}, scoring=make_scorer("im"), cv=3).fit(X, y)
    assert search.best_params_ == {"C": 1.0}


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_every_validator_works_as_a_scorer(name):
    X, y = _semi_labelled(n=80)
    fitted = _StubClassifier().fit(X, y)
    assert math.isfinite(make_scorer(name)(fitted, X, y))


def test_scorer_errors_name_the_missing_rows():
    X, y = _semi_labelled(n=40)
    fitted = _StubClassifier().fit(X, y)
    with pytest.raises(DataError, match="no row has y == -1"):
        make_scorer("im")(fitted, X[y != -1], y[y != -1])
    with pytest.raises(DataError, match="labelled source rows"):
        make_scorer("dev")(fitted, X, np.full(len(y), -1))
    with pytest.raises(DataError, match="not among the estimator's classes"):
        make_scorer("source_acc")(fitted, X, np.where(y == 10, 99, y))

"""A scikit-learn estimator for unsupervised domain adaptation: :class:`DANNClassifier`.

The estimator is a thin shell: it validates and standardises arrays, builds a network, and
hands everything to the same registry of methods and the same training loop the studies use,
so a model fitted here is trained exactly like ``dann run`` trains it.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import Tags, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from dann.config import from_dict, to_dict
from dann.data.domains import DomainData, Split, identity
from dann.evaluate.metrics import extract_features
from dann.fit import fit
from dann.methods import METHODS, MethodConfig, get_method, resolve_method_options
from dann.models.frozen import backbone_features, is_frozen_backbone
from dann.models.network import DomainAdversarialNet
from dann.models.backbones import Preprocessing, backbone_preprocessing
from dann.models.registry import ModelConfig, NetworkRequest, backbone_arch
from dann.train.device import resolve_device
from dann.train.loop import TrainConfig

if TYPE_CHECKING:
    from dann.experiments import Experiment, StudyConfig

Transform = Callable[[torch.Tensor], torch.Tensor]

#: ``network(n_features or sample shape, n_classes, n_domain_outputs)`` -> a fresh network
NetworkFactory = Callable[[Any, int, int], DomainAdversarialNet]


#: the largest batch of ``batch_size="auto"``
AUTO_BATCH_SIZE = 64


class NoTargetDataWarning(UserWarning):
    """``fit`` got no target samples, so it trained on the source alone: no adaptation."""


def adaptation_modes() -> list[str]:
    """The registered modes that never read target labels: the ones an estimator can fit."""
    return [name for name, entry in METHODS.items() if not entry.cls.uses_target_labels]


def _unlabelled(x: torch.Tensor) -> Split:
    """A split without labels: target labels are unknown."""
    return Split(x)


def _standardised(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """``(X - mean) / scale`` as the float32 tensor the network takes (a fresh array, so writable)."""
    return torch.from_numpy((X - mean) / scale)


def _domain_data(
    source: Split, target: Split, n_classes: int, prepare: Transform = identity, augment: Transform = identity
) -> DomainData:
    """The train splits double as test splits: the loop selects nothing on them."""
    return DomainData(source, source, target, target, n_classes, prepare=prepare, augment=augment)


class PixelNormalise:
    """Images ``(N, 3, H, W)`` of pixel values 0..255 -> a backbone's :class:`~dann.models.backbones.Preprocessing`."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocessing(x.float() / 255)


#: the training parameters a recipe can set
TRAIN_PARAMETERS = (
    "steps", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "lambda_schedule", "lambda_max", "gamma", "ema_decay",
)


def _is_default(name: str, value: Any) -> bool:
    default = inspect.signature(DANNClassifier.__init__).parameters[name].default
    return type(value) is type(default) and value == default


class DANNClassifier(ClassNamePrefixFeaturesOutMixin, ClassifierMixin, TransformerMixin, BaseEstimator):
    """Domain-adversarial neural network (Ganin & Lempitsky) as a scikit-learn classifier.

    Fits on labelled source samples ``(X, y)`` and unlabelled target samples, then predicts
    the target. Target samples come either as ``fit(X, y, X_target=...)`` or, so that they pass
    through the earlier steps of a :class:`~sklearn.pipeline.Pipeline`, as rows of ``X`` whose
    label is ``unlabeled_label`` (the ``sklearn.semi_supervised`` convention).

    Parameters
    ----------
    mode : str, default="dann"
        Any registered mode that does not read target labels (:func:`adaptation_modes`), e.g.
        "dann", "dann_deep" or "source_only" (the no-adaptation baseline). Predictions use the
        method's target-domain features (ADDA's target encoder, for instance).
    hidden : tuple of int, default=(32, 32)
        Feature-extractor layer sizes of the default MLP (vector inputs).
    domain_hidden : tuple of int, default=(32,)
        Hidden layer sizes of the default domain classifier (the paper's MNIST head is ``(100,)``).
    deep_domain_hidden : tuple of int, default=(128, 128, 128)
        The domain classifier of mode "dann_deep".
    steps : int, default=1000
        Training steps; each draws ``batch_size`` source and ``batch_size`` target samples.
    batch_size : int or "auto", default="auto"
        Samples per domain per step; "auto" is ``min(64, samples in the smaller domain)``, so
        small data sets fit with the default. A number larger than a domain's sample count
        raises ValueError (each batch would hold samples twice).
    optimizer, lr, momentum, weight_decay, lr_schedule, lambda_schedule, lambda_max, gamma, ema_decay
        As in :class:`dann.train.loop.TrainConfig` ("paper" schedules anneal the learning rate
        and ramp the adversarial weight from 0 to ``lambda_max``; ``ema_decay > 0`` predicts
        with a moving average of the weights).
    domain_loss, label_smoothing, transfer_weight
        As in :class:`dann.methods.MethodConfig`.
    method_options : dict or None, default=None
        Further settings, flat: any :class:`dann.methods.MethodConfig` field (e.g.
        ``{"entropy_weight": 0.1}``) or an option of the mode's own (e.g. ``{"pretrain_fraction": 0.3}``
        for "adda"); unknown names raise ValueError.
    standardize : bool, default=True
        Centre and scale inputs per feature (vectors) or per channel (images) with statistics of
        source and target together; the default networks train poorly on raw scales. Replaced by
        the recipe's normalisation (``recipe``) or the backbone weights' (``network_options``).
    unlabeled_label : scalar or None, default=None
        The value of ``y`` that marks a row of ``X`` as an unlabelled target sample (e.g. -1).
        None: every row of ``X`` is labelled source.
    network : str, callable or None, default=None
        A registered network's name (``dann run --list``; its default options, the domain sizes
        above), or ``network(n_features_or_shape, n_classes, n_domain_outputs) -> DomainAdversarialNet``,
        called with ``n_features`` (int) for 2-D ``X`` and the sample shape (tuple) otherwise.
        None: "mlp" (with ``hidden``) for ``(n, n_features)``, the paper's CNN "lenet" for
        ``(n, C, H, W)`` images (H and W multiples of 4).
    network_options : dict or None, default=None
        The registered network's own options (``model.<option>`` in ``dann run``), e.g.
        ``{"weights": "imagenet", "freeze_backbone": True}`` for "resnet50" or ``{"batch_norm": True}``
        for "lenet"; unknown names raise ValueError. A frozen torchvision backbone's features are
        computed once per fit and only the heads train, as in ``dann run``. With ``weights`` (and
        ``standardize=True``) images are normalised as those weights expect instead of by the data's
        statistics, so ``X`` must hold pixel values 0..255.
    recipe : str or None, default=None
        An experiment's recipe, ``"EXPERIMENT:RECIPE"`` or ``"EXPERIMENT"`` (its defaults), e.g.
        ``"mnist-mnistm:default"`` (``dann recipes`` lists them): its training and method settings,
        its network and domain heads, and its image normalisation and training augmentation
        (``mnist-mnistm``: per-image standardisation and random inversion), so a fit matches
        ``dann run``'s tuned setup. A parameter left at its default takes the recipe's value; one
        set to anything else wins. With a recipe that normalises images, ``standardize`` is not
        used, and images are expected as ``dann run`` reads them: ``(n, C, H, W)``, values 0..255.
        ``mode`` is always this estimator's.
    random_state : int, RandomState instance or None, default=None
        Seeds network initialisation and batch order: an int gives identical refits (it is the
        seed itself, as ``dann run --seed``); torch's global RNG is left as it was.
    verbose : bool, default=False
        Show a progress bar while training.
    device : str, default="cpu"
        Where to train and predict: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted; the columns of :meth:`predict_proba` follow them.
    n_features_in_ : int
        ``X.shape[1]`` seen in fit (features, or channels of images).
    input_shape_ : tuple of int
        ``X.shape[1:]`` seen in fit; later inputs must match it.
    input_mean_, input_scale_ : ndarray
        The standardisation fitted on source and target (0 and 1 when ``standardize=False``).
    method_ : dann.methods.Method
        The trained method; ``network_`` is its :class:`DomainAdversarialNet`.
    n_iter_ : int
        Training steps taken.
    """

    def __init__(
        self,
        mode: str = "dann",
        hidden: Sequence[int] = (32, 32),
        domain_hidden: Sequence[int] = (32,),
        deep_domain_hidden: Sequence[int] = (128, 128, 128),
        steps: int = 1000,
        batch_size: int | str = "auto",
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        lr_schedule: str = "paper",
        lambda_schedule: str = "paper",
        lambda_max: float = 1.0,
        gamma: float = 10.0,
        ema_decay: float = 0.0,
        domain_loss: str = "bce",
        label_smoothing: float = 0.0,
        transfer_weight: float = 1.0,
        method_options: Mapping[str, Any] | None = None,
        standardize: bool = True,
        unlabeled_label: Any = None,
        network: str | NetworkFactory | None = None,
        network_options: Mapping[str, Any] | None = None,
        recipe: str | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        device: str = "cpu",
    ) -> None:
        self.mode = mode
        self.hidden = hidden
        self.domain_hidden = domain_hidden
        self.deep_domain_hidden = deep_domain_hidden
        self.steps = steps
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.lambda_schedule = lambda_schedule
        self.lambda_max = lambda_max
        self.gamma = gamma
        self.ema_decay = ema_decay
        self.domain_loss = domain_loss
        self.label_smoothing = label_smoothing
        self.transfer_weight = transfer_weight
        self.method_options = method_options
        self.standardize = standardize
        self.unlabeled_label = unlabeled_label
        self.network = network
        self.network_options = network_options
        self.recipe = recipe
        self.random_state = random_state
        self.verbose = verbose
        self.device = device

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the networks compute in float32
        return tags

    def fit(self, X: Any, y: Any, X_target: Any = None) -> DANNClassifier:
        """Train on labelled source ``(X, y)`` and unlabelled target samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Source samples, plus target samples where ``y == unlabeled_label``.
        y : array-like of shape (n_samples,)
            Source labels (any sortable labels), or ``unlabeled_label`` for target rows.
        X_target : array-like of the same sample shape as X, optional
            Unlabelled target samples. In a Pipeline (``dann__X_target=...``) they do *not* go
            through the earlier steps; put them in ``X`` with ``unlabeled_label`` instead.
            With no target samples at all the model is trained on ``X`` as both domains, i.e.
            without adaptation, and a :class:`NoTargetDataWarning` is issued.

        Returns
        -------
        self : DANNClassifier
        """
        self._check_mode()
        recipe = self._recipe_config()
        options = self._method_config(recipe)
        cfg = self._train_config(recipe)
        X, y = validate_data(self, X, y, allow_nd=True, dtype=np.float32)
        is_target = np.zeros(len(y), dtype=bool) if self.unlabeled_label is None else y.astype(object) == self.unlabeled_label
        source_x, source_y, target_x = X[~is_target], y[~is_target], X[is_target]
        if X_target is not None:
            target_x = np.concatenate([target_x, self._check_target(X_target, X.shape[1:])])
        if len(source_y) == 0:
            raise ValueError(f"every row of X is marked unlabelled (y == {self.unlabeled_label!r}): no labelled source")
        if len(target_x) == 0:
            warnings.warn(
                "no target samples (pass X_target, or mark target rows of X with unlabeled_label): "
                "training on X as both domains, i.e. without domain adaptation",
                NoTargetDataWarning,
                stacklevel=2,
            )
            target_x = source_x
        check_classification_targets(source_y)
        encoder = LabelEncoder()
        labels = torch.from_numpy(encoder.fit_transform(source_y)).long()
        if len(encoder.classes_) < 2:
            raise ValueError(f"y has 1 class ({encoder.classes_[0]!r}); a classifier needs at least 2")

        model = self._model(X.shape[1:], recipe)
        transforms = None
        if recipe is not None:
            experiment, recipe_cfg = recipe
            transforms = experiment.input_transforms(recipe_cfg, torch.from_numpy(source_x), torch.from_numpy(target_x))
        elif self.standardize and isinstance(model, ModelConfig) and getattr(model.options, "weights", None) is not None:
            # pretrained backbone weights: the normalisation they were trained with, not the data's
            transforms = (PixelNormalise(backbone_preprocessing(backbone_arch(model), model.options.weights)), identity)
        prepare, augment = transforms or (identity, identity)
        mean, scale = self._fit_standardisation(source_x, target_x, transforms is None)
        source = Split(_standardised(source_x, mean, scale), labels)
        data = _domain_data(source, _unlabelled(_standardised(target_x, mean, scale)), len(encoder.classes_), prepare, augment)
        seed = self._seed()
        if self.batch_size == "auto" and recipe is None:
            cfg.batch_size = min(AUTO_BATCH_SIZE, len(source.x), len(target_x))
        encode = None
        with torch.random.fork_rng(devices=[]):  # seed our run without touching the caller's torch RNG
            if is_frozen_backbone(model):  # the backbone's features once, then only the heads train
                data, encode = backbone_features(data, model, seed, resolve_device(cfg.device))
            fitted = fit(data, self.mode, model=model, config=options, train_config=cfg, seed=seed)
        self.classes_, self.input_shape_, self.input_mean_, self.input_scale_ = encoder.classes_, X.shape[1:], mean, scale
        self.prepare_, self.backbone_features_ = prepare, encode
        self.method_, self.network_, self.n_iter_ = fitted.method, fitted.method.model, fitted.steps
        self._n_features_out = self._extract(source_x[:1]).shape[1]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted once training finished: a fit that raised may leave ``n_features_in_`` but no model."""
        return hasattr(self, "method_")

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, as labels from ``classes_``."""
        index = self._logits(X).argmax(1).numpy()
        return self.classes_[index]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax), shape ``(n_samples, n_classes)``, columns as ``classes_``."""
        return self._logits(X).double().softmax(1).numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """Class logits, ``(n_samples, n_classes)``; for two classes the margin of ``classes_[1]``, ``(n_samples,)``."""
        logits = self._logits(X).double()
        return (logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits).numpy()

    def transform(self, X: Any) -> np.ndarray:
        """The learned features (the feature extractor's output), ``(n_samples, n_features_out)``, float32."""
        return self._features(X).numpy()

    def _check_mode(self) -> None:
        allowed = adaptation_modes()
        if self.mode not in allowed:
            why = "reads target labels, which fit never receives" if self.mode in METHODS else "is not a registered method"
            raise ValueError(f"mode {self.mode!r} {why}; choose from {', '.join(allowed)}")

    def _seed(self) -> int:
        """An int ``random_state`` is the seed itself, so a fit reproduces ``dann run`` with ``--seed`` exactly."""
        if isinstance(self.random_state, numbers.Integral):
            if self.random_state < 0:
                raise ValueError(f"random_state must be a seed of 0 or more, a RandomState or None; got {self.random_state}")
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _recipe_config(self) -> tuple[Experiment, StudyConfig] | None:
        """The experiment and resolved config ``recipe`` names, or None."""
        if self.recipe is None:
            return None
        if not isinstance(self.recipe, str) or not self.recipe:
            raise ValueError(f"recipe must be 'EXPERIMENT:RECIPE' or 'EXPERIMENT', e.g. 'mnist-mnistm:default', got {self.recipe!r}")
        from dann.experiments import get_experiment, resolve_config  # noqa: PLC0415  (plots and all: only when asked)

        name, _, recipe = self.recipe.partition(":")
        experiment = get_experiment(name)
        return experiment, resolve_config(experiment, {"recipe": recipe or "default"})

    def _setting(self, name: str, recipe_value: Any, recipe: tuple[Experiment, StudyConfig] | None) -> Any:
        """This estimator's parameter ``name``, or the recipe's value where the parameter is left at its default."""
        value = getattr(self, name)
        if recipe is None or not _is_default(name, value):
            return value
        return recipe_value

    def _method_config(self, recipe: tuple[Experiment, StudyConfig] | None = None) -> MethodConfig:
        """The recipe's method section (if any), the shared settings, then ``method_options``: shared keys and the mode's own options, flat."""
        shared = {f.name for f in dataclasses.fields(MethodConfig) if not f.metadata.get("extra_keys")}
        base: dict[str, Any] = {}
        base_own: dict[str, Any] = {}
        if recipe is not None:
            section = recipe[1].method
            base = {name: getattr(section, name) for name in shared}
            base_own = to_dict(section.per_method.get(self.mode, {}))
        common = {
            name: self._setting(name, getattr(recipe[1].method, name) if recipe else None, recipe)
            for name in ("domain_loss", "label_smoothing", "transfer_weight")
        }
        extra = dict(self.method_options or {})
        both = sorted(set(common) & set(extra))
        if both:
            raise ValueError(f"{both[0]} is a parameter of its own; do not repeat it in method_options")
        options_cls = get_method(self.mode).options_cls
        own = {f.name for f in dataclasses.fields(options_cls)} if options_cls is not None else set()
        config = from_dict(MethodConfig, {**base, **common, **{k: v for k, v in extra.items() if k not in own}})
        if config.per_method:
            raise ValueError(f"unknown method option {sorted(config.per_method)[0]!r} for mode {self.mode!r}")
        mode_options = {**base_own, **{k: v for k, v in extra.items() if k in own}}
        if mode_options:
            config.per_method = {self.mode: mode_options}
        return resolve_method_options(config, [self.mode])

    def _train_config(self, recipe: tuple[Experiment, StudyConfig] | None = None) -> TrainConfig:
        """The training parameters (the recipe's where left at their defaults) as a checked TrainConfig.

        An "auto" batch size is set once the data is seen.
        """
        values = {name: self._setting(name, getattr(recipe[1].train, name) if recipe else None, recipe) for name in TRAIN_PARAMETERS}
        if values["batch_size"] == "auto":
            del values["batch_size"]
        return from_dict(TrainConfig, {**values, "progress_bar": self.verbose, "device": self.device})

    def _check_target(self, X_target: Any, sample_shape: tuple[int, ...]) -> np.ndarray:
        X_target = check_array(X_target, allow_nd=True, dtype=np.float32, input_name="X_target")
        if X_target.shape[1:] == sample_shape:
            return X_target
        if X_target.ndim == 2 and len(sample_shape) == 1:
            raise ValueError(f"X_target has {X_target.shape[1]} features, but X has {sample_shape[0]} features")
        raise ValueError(f"X_target has samples of shape {X_target.shape[1:]}, but X has {sample_shape}")

    def _fit_standardisation(self, source_x: np.ndarray, target_x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale over both domains, per feature (axis 1), pooled over any further axes."""
        shape = (1, source_x.shape[1], *[1] * (source_x.ndim - 2))
        if not (standardize and self.standardize):
            return np.zeros(shape, np.float32), np.ones(shape, np.float32)
        both = np.concatenate([source_x, target_x])
        axes = (0, *range(2, both.ndim))
        mean, std = both.mean(axis=axes, dtype=np.float64), both.std(axis=axes, dtype=np.float64)
        std[std < 10 * np.finfo(np.float64).eps] = 1.0  # constant feature: centre it, do not blow it up
        return mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32)

    def _model(
        self, shape: tuple[int, ...], recipe: tuple[Experiment, StudyConfig] | None = None
    ) -> ModelConfig | Callable[[NetworkRequest], DomainAdversarialNet]:
        """A registered network with this estimator's sizes and options (the recipe's where left at
        their defaults), or the user's ``network`` callable."""
        if callable(self.network):
            if self.network_options is not None:
                raise ValueError("network_options are the options of a registered network; a network callable takes none")
            def build(request: NetworkRequest) -> DomainAdversarialNet:
                network = self.network(shape[0] if len(shape) == 1 else shape, request.n_classes, request.n_domain_outputs)
                if not isinstance(network, DomainAdversarialNet):
                    raise TypeError(f"network must return a DomainAdversarialNet, got {type(network).__name__}")
                return network

            return build
        section = recipe[1].model if recipe is not None else None
        name = self.network or (section.network if section is not None else "mlp" if len(shape) == 1 else "lenet")
        options = to_dict(section.options) if section is not None and section.network == name else {}
        extra = dict(self.network_options or {})
        if name == "mlp":
            if "hidden" in extra:
                raise ValueError("hidden is a parameter of its own; do not repeat it in network_options")
            options["hidden"] = list(self._setting("hidden", options.get("hidden"), recipe if "hidden" in options else None))
        heads = {
            key: list(self._setting(key, getattr(section, key) if section else None, recipe))
            for key in ("domain_hidden", "deep_domain_hidden")
        }
        layout = {"init": section.init, "channels_last": section.channels_last} if section is not None else {}
        return ModelConfig(name, **heads, **layout, options={**options, **extra})  # a ConfigError is a ValueError

    def _features(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=np.float32)
        if X.shape[1:] != self.input_shape_:
            raise ValueError(f"X has samples of shape {X.shape[1:]}, but {type(self).__name__} was fitted on {self.input_shape_}")
        return self._extract(X)

    def _extract(self, X: np.ndarray) -> torch.Tensor:
        """Features of validated ``X`` through the shared evaluation code (eval mode, no grad, in chunks)."""
        x, prepare = _standardised(X, self.input_mean_, self.input_scale_), self.prepare_
        if self.backbone_features_ is not None:  # the frozen backbone, then the heads
            x, prepare = self.backbone_features_(x), identity
        return extract_features(self.method_, x, prepare, "target")

    @torch.no_grad()
    def _logits(self, X: Any) -> torch.Tensor:
        features = self._features(X)  # validates first: NotFittedError before any fitted attribute is read
        return self.method_.model.classify(features)

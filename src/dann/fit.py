"""The one way a method is trained: data + network + method + settings -> a trained method.

``dann run``, the benchmarks and the scikit-learn estimator all call :func:`fit`; nothing else
builds a network, seeds, or starts the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dann.data.batches import PairedBatches
from dann.data.domains import DomainData
from dann.errors import ConfigError
from dann.methods import Method, MethodConfig, build_method, config_for, get_method, n_domain_outputs
from dann.models.network import DomainAdversarialNet
from dann.models.registry import ModelConfig, NetworkRequest
from dann.train import distributed
from dann.train.callbacks import Callback, Checkpoint, KeepBest, MetricsLogger, MovingAverage, PeriodicEvaluation, ProgressBar
from dann.train.device import check_precision, resolve_device
from dann.train.loop import TrainConfig, TrainResult, train
from dann.train.metrics_log import MetricsLog

#: builds a network for a request, when a registered network with a ModelConfig will not do
NetworkBuilder = Callable[[NetworkRequest], DomainAdversarialNet]


@dataclass
class Fitted:
    """A trained method and how its training went."""

    method: Method
    name: str
    steps: int
    train_seconds: float
    images_per_second: float
    #: the label-free scores along the way and the step chosen (:class:`~dann.train.callbacks.KeepBest`), if scored
    selection: dict[str, Any] | None = None


def default_model(data: DomainData) -> ModelConfig:
    """``mlp`` for vectors, the paper's ``lenet`` for images."""
    return ModelConfig(network="mlp" if len(data.input_shape) == 1 else "lenet")


def build_network(data: DomainData, method: str, model: ModelConfig | NetworkBuilder, config: MethodConfig) -> DomainAdversarialNet:
    """The network ``method`` trains on ``data``: output sizes from the data, domain head from the method.

    A builder callable gets no domain head sizes (``request.domain_hidden == ()``): it picks its own.
    """
    n_outputs = n_domain_outputs(config.domain_loss, data.n_domains)
    if not isinstance(model, ModelConfig):
        return model(NetworkRequest(data.input_shape, data.n_classes, n_outputs, ()))
    deep = get_method(method).domain_head == "deep"
    hidden = model.deep_domain_hidden if deep else model.domain_hidden
    return model.build(NetworkRequest(data.input_shape, data.n_classes, n_outputs, tuple(hidden)))


def fit(
    data: DomainData,
    method: str | Method = "dann",
    *,
    model: ModelConfig | NetworkBuilder | None = None,
    config: MethodConfig | None = None,
    train_config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    fingerprint: str | None = None,
    log: MetricsLog | None = None,
    evaluate: Callable[[Method], dict[str, float]] | None = None,
    validate: Callable[[Method], dict[str, float]] | None = None,
    select_by: str | None = None,
    name: str | None = None,
    progress_line: int = 0,
) -> Fitted:
    """Train the registered ``method`` on ``data`` and return it trained (in eval mode).

    Args:
        data: labelled source and target (labels optional) splits, with their ``prepare`` and ``augment``.
        method: a registered method name (``dann``, ``cdan_e``, ...; see ``dann run --list``), or
            a :class:`Method` already built around its network (``model`` and ``config`` then unused).
        model: a :class:`ModelConfig` (a registered network and its options) or a callable
            ``NetworkRequest -> DomainAdversarialNet``; default ``mlp`` for vectors, ``lenet`` for images.
        config: the shared method settings and the method's own options (``config.per_method[method]``).
        train_config: steps, optimiser, schedules, device, precision, ...
        seed: seeds initialisation, batch order and augmentation: same seed, same run.
        callbacks: extra :class:`~dann.train.callbacks.Callback` objects, run after evaluation and before logging.
        checkpoint: a file to checkpoint into; when it exists, training resumes from it exactly.
        fingerprint: names the settings of this training (``dann run`` passes its config's); saved
            in the checkpoint, and a checkpoint saved under another one is refused.
        log: where per-step metrics go (JSON lines, TensorBoard).
        evaluate: held-out scores of the evaluation weights every ``train_config.eval_every`` steps (for the curves).
        validate: label-free scores ``{validator: score}`` of the evaluation weights at the same checks
            (:func:`dann.evaluate.validation.validation_scores`); never reads target labels.
        select_by: the validator among ``validate``'s that chooses the weights training ends with
            (None: the last weights).
        name: the run's name in progress bars and messages (default: ``method``).
        progress_line: the terminal line of this run's progress bar when several train side by side.
    """
    if seed < 0:
        raise ConfigError(f"seed must be 0 or more, got {seed}")
    train_config = train_config or TrainConfig()
    name = name or (method if isinstance(method, str) else type(method).__name__)
    uses_target_labels = get_method(method).cls.uses_target_labels if isinstance(method, str) else method.uses_target_labels
    if uses_target_labels and not data.target_train.labelled:
        raise ConfigError(f"{name} is an oracle that trains on target labels, but the training target has none")
    group = distributed.current()
    device = resolve_device(train_config.device, group.world_size)
    check_precision(train_config.precision, device)

    torch.manual_seed(seed)
    if isinstance(method, str):
        config = config_for(config or MethodConfig(), method)
        method = build_method(method, build_network(data, method, model or default_model(data), config), config)
    trained = method.to(device)
    batches = PairedBatches.from_data(
        data, train_config.batch_size, seed, with_target_labels=uses_target_labels,
        rank=group.rank, world_size=group.world_size, device=device,
    )
    steps: list[Callback] = []
    if train_config.ema_decay:
        steps.append(MovingAverage(trained, train_config.ema_decay))
    if evaluate is not None:
        steps.append(PeriodicEvaluation(evaluate, train_config.eval_every))
    keep_best = None
    if validate is not None:
        if select_by is not None and not train_config.eval_every:
            raise ConfigError("choosing weights by a validator needs checks: set train.eval_every > 0")
        # scored at every check only when they choose; else once, at the end, for the record
        keep_best = KeepBest(validate, select_by, train_config.eval_every if select_by else train_config.steps)
        steps.append(keep_best)
    steps += callbacks
    if log is not None:
        steps.append(MetricsLogger(log, train_config.log_every))
    if train_config.progress_bar:
        steps.append(ProgressBar(name, progress_line))
    if checkpoint is not None:
        steps.append(Checkpoint(checkpoint, train_config.checkpoint_every, fingerprint))
    result: TrainResult = train(trained, batches, train_config, steps, name)
    selection = keep_best.record() if keep_best is not None else None
    return Fitted(trained, name, result.steps, result.train_seconds, result.images_per_second, selection)

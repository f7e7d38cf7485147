"""The one way a method is trained: data + network + method + settings -> a trained method.

``dann run``, the benchmarks and the scikit-learn estimator all call :func:`fit`; nothing else
builds a network, seeds, or starts the loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dann.data.batches import PairedBatches
from dann.data.domains import DomainData
from dann.errors import ConfigError
from dann.methods import Method, MethodConfig, build_method, get_method, n_domain_outputs, resolve_method_options
from dann.models.network import DomainAdversarialNet
from dann.models.registry import ModelConfig, NetworkRequest
from dann.train import distributed
from dann.train.callbacks import Callback, Checkpoint, MetricsLogger, MovingAverage, PeriodicEvaluation, ProgressBar
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


def default_model(data: DomainData) -> ModelConfig:
    """``mlp`` for vectors, the paper's ``lenet`` for images."""
    return ModelConfig(network="mlp" if len(data.input_shape) == 1 else "lenet")


def build_network(data: DomainData, method: str, model: ModelConfig | NetworkBuilder, config: MethodConfig) -> DomainAdversarialNet:
    """The network ``method`` trains on ``data``: output sizes from the data, domain head from the method."""
    deep = get_method(method).domain_head == "deep"
    hidden = model.deep_domain_hidden if deep and isinstance(model, ModelConfig) else getattr(model, "domain_hidden", ())
    request = NetworkRequest(data.input_shape, data.n_classes, n_domain_outputs(config.domain_loss, data.n_domains), tuple(hidden))
    return model.build(request) if isinstance(model, ModelConfig) else model(request)


def fit(
    data: DomainData,
    method: str = "dann",
    *,
    model: ModelConfig | NetworkBuilder | None = None,
    config: MethodConfig | None = None,
    train_config: TrainConfig | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    log: MetricsLog | None = None,
    evaluate: Callable[[Method], dict[str, float]] | None = None,
    name: str | None = None,
    progress_line: int = 0,
) -> Fitted:
    """Train the registered ``method`` on ``data`` and return it trained (in eval mode).

    Args:
        data: labelled source and target (labels optional) splits, with their ``prepare`` and ``augment``.
        method: a registered method name (``dann``, ``cdan_e``, ...; see ``dann run --list``).
        model: a :class:`ModelConfig` (a registered network and its options) or a callable
            ``NetworkRequest -> DomainAdversarialNet``; default ``mlp`` for vectors, ``lenet`` for images.
        config: the shared method settings and the method's own options (``config.per_method[method]``).
        train_config: steps, optimiser, schedules, device, precision, ...
        seed: seeds initialisation, batch order and augmentation: same seed, same run.
        callbacks: extra :class:`~dann.train.callbacks.Callback` objects, run after evaluation and before logging.
        checkpoint: a file to checkpoint into; when it exists, training resumes from it exactly.
        log: where per-step metrics go (JSON lines, TensorBoard).
        evaluate: held-out scores of the evaluation weights every ``train_config.eval_every`` steps.
        name: the run's name in progress bars and messages (default: ``method``).
        progress_line: the terminal line of this run's progress bar when several train side by side.
    """
    train_config = train_config or TrainConfig()
    config = resolve_method_options(copy.deepcopy(config or MethodConfig()), [method])
    name = name or method
    entry = get_method(method)
    if entry.cls.uses_target_labels and not data.target_train.labelled:
        raise ConfigError(f"{name} is an oracle that trains on target labels, but the training target has none")
    group = distributed.current()
    device = resolve_device(train_config.device, group.world_size)
    check_precision(train_config.precision, device)

    torch.manual_seed(seed)
    network = build_network(data, method, model or default_model(data), config)
    trained = build_method(method, network, config).to(device)
    batches = PairedBatches.from_data(
        data, train_config.batch_size, seed, with_target_labels=entry.cls.uses_target_labels,
        rank=group.rank, world_size=group.world_size, device=device,
    )
    steps: list[Callback] = []
    if train_config.ema_decay:
        steps.append(MovingAverage(trained, train_config.ema_decay))
    if evaluate is not None:
        steps.append(PeriodicEvaluation(evaluate, train_config.eval_every))
    steps += callbacks
    if log is not None:
        steps.append(MetricsLogger(log, train_config.log_every))
    if train_config.progress_bar:
        steps.append(ProgressBar(name, progress_line))
    if checkpoint is not None:
        steps.append(Checkpoint(checkpoint, train_config.checkpoint_every))
    result: TrainResult = train(trained, batches, train_config, steps, name)
    return Fitted(trained, name, result.steps, result.train_seconds, result.images_per_second)

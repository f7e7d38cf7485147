"""Helpers shared by test modules: a method with options given flat, as the old tests wrote them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dann.methods import MethodConfig, build_method, get_method, resolve_method_options
from dann.models.network import DomainAdversarialNet, mlp_network

#: the data that cannot be downloaded here, beside the project root (as in CI)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir() or not (SHARED_DATA / "bsds500" / "train").is_dir(),
    reason=f"needs the real MNIST and BSDS500 files in {SHARED_DATA} (mnist/, bsds500/train/)",
)


def method_config(mode: str, **options: object) -> MethodConfig:
    """A resolved MethodConfig: shared keys as fields, the rest as ``mode``'s own options."""
    options_cls = get_method(mode).options_cls
    own_names = {f.name for f in dataclasses.fields(options_cls)} if options_cls else set()
    config = MethodConfig(**{k: v for k, v in options.items() if k not in own_names})
    own = {k: v for k, v in options.items() if k in own_names}
    if own:
        config.per_method = {mode: own}
    return resolve_method_options(config, [mode])


def make_method(mode: str, model: DomainAdversarialNet | None = None, seed: int = 0, **options: object):
    """``mode`` around ``model`` (default: a small Blobs MLP seeded with ``seed``)."""
    if model is None:
        torch.manual_seed(seed)
        model = mlp_network(2, 3, [16, 8], [8])
    return build_method(mode, model, method_config(mode, **options))


def raises_one_line(error_type: type, fragment: str, call, *args, **kwargs) -> str:
    """The message of the ``error_type`` that ``call`` raises: it holds ``fragment`` and is one line."""
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    return message


def log_from_worker(context: object, item: str, line: int) -> str:
    """A worker task (``dann.experiments.workers``) that logs ``item`` on the ``dann`` logger."""
    import logging

    logging.getLogger("dann.test").info("worker says %s", item)
    return item

"""Where training runs and in what precision: ``train.device`` and ``train.precision``."""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch

from dann.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]


def resolve_device(name: str, world_size: int = 1) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun each process takes the GPU of its local rank, so ``cuda`` and ``auto`` mean
    ``cuda:LOCAL_RANK`` there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but this torch sees no CUDA GPU; use train.device=cpu (or auto)")
    if name == "cuda":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) if world_size > 1 else torch.cuda.current_device()}"
    index = int(name[5:])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name} but there are {torch.cuda.device_count()} GPUs")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs a GPU (and a gradient scaler); bf16 runs on GPUs and on CPUs with bfloat16 support."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA device; on a CPU use bf16 or fp32")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision autocast for the forward pass; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (small gradients would underflow); disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")

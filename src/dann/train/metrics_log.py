"""Per-step metrics to a JSON-lines file and to TensorBoard."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dann.runfiles import atomic_write_text, make_dirs, read_jsonl

#: what to do about a metrics log damaged before its last line
_FIX = "delete it to keep training (the curves then start at the checkpoint)"

#: the TensorBoard metrics the hyperparameter table shows next to each run's settings
HPARAM_METRICS = ("accuracy/source_acc", "accuracy/target_acc", "score/target_im", "accuracy/domain_acc")


def tensorboard_tag(key: str) -> str:
    """A logged quantity's TensorBoard tag, grouped by kind: ``loss/label_loss``, ``accuracy/target_acc``,
    ``schedule/lr``, ``score/target_im`` (label-free scores), ``other/...``; a key with a group keeps it."""
    if "/" in key:
        return key
    if key == "loss" or key.endswith("_loss"):
        return f"loss/{key}"
    if key.endswith("_acc"):
        return f"accuracy/{key}"
    if key in ("lr", "lambda"):
        return f"schedule/{key}"
    if key.startswith("target_"):
        return f"score/{key}"
    return f"other/{key}"


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as TensorBoard hyperparameters: dotted keys, lists as text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) or value is None else str(value)
    return flat


class MetricsLog:
    """Appends one JSON object per logged step to ``path``; mirrors scalars to ``tensorboard_dir``.

    In TensorBoard the scalars are grouped (:func:`tensorboard_tag`), and ``config`` (the run's
    settings, a nested mapping) is recorded once as hyperparameters and as YAML text.
    """

    def __init__(
        self, path: str | Path, tensorboard_dir: str | Path | None = None, config: Mapping[str, Any] | None = None
    ) -> None:
        self.path = Path(path)
        make_dirs(self.path.parent)
        self.tensorboard_dir = tensorboard_dir
        self.config = config
        self._purge_step: int | None = None
        self._file = None
        self._writer = None

    def rewind(self, step: int) -> None:
        """Forget rows after ``step``: a resumed run logs them again, so they must not appear twice.

        The file is replaced atomically, and a last line cut off by a kill mid-write is dropped
        here, before anything is appended after it.
        """
        if self.path.exists():
            kept = [row for row in read_metrics(self.path) if isinstance(row.get("step"), int) and row["step"] <= step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self._purge_step = step + 1

    def write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a")
            if self.tensorboard_dir is not None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self._purge_step)
                if self.config is not None:
                    self._write_config(self._writer, self.config)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(tensorboard_tag(key), value, row["step"])

    @staticmethod
    def _write_config(writer: Any, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # into this run's own event file (SummaryWriter.add_hparams would open a sub-run for them)
        for summary in hparams(flat_hparams(config), dict.fromkeys(HPARAM_METRICS, 0.0)):
            writer.file_writer.add_summary(summary)
        text = yaml.safe_dump(dict(config), sort_keys=False)
        writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))  # markdown code block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows written by :class:`MetricsLog`, in order (none if the file does not exist yet).

    A last line cut off mid-write is left out; other damage is a one-line DataError.
    """
    path = Path(path)
    if not path.exists():
        return []
    return read_jsonl(path, "the metrics log", _FIX)

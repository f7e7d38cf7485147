"""Per-step metrics to a JSON-lines file and to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dann.runfiles import atomic_write_text, make_dirs, read_jsonl

#: what to do about a metrics log damaged before its last line
_FIX = "delete it to keep training (the curves then start at the checkpoint)"


class MetricsLog:
    """Appends one JSON object per logged step to ``path``; mirrors scalars to ``tensorboard_dir``."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        make_dirs(self.path.parent)
        self.tensorboard_dir = tensorboard_dir
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
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, row["step"])

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

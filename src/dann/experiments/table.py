"""Your own tabular domains: a labelled source table and an unlabelled target table.

``dann run table --set data.source=src.csv --set data.target=tgt.csv --set data.label=COLUMN``.
Tables are CSV, TSV or Parquet (:func:`~dann.data.tables.read_table`: the source fixes the feature
columns, one-hot categories and classes, and the target is encoded the same way); ``.npz`` files
(``x``, optional ``y``) and ``.npy`` files (``x`` only: unlabelled) are read as arrays
(:func:`~dann.data.tables.read_arrays`). A target that has the label column is labelled for
evaluation only.

Features are standardised (per column, mean 0 and standard deviation 1) with the statistics of
the source training rows by default, so nothing about the target's scale is assumed;
``data.standardise=both`` uses source and target training rows together, which removes a plain
shift or rescaling of the target's columns before training (unsupervised: no target labels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dann.data.domains import DomainData, Split
from dann.data.holdout import holdout_split, limit
from dann.data.loaded import LoadedDomain, check_source
from dann.data.tables import read_arrays, read_table
from dann.errors import ConfigError, DataError
from dann.evaluate.embedding import embed_2d
from dann.experiments.base import Experiment, StudyConfig, register_experiment
from dann.models.registry import MLPOptions, ModelConfig
from dann.plots.figures import scatter_domains
from dann.train.loop import TrainConfig

ARRAY_SUFFIXES = (".npz", ".npy")

log = logging.getLogger(__name__)


@dataclass
class TableDataConfig:
    """Where the tables are, which column is the label, and how the features are scaled."""

    source: str = ""  # .csv, .tsv, .parquet (label column data.label), or .npz (x, y)
    target: str = ""  # the same kind as the source; the label column (or y) optional, read for evaluation only
    target_test: str = ""  # held-out target rows ('': hold out data.holdout of the target)
    source_test: str = ""  # held-out source rows ('': hold out data.holdout of the source)
    label: str = ""  # the label column of a table (arrays: y)
    features: list[str] = field(default_factory=list)  # feature columns ([]: every column but the label)
    impute: Literal["none", "mean"] = "none"  # missing cells: an error, or the source column's mean
    # source: mean and std of the source training rows; both: of source and target training
    # rows together; none: the features as read
    standardise: Literal["source", "both", "none"] = "source"
    # without source_test / target_test: the seeded fraction of that domain held out for
    # evaluation (0: evaluate on the training rows themselves, an optimistic score)
    holdout: float = 0.2
    train_limit: int = 0  # training rows per domain, a seeded random subset (0: all)
    test_limit: int = 0  # held-out rows per domain, a seeded random subset (0: all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"data.holdout must be in [0, 1) (0: evaluate on the training rows), got {self.holdout}")
        if self.train_limit < 0 or self.test_limit < 0:
            raise ConfigError("data.train_limit and data.test_limit must be >= 0 (0: all rows)")


@dataclass
class TableStudyConfig(StudyConfig):
    modes: list[str] = field(default_factory=lambda: ["source_only", "dann"])
    threads: int = 1  # a small MLP is too small to gain from threads
    data: TableDataConfig = field(default_factory=TableDataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(network="mlp", domain_hidden=[64], options=MLPOptions([64, 32])))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=0.01, eval_every=250, log_every=25)
    )


def _is_arrays(path: str) -> bool:
    return Path(path).suffix.lower() in ARRAY_SUFFIXES


def read_domains(data: TableDataConfig) -> dict[str, LoadedDomain]:
    """``source``, ``target`` and, where given, ``source_test`` and ``target_test``, read with the source's schema or classes."""
    for key in ("source", "target"):
        if not getattr(data, key):
            raise ConfigError(f"set data.{key}=FILE: a .csv, .tsv or .parquet table, or a .npz/.npy array file")
    paths = {key: getattr(data, key) for key in ("source", "target", "source_test", "target_test") if getattr(data, key)}
    kinds = {key: "arrays" if _is_arrays(path) else "table" for key, path in paths.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"data.{key} is {kind}" for key, kind in kinds.items())
        raise DataError(f"the domains must all be tables or all array files ({listed}): convert them to one kind")
    if kinds["source"] == "arrays":
        if data.label or data.features or data.impute != "none":
            raise ConfigError("data.label, data.features and data.impute are for tables; array files hold x (features) and y (labels)")
        source = read_arrays(paths["source"])
        check_source(source)
        domains = {"source": source}
        domains.update((key, read_arrays(path, source.classes)) for key, path in paths.items() if key != "source")
        return domains
    if not data.label:
        raise ConfigError(f"set data.label=COLUMN: the column of {paths['source']} that holds the class labels")
    source, schema = read_table(paths["source"], data.label, data.features or None, impute=data.impute)
    check_source(source)
    domains = {"source": source}
    domains.update((key, read_table(path, impute=data.impute, schema=schema)[0]) for key, path in paths.items() if key != "source")
    return domains


@register_experiment("table")
class Table(Experiment):
    description = "your tables: --set data.source=src.csv --set data.target=tgt.csv --set data.label=COLUMN (or .npz)"
    config_cls = TableStudyConfig
    embedding = "pca"

    def load_data(self, cfg: TableStudyConfig, data_dir: str | None) -> DomainData:
        domains = read_domains(cfg.data)
        rng = np.random.default_rng(cfg.seed)
        chosen: dict[str, tuple[LoadedDomain, np.ndarray | None]] = {}  # split -> rows of a domain; None: the training rows
        for name in ("source", "target"):
            domain = domains[name]
            if f"{name}_test" in domains:
                test = domains[f"{name}_test"]
                chosen[f"{name}_train"], chosen[f"{name}_test"] = (domain, np.arange(len(domain))), (test, np.arange(len(test)))
            else:
                train_rows, test_rows = holdout_split(len(domain), cfg.data.holdout, rng, f"{name} {domain.origin}")
                chosen[f"{name}_train"], chosen[f"{name}_test"] = (domain, train_rows), (domain, test_rows)
        splits: dict[str, Split] = {}
        for name in ("source_train", "target_train", "source_test", "target_test"):
            domain, rows = chosen[name]
            if rows is None:
                splits[name] = splits[name.replace("_test", "_train")]
            else:
                splits[name] = _take(domain, limit(rows, cfg.data.train_limit if name.endswith("_train") else cfg.data.test_limit, rng))
        for name in ("source", "target"):
            train = splits[f"{name}_train"]
            labels = "labelled" if train.labelled else "unlabelled"
            held = "evaluated on its training rows" if chosen[f"{name}_test"][1] is None else f"{len(splits[f'{name}_test'])} test rows"
            log.info(f"{name} {domains[name].origin}: {len(train)} training rows ({labels}), {held}")
        for note in dict.fromkeys(note for domain in domains.values() for note in domain.notes):
            log.info(f"note: {note}")
        _standardise(splits, cfg.data.standardise)
        return DomainData(**splits, n_classes=len(domains["source"].classes))

    def plot_data(self, data: DomainData, plots_dir: Path) -> None:
        source, target = data.source_train, data.target_train
        both = torch.cat([source.x.flatten(1), target.x.flatten(1)]).float().numpy()
        embedded = embed_2d(both, "pca") if both.shape[1] > 2 else both
        n = len(source)
        scatter_domains(
            {"source": embedded[:n], "target": embedded[n:]},
            {"source": source.y.numpy(), "target": None if target.y is None else target.y.numpy()},
            plots_dir / "data.png",
            "source (labelled) and target training rows: first two principal components",
        )


def _take(domain: LoadedDomain, rows: np.ndarray) -> Split:
    index = torch.from_numpy(rows)
    return Split(domain.x[index], None if domain.y is None else domain.y[index])


def _standardise(splits: dict[str, Split], how: str) -> None:
    """Every split to ``(x - mean) / std`` per column, in place, with statistics of the source (or both) training rows."""
    if how == "none":
        return
    rows = splits["source_train"].x if how == "source" else torch.cat([splits["source_train"].x, splits["target_train"].x])
    rows = rows.double()
    mean, std = rows.mean(dim=0), rows.std(dim=0, unbiased=False)
    std[std < 1e-12] = 1.0  # a constant column: centred, not blown up
    scaled: dict[int, torch.Tensor] = {}  # splits that share rows keep sharing them
    for name, split in splits.items():
        if id(split.x) not in scaled:
            scaled[id(split.x)] = ((split.x.double() - mean) / std).float()
        splits[name] = Split(scaled[id(split.x)], split.y)

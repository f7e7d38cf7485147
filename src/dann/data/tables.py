"""A user's tabular domains: CSV, TSV and Parquet tables, and ``.npz``/``.npy`` arrays, as float32 features.

A table is turned into numbers by a :class:`TableSchema` fitted on the source (which columns are
features, the categories of each one-hot encoded column, the label classes, the imputation means)
and reused unchanged for the target, so both domains land in the same feature space. pandas (and
pyarrow for Parquet) are imported only when a table is read.
"""

from __future__ import annotations

import importlib.util
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from dann.data.loaded import LoadedDomain
from dann.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

MAX_CATEGORIES = 50  # more distinct values than this in a text column: free text, not a category
_COMPRESSION = {".gz", ".bz2", ".xz", ".zip", ".zst"}
Impute = Literal["none", "mean"]


@dataclass
class TableSchema:
    """How a table becomes features; fitted on the source, then reused for every other domain.

    ``means`` holds the source mean of every encoded column (for a one-hot column: the category's
    frequency), used to fill missing cells when reading with ``impute="mean"``.
    """

    feature_columns: list[str]  # the table's input columns, in order
    encoded_columns: list[str]  # one name per output feature, e.g. "age", "colour=red"
    categories: dict[str, list[str]]  # one-hot encoded column -> its categories, in output order
    label: str | None
    classes: list[str]  # label values (as text), in class-index order; [] when unlabelled
    means: dict[str, float] = field(default_factory=dict)  # encoded column -> source mean
    ignored_columns: list[str] = field(default_factory=list)  # source columns neither feature nor label


def read_table(
    path: str | os.PathLike,
    label: str | None = None,
    feature_columns: Sequence[str] | None = None,
    categories: Mapping[str, Sequence[Any]] | None = None,
    impute: Impute = "none",
    schema: TableSchema | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> tuple[LoadedDomain, TableSchema]:
    """Read a table as float32 ``(N, F)`` features and, if it has the label column, int64 labels.

    Without ``schema`` the table is a source: the schema is fitted on it (all columns but ``label``
    are features unless ``feature_columns`` says otherwise; text and bool columns are one-hot
    encoded, ``categories`` fixes a column's categories or makes a numeric column categorical).
    With ``schema`` (the source's), the table is encoded exactly as the source was; a target that
    lacks the label column is unlabelled, and a category the source never showed is encoded as
    all zeros (with a note). Missing cells are an error unless ``impute="mean"``.
    """
    if impute not in ("none", "mean"):
        raise ConfigError(f"impute must be 'none' or 'mean', got {impute!r}")
    where = str(path)
    frame = _read_frame(Path(path))
    if len(frame) == 0:
        raise DataError(f"table {where} has no rows: give a table with a header and at least one row")
    if schema is None:
        schema = _fit_schema(frame, where, label, feature_columns, categories or {}, max_categories)
        encoded, notes = _encode(frame, schema, where)
        with np.errstate(invalid="ignore"):  # a column that is all missing is caught by _fit_schema
            schema.means = dict(zip(schema.encoded_columns, np.nanmean(encoded, axis=0).tolist()))
    else:
        if label not in (None, schema.label) or feature_columns is not None or categories is not None:
            raise ConfigError("with schema=, leave label, feature_columns and categories unset: the source's schema fixes them")
        _check_columns(frame, schema, where)
        encoded, notes = _encode(frame, schema, where)
    notes += _fill_missing(encoded, schema, where, impute)
    y = _labels(frame, schema, where)
    domain = LoadedDomain(
        x=torch.from_numpy(encoded.astype(np.float32)),
        y=y,
        classes=list(schema.classes) if y is not None else [],
        paths=[f"{where}:{row}" for row in range(len(frame))],
        notes=notes,
        origin=where,
    )
    return domain, schema


# ----------------------------------------------------------------------------- reading


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as error:
        raise DataError("reading tables needs pandas: pip install pandas (and pyarrow for Parquet)") from error
    return pandas


def _read_frame(path: Path) -> pd.DataFrame:
    pd = _pandas()
    if not path.is_file():
        raise DataError(f"table {path} not found: give a .csv, .tsv or .parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    kind = suffixes[-1] if suffixes else ""
    if kind in (".csv", ".tsv"):
        try:
            frame = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",")
        except pd.errors.EmptyDataError as error:
            raise DataError(f"table {path} is empty: give a header line and at least one row") from error
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as error:
            raise DataError(f"cannot parse {path} as {kind[1:].upper()} ({_reason(error)}): check the file") from error
    elif kind in (".parquet", ".pq"):
        if importlib.util.find_spec("pyarrow") is None:
            raise DataError(f"reading {path} needs pyarrow: pip install pyarrow")
        try:
            frame = pd.read_parquet(path, engine="pyarrow")
        except Exception as error:  # pyarrow's errors have no common base but Exception
            raise DataError(f"cannot read {path} as Parquet ({_reason(error)}): check the file") from error
    else:
        raise DataError(f"table {path} has an unknown format '{kind}': use .csv, .tsv or .parquet")
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _some(names: Sequence[Any], shown: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``: enough to find the problem, short enough for one line."""
    listed = ", ".join(f"'{name}'" for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _as_text(series: pd.Series) -> pd.Series:
    """Values as text, missing kept missing; 3.0 reads as "3" so a float column with gaps and an
    int column name the same category."""

    def text(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return series.astype(object).map(text, na_action="ignore")


def _sorted_names(names: set[str]) -> list[str]:
    """Numbers in numeric order ("2" before "10"), anything else alphabetically."""
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


# ----------------------------------------------------------------------------- the schema


def _fit_schema(
    frame: pd.DataFrame,
    where: str,
    label: str | None,
    feature_columns: Sequence[str] | None,
    categories: Mapping[str, Sequence[Any]],
    max_categories: int,
) -> TableSchema:
    pd = _pandas()
    columns = list(frame.columns)
    if label is not None and label not in columns:
        raise DataError(f"label column '{label}' not found in {where} (columns: {_some(columns, 8)}): pass label= one of them")
    if feature_columns is None:
        features = [column for column in columns if column != label]
    else:
        features = list(feature_columns)
        if label in features:
            raise ConfigError(f"label column '{label}' is also listed in feature_columns: remove it from the features")
        missing = [column for column in features if column not in columns]
        if missing:
            raise DataError(f"feature column(s) {_some(missing)} not found in {where} (columns: {_some(columns, 8)})")
    if not features:
        raise DataError(f"table {where} has no feature columns besides the label '{label}'")
    unknown = [column for column in categories if column not in features]
    if unknown:
        raise ConfigError(f"categories given for {_some(unknown)}, which are not feature columns of {where}")
    found: dict[str, list[str]] = {}
    encoded: list[str] = []
    for column in features:
        series = frame[column]
        if series.isna().all():
            raise DataError(f"column '{column}' in {where} has no values (all missing): drop it with feature_columns=")
        if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
            raise DataError(f"column '{column}' in {where} holds dates or times: drop it or convert it to numbers first")
        if column in categories:
            found[column] = list(dict.fromkeys(_as_text(pd.Series(list(categories[column]), dtype=object)).tolist()))
            if not found[column]:
                raise ConfigError(f"categories for column '{column}' are empty: list at least one category")
        elif pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            found[column] = _fit_categories(series, column, where, max_categories)
        if column in found:
            encoded.extend(f"{column}={category}" for category in found[column])
        else:
            encoded.append(column)
    classes: list[str] = []
    if label is not None:
        values = _as_text(frame[label])
        _check_no_missing_labels(values, label, where)
        classes = _sorted_names(set(values))
        if len(classes) < 2:
            raise DataError(
                f"label column '{label}' in {where} has one class ({_some(classes)}): a source needs at least two classes"
            )
    ignored = [column for column in columns if column not in features and column != label]
    return TableSchema(features, encoded, found, label, classes, ignored_columns=ignored)


def _fit_categories(series: pd.Series, column: str, where: str, max_categories: int) -> list[str]:
    """The categories of a text column, or a one-line error saying why it is not categorical."""
    pd = _pandas()
    present = series.dropna()
    numbers = pd.to_numeric(present.astype(object).map(str, na_action="ignore"), errors="coerce")
    odd = present[numbers.isna()].astype(str).unique().tolist()
    if odd and numbers.notna().mean() >= 0.9:  # a numeric column with a sentinel such as "?" or "n/a"
        raise DataError(
            f"column '{column}' in {where} is numbers mixed with text such as {_some(odd)}: blank those cells "
            f"(then impute='mean') or declare categories={{'{column}': [...]}}"
        )
    names = _sorted_names(set(_as_text(present)))
    if len(names) > max_categories:
        raise DataError(
            f"column '{column}' in {where} is text with {len(names)} distinct values (over {max_categories} for one-hot "
            f"encoding): drop it with feature_columns= or list its categories with categories="
        )
    return names


def _check_columns(frame: pd.DataFrame, schema: TableSchema, where: str) -> None:
    """Another domain must have the source's feature columns, and no columns the source did not have."""
    known = {*schema.feature_columns, *schema.ignored_columns, schema.label}
    missing = [column for column in schema.feature_columns if column not in frame.columns]
    extra = [column for column in frame.columns if column not in known]
    if missing or extra:
        raise DataError(
            f"columns of {where} differ from the source's: missing {_some(missing) or 'none'}, "
            f"extra {_some(extra) or 'none'}; give it the source's feature columns"
        )


# ----------------------------------------------------------------------------- encoding


def _encode(frame: pd.DataFrame, schema: TableSchema, where: str) -> tuple[np.ndarray, list[str]]:
    """float64 ``(N, F)`` in the schema's encoded order; missing cells stay NaN (a missing category
    makes its whole one-hot block NaN) so imputation can fill them."""
    pd = _pandas()
    blocks: list[np.ndarray] = []
    notes: list[str] = []
    for column in schema.feature_columns:
        series = frame[column]
        if column in schema.categories:
            names = schema.categories[column]
            text = _as_text(series)
            codes = text.map({name: i for i, name in enumerate(names)}).to_numpy(dtype=np.float64, na_value=np.nan)
            known, missing = ~np.isnan(codes), text.isna().to_numpy()
            block = np.zeros((len(series), len(names)))
            block[known, codes[known].astype(np.int64)] = 1.0
            block[missing] = np.nan
            unseen = ~known & ~missing
            if unseen.any():
                values = sorted(set(text[unseen]))
                notes.append(
                    f"{where}: {int(unseen.sum())} row(s) of column '{column}' have categories the source did not have "
                    f"({_some(values)}), encoded as all zeros"
                )
            blocks.append(block)
            continue
        if pd.api.types.is_numeric_dtype(series):
            numbers = series
        else:
            numbers = pd.to_numeric(series.astype(object), errors="coerce")
            text = series[numbers.isna() & series.notna()]
            if len(text):
                raise DataError(
                    f"column '{column}' in {where} is numeric in the source but holds text such as "
                    f"{_some(text.astype(str).unique().tolist())}: make it numbers"
                )
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = int(np.isinf(values).sum())
        if infinite:
            raise DataError(f"column '{column}' in {where} has {infinite} infinite value(s): replace them with numbers")
        blocks.append(values[:, None])
    return np.concatenate(blocks, axis=1), notes


def _fill_missing(encoded: np.ndarray, schema: TableSchema, where: str, impute: Impute) -> list[str]:
    """Missing cells: an error naming the columns, or (``impute="mean"``) the source means, in place."""
    missing = np.isnan(encoded)
    if not missing.any():
        return []
    owners = [c for c in schema.feature_columns for _ in schema.categories.get(c, [c])]
    counts: dict[str, int] = {}
    for i, column in enumerate(owners):  # a missing category fills its whole block: count rows once
        counts[column] = max(counts.get(column, 0), int(missing[:, i].sum()))
    counts = {column: n for column, n in counts.items() if n}
    (first, n_first), *others = counts.items()
    if impute == "none":
        also = f" (also {', '.join(f'{c!r}: {n}' for c, n in others[:3])})" if others else ""
        raise DataError(
            f"column '{first}' in {where} has {n_first} missing value(s){also}: fill them, drop those rows, "
            "or pass impute='mean'"
        )
    means = np.array([schema.means[name] for name in schema.encoded_columns])
    rows, cols = np.nonzero(missing)
    encoded[rows, cols] = means[cols]
    return [f"{where}: filled {sum(counts.values())} missing value(s) in {_some(list(counts))} with source means"]


def _check_no_missing_labels(values: pd.Series, label: str, where: str) -> None:
    missing = int(values.isna().sum())
    if missing:
        rows = np.flatnonzero(values.isna().to_numpy())[:3].tolist()
        raise DataError(
            f"label column '{label}' in {where} has {missing} missing value(s) (rows {_some(rows)}): fill or drop those rows"
        )


def _labels(frame: pd.DataFrame, schema: TableSchema, where: str) -> torch.Tensor | None:
    if schema.label is None or schema.label not in frame.columns:
        return None
    values = _as_text(frame[schema.label])
    _check_no_missing_labels(values, schema.label, where)
    index = {name: i for i, name in enumerate(schema.classes)}
    unknown = _sorted_names(set(values) - set(index))
    if unknown:
        raise DataError(
            f"label(s) {_some(unknown)} in column '{schema.label}' of {where} are not among the source's classes "
            f"{_some(schema.classes, 5)}: fix or drop those rows"
        )
    return torch.tensor([index[value] for value in values], dtype=torch.long)


# ----------------------------------------------------------------------------- arrays


def read_arrays(path: str | os.PathLike, classes: Sequence[str] | None = None) -> LoadedDomain:
    """Read ``.npz`` (array ``x``, labels ``y`` optional) or ``.npy`` (features only: unlabelled).

    ``x`` is ``(N, ...)``; uint8 stays uint8 (images), anything else becomes float32. ``y`` holds
    class indices into ``classes`` (named ``"0"`` to ``"K-1"`` unless given).
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"array file {file} not found: give a .npz (x, optional y) or .npy (x) file")
    notes: list[str] = []
    y: np.ndarray | None = None
    try:
        if file.suffix.lower() == ".npy":
            x = np.load(file, allow_pickle=False)
        elif file.suffix.lower() == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                keys = sorted(archive.files)
                if "x" not in keys:
                    raise DataError(
                        f"{file} holds arrays {_some(keys, 6)} but no 'x': save features as x and labels as y, "
                        "e.g. np.savez(path, x=features, y=labels)"
                    )
                extra = [key for key in keys if key not in ("x", "y")]
                if extra:
                    notes.append(f"{file}: ignored arrays {_some(extra)} (only x and y are read)")
                x = archive["x"]
                y = archive["y"] if "y" in keys else None
        else:
            raise DataError(f"array file {file} has an unknown format '{file.suffix}': use .npz or .npy")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {file} ({_reason(error)}): save it with np.save or np.savez") from error
    features = _check_features(x, file)
    labels = None if y is None else _check_labels(y, len(x), file, classes)
    names = [] if labels is None else list(classes) if classes is not None else [str(i) for i in range(int(labels.max()) + 1)]
    return LoadedDomain(
        x=torch.from_numpy(features),
        y=None if labels is None else torch.from_numpy(labels),
        classes=names,
        paths=[f"{file}:{i}" for i in range(len(x))],
        notes=notes,
        origin=str(file),
    )


def _check_features(x: np.ndarray, file: Path) -> np.ndarray:
    if x.ndim < 2:
        raise DataError(f"x in {file} has shape {x.shape}: features must be (N, F) or (N, ...), e.g. x[:, None]")
    if len(x) == 0:
        raise DataError(f"x in {file} has no samples (shape {x.shape})")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise DataError(f"x in {file} has dtype {x.dtype}: features must be real numbers")
    features = np.ascontiguousarray(x, dtype=np.float32)
    nan, inf = int(np.isnan(features).sum()), int(np.isinf(features).sum())
    if nan or inf:
        raise DataError(f"x in {file} has {nan} NaN and {inf} infinite value(s) (as float32): fill or drop those samples")
    return features


def _check_labels(y: np.ndarray, n: int, file: Path, classes: Sequence[str] | None) -> np.ndarray:
    if y.shape != (n,):
        raise DataError(f"y in {file} has shape {y.shape} but x has {n} samples: give one label per sample, shape ({n},)")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise DataError(f"y in {file} has dtype {y.dtype}: labels must be class indices 0..K-1 (map text labels to integers)")
    if np.issubdtype(y.dtype, np.floating):
        odd = y[~np.isfinite(y) | (y != np.round(y))]
        if len(odd):
            raise DataError(f"y in {file} has non-integer values such as {odd[0]}: labels must be class indices 0..K-1")
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise DataError(f"y in {file} has negative labels (min {labels.min()}): labels must be class indices 0..K-1")
    if classes is not None and labels.max() >= len(classes):
        raise DataError(f"y in {file} has label {labels.max()}, out of range for the source's {len(classes)} classes")
    return labels


# ----------------------------------------------------------------------------- a generated shift


@dataclass
class TableShift:
    """A generated tabular domain shift: labelled source, target (labels kept, for checking) and target test."""

    source: pd.DataFrame
    target: pd.DataFrame
    target_test: pd.DataFrame


SHAPES = ("circle", "square", "triangle")
CLASSES = ("A", "B", "C")


def make_table_shift(n_per_class: int = 200, seed: int = 0, shift: float = 1.0) -> TableShift:
    """Three classes in four numeric columns and one categorical column ``shape``.

    ``x0, x1``: class blobs on a circle; ``x2``: class-dependent with a smaller margin; ``x3``:
    noise. The target rotates ``(x0, x1)`` by ``40 * shift`` degrees and translates it by
    ``shift * (1.2, -0.8)``, and moves ``x2`` and ``x3`` by ``shift`` and ``-shift``; ``shape``
    keeps its class-conditional distribution. A source-only classifier misreads many rotated
    target samples while the target's class structure is intact, which aligning the domains can
    recover. Deterministic by ``seed``; ``shift=0`` gives three samples of one domain.
    """
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be at least 1, got {n_per_class}")
    pd = _pandas()
    rng = np.random.default_rng(seed)
    theta = math.radians(40.0 * shift)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])

    def domain(to_target: bool) -> pd.DataFrame:
        labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
        angles = 2 * math.pi * labels / len(CLASSES)
        plane = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1) + 0.6 * rng.standard_normal((len(labels), 2))
        x2 = 0.8 * labels + rng.standard_normal(len(labels))
        x3 = rng.standard_normal(len(labels))
        likely = rng.random(len(labels)) < 0.6  # the class's own shape 60% of the time, else any shape
        shape = np.where(likely, labels, rng.integers(0, len(SHAPES), len(labels)))
        if to_target:
            plane = plane @ rotation.T + shift * np.array([1.2, -0.8])
            x2, x3 = x2 + shift, x3 - shift
        order = rng.permutation(len(labels))
        return pd.DataFrame(
            {
                "x0": plane[order, 0].round(4),
                "x1": plane[order, 1].round(4),
                "x2": x2[order].round(4),
                "x3": x3[order].round(4),
                "shape": np.array(SHAPES)[shape[order]],
                "label": np.array(CLASSES)[labels[order]],
            }
        )

    return TableShift(source=domain(False), target=domain(True), target_test=domain(True))


def write_table_shift(
    out_dir: str | os.PathLike, n_per_class: int = 200, seed: int = 0, shift: float = 1.0
) -> dict[str, Path]:
    """Write :func:`make_table_shift` as a user would bring it: ``source.csv`` (labelled),
    ``target.csv`` (no label column: unlabelled) and ``target_test.csv`` (labelled)."""
    tables = make_table_shift(n_per_class, seed, shift)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.csv" for name in ("source", "target", "target_test")}
    tables.source.to_csv(files["source"], index=False)
    tables.target.drop(columns="label").to_csv(files["target"], index=False)
    tables.target_test.to_csv(files["target_test"], index=False)
    return files

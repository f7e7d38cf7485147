from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import raises_one_line

from dann.data import tables
from dann.data.loaded import check_source
from dann.data.tables import (
    TableSchema,
    make_table_shift,
    read_arrays,
    read_table,
    write_table_shift,
)
from dann.errors import ConfigError, DataError

try:
    import pandas as pd
except ImportError:  # the array readers need no pandas; the table tests are skipped
    pd = None
needs_pandas = pytest.mark.skipif(pd is None, reason="pandas is not installed")


def write(path: Path, frame: "pd.DataFrame") -> Path:
    frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write(
        tmp_path / "source.csv",
        pd.DataFrame(
            {
                "age": [30, 40, 50, 60],
                "colour": ["red", "blue", "red", "green"],
                "smoker": [True, False, False, True],
                "label": ["no", "yes", "no", "yes"],
            }
        ),
    )


# --------------------------------------------------------------------------- happy paths


@needs_pandas
def test_source_encoding_and_labels(source):
    domain, schema = read_table(source, label="label")
    assert domain.x.dtype == torch.float32 and domain.x.shape == (4, 6)
    assert schema.encoded_columns == ["age", "colour=blue", "colour=green", "colour=red", "smoker=False", "smoker=True"]
    assert schema.categories == {"colour": ["blue", "green", "red"], "smoker": ["False", "True"]}
    assert domain.x[3].tolist() == [60, 0, 1, 0, 0, 1]
    assert domain.classes == ["no", "yes"] and domain.y.dtype == torch.int64 and domain.y.tolist() == [0, 1, 0, 1]
    assert domain.paths[2] == f"{source}:2" and domain.notes == []
    assert schema.means["age"] == 45 and schema.means["colour=red"] == 0.5
    check_source(domain)
    again, _ = read_table(source, label="label")
    assert torch.equal(again.x, domain.x)


@needs_pandas
def test_target_reuses_the_source_schema(source, tmp_path):
    _, schema = read_table(source, label="label")
    target = write(
        tmp_path / "target.tsv",
        pd.DataFrame({"smoker": [False, True, True], "colour": ["green", "purple", "red"], "age": [1.5, 2, 3]}),
    )
    domain, same = read_table(target, schema=schema)
    assert same is schema
    assert domain.y is None and domain.classes == []
    assert domain.x.tolist() == [[1.5, 0, 1, 0, 1, 0], [2, 0, 0, 0, 0, 1], [3, 0, 0, 1, 0, 1]]  # 'purple' -> zeros
    assert len(domain.notes) == 1 and "'purple'" in domain.notes[0] and "all zeros" in domain.notes[0]


@needs_pandas
def test_labelled_target_uses_source_classes(source, tmp_path):
    _, schema = read_table(source, label="label")
    target = write(tmp_path / "t.csv", pd.DataFrame({"age": [1], "colour": ["red"], "smoker": [True], "label": ["yes"]}))
    domain, _ = read_table(target, schema=schema)
    assert domain.y.tolist() == [1] and domain.classes == ["no", "yes"]


@needs_pandas
def test_numeric_labels_sort_as_numbers(tmp_path):
    path = write(tmp_path / "s.csv", pd.DataFrame({"f": [1.0, 2.0, 3.0], "y": [10, 2, 2]}))
    domain, schema = read_table(path, label="y")
    assert schema.classes == ["2", "10"] and domain.y.tolist() == [1, 0, 0]


@needs_pandas
def test_impute_mean_uses_source_means(tmp_path):
    source = write(tmp_path / "s.csv", pd.DataFrame({"a": [1.0, None, 3.0], "c": ["x", "y", None], "y": [0, 1, 1]}))
    domain, schema = read_table(source, label="y", impute="mean")
    assert domain.x[1, 0] == 2.0 and domain.x[2, 1:].tolist() == [0.5, 0.5]
    assert len(domain.notes) == 1 and "filled 2 missing value(s)" in domain.notes[0]
    target = write(tmp_path / "t.csv", pd.DataFrame({"a": [100.0, None], "c": ["x", "x"]}))
    moved, _ = read_table(target, schema=schema, impute="mean")
    assert moved.x[1, 0] == 2.0  # the source's mean, not the target's


@needs_pandas
def test_feature_columns_and_declared_categories(tmp_path):
    frame = pd.DataFrame({"id": [7, 8, 9], "zip": [1, 2, 1], "v": [0.1, 0.2, 0.3], "y": ["a", "b", "a"]})
    source = write(tmp_path / "s.csv", frame)
    domain, schema = read_table(source, label="y", feature_columns=["v", "zip"], categories={"zip": [1, 2, 3]})
    assert schema.encoded_columns == ["v", "zip=1", "zip=2", "zip=3"] and schema.ignored_columns == ["id"]
    assert domain.x[1].tolist() == pytest.approx([0.2, 0, 1, 0])
    target = write(tmp_path / "t.csv", frame.drop(columns="y"))  # 'id' is allowed: the source had it too
    assert read_table(target, schema=schema)[0].x.shape == (3, 4)


@needs_pandas
def test_parquet_round_trip(source, tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.read_csv(source)
    frame.to_parquet(tmp_path / "source.parquet")
    from_csv, schema_csv = read_table(source, label="label")
    from_parquet, schema_parquet = read_table(tmp_path / "source.parquet", label="label")
    assert torch.equal(from_csv.x, from_parquet.x) and torch.equal(from_csv.y, from_parquet.y)
    assert schema_csv.encoded_columns == schema_parquet.encoded_columns


@needs_pandas
def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setattr(tables.importlib.util, "find_spec", lambda name: None)
    raises_one_line(DataError, "pip install pyarrow", read_table, path, label="y")


def test_arrays(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 2, 1, 2]), ids=np.arange(4))
    domain = read_arrays(tmp_path / "d.npz")
    assert domain.x.dtype == torch.float32 and domain.x.shape == (4, 3)
    assert domain.y.tolist() == [0, 2, 1, 2] and domain.classes == ["0", "1", "2"]
    assert len(domain.notes) == 1 and "'ids'" in domain.notes[0]
    named = read_arrays(tmp_path / "d.npz", classes=["a", "b", "c", "d"])
    assert named.classes == ["a", "b", "c", "d"]
    np.save(tmp_path / "images.npy", np.zeros((2, 1, 4, 4), dtype=np.uint8))
    images = read_arrays(tmp_path / "images.npy")
    assert images.y is None and images.classes == [] and images.x.dtype == torch.uint8
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0.0, 1.0, 1.0, 0.0]))
    assert read_arrays(tmp_path / "f.npz").y.dtype == torch.int64


@needs_pandas
def test_make_table_shift_is_deterministic_and_shifted():
    first, again, other = make_table_shift(50, seed=3), make_table_shift(50, seed=3), make_table_shift(50, seed=4)
    pd.testing.assert_frame_equal(first.source, again.source)
    pd.testing.assert_frame_equal(first.target, again.target)
    assert not first.source.equals(other.source)
    assert len(first.source) == 150 and sorted(first.source["label"].unique()) == ["A", "B", "C"]
    assert set(first.source["shape"]) == {"circle", "square", "triangle"}
    gap = (first.target[["x0", "x1", "x2"]].mean() - first.source[["x0", "x1", "x2"]].mean()).abs()
    assert (gap > 0.5).all()
    same = make_table_shift(50, seed=3, shift=0.0)
    assert ((same.target[["x0", "x1"]].mean() - same.source[["x0", "x1"]].mean()).abs() < 0.5).all()


@needs_pandas
def test_write_table_shift_reads_back(tmp_path):
    files = write_table_shift(tmp_path, n_per_class=20, seed=0)
    source, schema = read_table(files["source"], label="label")
    target, _ = read_table(files["target"], schema=schema)
    test, _ = read_table(files["target_test"], schema=schema)
    assert source.x.shape == target.x.shape == test.x.shape == (60, 7)
    assert target.y is None and test.classes == ["A", "B", "C"]


# --------------------------------------------------------------------------- bad data


@needs_pandas
def test_missing_label_column_in_source(source):
    raises_one_line(DataError, "label column 'target' not found in", read_table, source, label="target")


@needs_pandas
def test_free_text_column(tmp_path):
    frame = pd.DataFrame({"note": [f"word{i}" for i in range(60)], "y": [0, 1] * 30})
    path = write(tmp_path / "s.csv", frame)
    message = raises_one_line(DataError, "column 'note' in", read_table, path, label="y")
    assert "60 distinct values" in message and "drop it" in message


@needs_pandas
def test_numbers_with_a_text_sentinel(tmp_path):
    frame = pd.DataFrame({"age": [str(i) for i in range(19)] + ["?"], "y": [0, 1] * 10})
    path = write(tmp_path / "s.csv", frame)
    raises_one_line(DataError, "column 'age' in", read_table, path, label="y")


@needs_pandas
def test_missing_values_without_impute(tmp_path):
    frame = pd.DataFrame({"a": [1.0, None, None], "b": [None, 1.0, 2.0], "y": [0, 1, 1]})
    path = write(tmp_path / "s.csv", frame)
    message = raises_one_line(DataError, "column 'a' in", read_table, path, label="y")
    assert "2 missing value(s)" in message and "'b': 1" in message and "impute='mean'" in message


@needs_pandas
def test_target_with_other_columns(source, tmp_path):
    _, schema = read_table(source, label="label")
    target = write(tmp_path / "t.csv", pd.DataFrame({"age": [1], "colour": ["red"], "weight": [70]}))
    message = raises_one_line(DataError, "missing 'smoker'", read_table, target, schema=schema)
    assert "extra 'weight'" in message


@needs_pandas
def test_target_numeric_column_with_text(source, tmp_path):
    _, schema = read_table(source, label="label")
    target = write(tmp_path / "t.csv", pd.DataFrame({"age": ["old"], "colour": ["red"], "smoker": [True]}))
    raises_one_line(DataError, "column 'age' in", read_table, target, schema=schema)


@needs_pandas
def test_unknown_target_label(source, tmp_path):
    _, schema = read_table(source, label="label")
    target = write(tmp_path / "t.csv", pd.DataFrame({"age": [1], "colour": ["red"], "smoker": [True], "label": ["maybe"]}))
    raises_one_line(DataError, "label(s) 'maybe'", read_table, target, schema=schema)


@needs_pandas
def test_empty_tables(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,y\n")
    raises_one_line(DataError, "has no rows", read_table, header_only, label="y")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    raises_one_line(DataError, "is empty", read_table, empty, label="y")


@needs_pandas
def test_source_label_with_one_class(tmp_path):
    path = write(tmp_path / "s.csv", pd.DataFrame({"a": [1, 2], "y": ["cat", "cat"]}))
    raises_one_line(DataError, "has one class ('cat')", read_table, path, label="y")


@needs_pandas
def test_other_table_errors(tmp_path, source):
    raises_one_line(DataError, "not found", read_table, tmp_path / "none.csv", label="y")
    (tmp_path / "t.xlsx").write_bytes(b"")
    raises_one_line(DataError, "unknown format '.xlsx'", read_table, tmp_path / "t.xlsx", label="y")
    path = write(tmp_path / "inf.csv", pd.DataFrame({"a": [1.0, np.inf], "y": [0, 1]}))
    raises_one_line(DataError, "infinite", read_table, path, label="y")
    path = write(tmp_path / "nolabel.csv", pd.DataFrame({"a": [1.0, 2.0], "y": [0, None]}))
    raises_one_line(DataError, "label column 'y' in", read_table, path, label="y")
    _, schema = read_table(source, label="label")
    raises_one_line(ConfigError, "schema", read_table, source, schema=schema, feature_columns=["age"])
    raises_one_line(ConfigError, "impute", read_table, source, label="label", impute="median")
    assert isinstance(schema, TableSchema)


def test_array_errors(tmp_path):
    x = np.ones((4, 2))
    np.savez(tmp_path / "k.npz", features=x, labels=np.zeros(4))
    raises_one_line(DataError, "'features', 'labels' but no 'x'", read_arrays, tmp_path / "k.npz")
    np.save(tmp_path / "flat.npy", np.ones(4))
    raises_one_line(DataError, "shape (4,)", read_arrays, tmp_path / "flat.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [np.inf, 0]]))
    raises_one_line(DataError, "1 NaN and 1 infinite", read_arrays, tmp_path / "nan.npy")
    np.savez(tmp_path / "half.npz", x=x, y=np.array([0, 0.5, 1, 1]))
    raises_one_line(DataError, "non-integer values such as 0.5", read_arrays, tmp_path / "half.npz")
    np.savez(tmp_path / "short.npz", x=x, y=np.array([0, 1]))
    raises_one_line(DataError, "give one label per sample", read_arrays, tmp_path / "short.npz")
    np.savez(tmp_path / "neg.npz", x=x, y=np.array([0, -1, 1, 1]))
    raises_one_line(DataError, "negative", read_arrays, tmp_path / "neg.npz")
    np.savez(tmp_path / "text.npz", x=x, y=np.array(["a", "b", "a", "b"]))
    raises_one_line(DataError, "class indices", read_arrays, tmp_path / "text.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    raises_one_line(DataError, "cannot read", read_arrays, tmp_path / "objects.npy")
    np.savez(tmp_path / "range.npz", x=x, y=np.array([0, 1, 2, 3]))
    raises_one_line(DataError, "out of range", read_arrays, tmp_path / "range.npz", classes=["a", "b"])

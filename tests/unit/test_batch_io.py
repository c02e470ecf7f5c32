"""Streaming reads and atomic batch writes of tabular files (batch scoring's I/O)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from churnops.errors import DataError
from churnops.io.datasets import BatchWriter, iter_table, row_count

pytestmark = pytest.mark.unit


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"c{i}" for i in range(rows)], "x": range(rows), "extra": 1.5})


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_iter_table_blocks_keep_rows_and_only_asked_columns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"in{suffix}"
    frame = _frame(10)
    (frame.to_parquet if suffix == ".parquet" else frame.to_csv)(path, index=False)
    blocks = list(iter_table(path, ["x", "id", "absent"], rows=4))
    assert [len(b) for b in blocks] == [4, 4, 2]
    joined = pd.concat(blocks, ignore_index=True)
    assert list(joined.columns) == ["x", "id"]  # the caller names the missing column
    assert joined["id"].tolist() == frame["id"].tolist()
    assert row_count(path) == (10 if suffix == ".parquet" else None)


def test_iter_table_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        list(iter_table(tmp_path / "nope.parquet", ["x"], 4))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*bad\.parquet"):
        list(iter_table(bad, ["x"], 4))


def _batch(values: list[float]) -> pa.RecordBatch:
    reasons = pa.DictionaryArray.from_arrays(
        pa.array([1, 0][: len(values)], pa.int32()), pa.array(["a", "b"])
    )
    return pa.RecordBatch.from_arrays([pa.array(values), reasons], names=["p", "reason"])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_batch_writer_appends_batches(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "sub" / f"out{suffix}"
    with BatchWriter(out) as writer:
        writer.write(_batch([0.1, 0.2]))
        writer.write(_batch([0.3]))
    read = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert read["p"].tolist() == [0.1, 0.2, 0.3]
    assert [str(v) for v in read["reason"]] == ["b", "a", "b"]  # labels, not dictionary codes
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial file left


def test_batch_writer_failure_keeps_the_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"earlier result")

    def fail_half_way() -> None:
        with BatchWriter(out) as writer:
            writer.write(_batch([0.1]))
            raise RuntimeError("scoring failed half-way")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert out.read_bytes() == b"earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_batch_writer_rejects_unknown_types_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported output type '.json'"):
        BatchWriter(tmp_path / "out.json")


def test_dictionary_read_categoricals_transform_like_text(tmp_path: Path) -> None:
    """Categorical columns streamed as pandas categoricals give the very matrix the text path gives:
    blanks and nulls are missing, unseen values unknown."""
    from churnops.core.features import FeatureTransformer
    from churnops.core.params import Params
    from churnops.core.schema import conform_to_spec
    from churnops.core.synthetic import generate_customers
    from churnops.io.datasets import load_spec, read_table

    spec = load_spec("synthetic")
    frame = generate_customers(3000, seed=5)
    transformer = FeatureTransformer(spec, Params().features).fit(conform_to_spec(frame, spec))
    scoring = frame.drop(columns=["churn"])
    column = spec.features.categorical[0]
    scoring[column] = scoring[column].astype(object)
    scoring.loc[::7, column] = "  "
    scoring.loc[1::11, column] = None
    scoring.loc[2::13, column] = "never seen"
    path = tmp_path / "in.parquet"
    scoring.to_parquet(path, index=False)
    columns = [spec.id_column, *spec.feature_columns]
    blocks = list(iter_table(path, columns, 1000, categorical=spec.features.categorical))
    assert isinstance(blocks[0][column].dtype, pd.CategoricalDtype)
    streamed = [transformer.transform(conform_to_spec(b, spec, with_target=False)) for b in blocks]
    whole = transformer.transform(conform_to_spec(read_table(path), spec, with_target=False))
    np.testing.assert_array_equal(np.vstack(streamed), whole)

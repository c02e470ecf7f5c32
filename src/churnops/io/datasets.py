"""Read and write tabular data files (CSV or Parquet), and load specs and params by name or path."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.core.params import Params, parse_params
from churnops.core.spec import DatasetSpec, parse_spec
from churnops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pyarrow as pa

BUILTIN_SPECS = ("synthetic", "telco")
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".txt", ".gz"}


def _check_readable(path: Path) -> str:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"data path is a directory, expected a CSV or Parquet file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    return path.suffix.lower()


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as raw as possible; errors name the file and the problem."""
    suffix = _check_readable(path)
    try:
        if suffix in _PARQUET:
            return pd.read_parquet(path)
        if suffix in _CSV:
            # Keep ids and codes as text; numbers are parsed per the spec later.
            return pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"data file has no rows or columns: {path}") from err
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    raise DataError(f"unsupported data file type {suffix!r} for {path}: use .csv or .parquet")


def iter_table(
    path: Path, columns: Sequence[str], rows: int, categorical: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """Blocks of about `rows` rows holding those of `columns` the file has (a missing one is left
    for the caller to name). Parquet is streamed, reading only those columns, and `categorical`
    text columns arrive as pandas categoricals straight from Parquet's dictionary pages (no
    string per row to build, hash or strip); CSV is read whole."""
    suffix = _check_readable(path)
    if suffix not in _PARQUET:
        frame = read_table(path)
        present = [c for c in columns if c in frame.columns]
        for start in range(0, len(frame), rows):
            yield frame.iloc[start : start + rows][present]
        return
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)  # type: ignore[no-untyped-call]
        text = [c for c in categorical if c in schema.names and _is_text(schema.field(c).type)]
        source = pq.ParquetFile(path, read_dictionary=text)  # type: ignore[no-untyped-call]
        present = [c for c in columns if c in schema.names]
        for batch in source.iter_batches(batch_size=rows, columns=present):  # type: ignore[no-untyped-call]
            yield batch.to_pandas()
    except (ValueError, OSError) as err:  # pyarrow's errors derive from these
        raise DataError(f"cannot read {path}: {err}") from err


def row_count(path: Path) -> int | None:
    """Rows in a Parquet file from its footer; None when that is not known without reading it."""
    if path.suffix.lower() not in _PARQUET or not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)  # type: ignore[no-untyped-call]
    except (ValueError, OSError):
        return None  # reading it will say what is wrong


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


class BatchWriter:
    """Writes Arrow record batches to one CSV or Parquet file (by extension) as they come.

    The file appears only when every batch is written: batches go to a temporary file beside it
    that replaces `path` on success, so a failed run leaves an earlier output untouched.
    """

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in _PARQUET and suffix != ".csv":
            raise DataError(f"unsupported output type {suffix!r} for {path}: use .csv or .parquet")
        self.path = path
        self._partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._parquet = suffix in _PARQUET
        self._writer: Any = None  # pyarrow's ParquetWriter or CSVWriter (untyped)

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa

        if not self._parquet:  # CSV has no dictionary type: write the labels
            columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
            batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._open(batch.schema)
        self._writer.write_batch(batch)

    def _open(self, schema: pa.Schema) -> Any:
        if self._parquet:
            import pyarrow.parquet as pq

            return pq.ParquetWriter(self._partial, schema)  # type: ignore[no-untyped-call]
        from pyarrow import csv

        return csv.CSVWriter(self._partial, schema)  # type: ignore[attr-defined]

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
        if error is None and self._writer is not None:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write CSV or Parquet by extension, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in _PARQUET:
        frame.to_parquet(path, index=False)
    elif path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise DataError(f"unsupported output type {path.suffix!r} for {path}: use .csv or .parquet")
    return path


def load_spec(name_or_path: str) -> DatasetSpec:
    """A built-in spec by name (`synthetic`, `telco`) or a spec YAML file by path."""
    if name_or_path in BUILTIN_SPECS:
        text = resources.files("churnops.specs").joinpath(f"{name_or_path}.yaml").read_text()
        return parse_spec(text, source=f"built-in spec {name_or_path!r}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"spec {name_or_path!r} is neither a built-in spec ({', '.join(BUILTIN_SPECS)}) nor a file"
        )
    return parse_spec(path.read_text(), source=str(path))


def load_params(path: Path | None) -> Params:
    """Params from a YAML file; with no file, `./params.yaml` if present, else the defaults."""
    if path is None:
        default = Path("params.yaml")
        return parse_params(default.read_text(), source=str(default)) if default.is_file() else Params()
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    return parse_params(path.read_text(), source=str(path))

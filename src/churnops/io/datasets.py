"""Read and write tabular data files (CSV or Parquet), and load specs and params by name or path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from churnops.core.params import Params, parse_params
from churnops.core.spec import DatasetSpec, parse_spec
from churnops.errors import ConfigError, DataError

BUILTIN_SPECS = ("synthetic", "telco")
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".txt", ".gz"}


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as raw as possible; errors name the file and the problem."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"data path is a directory, expected a CSV or Parquet file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {path}")
    suffix = path.suffix.lower()
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

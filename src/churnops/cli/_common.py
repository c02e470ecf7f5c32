"""What every command group shares: settings, consoles, logging, JSON output, database errors.

Heavy libraries (Great Expectations, MLflow, LightGBM) are imported inside the
commands that need them so `churnops --help` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from churnops.settings import Settings

WorkdirOption = Annotated[
    Path | None, typer.Option(help="Stage working directory (default: $CHURNOPS_HOME/pipeline).")
]
ParamsOption = Annotated[
    Path | None, typer.Option(help="params.yaml (default: ./params.yaml if present, else built-in defaults).")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Registered model name (default: the only one, or CHURNOPS_MODEL_NAME)."),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def load_settings() -> Settings:
    from churnops.settings import Settings

    return Settings()


def make_console(stderr: bool = True) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


NOISY_LOGGERS = ("alembic", "great_expectations", "urllib3", "git", "matplotlib")
_NOISY_PREFIXES = tuple(f"{name}." for name in NOISY_LOGGERS)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Warnings and errors of the noisy libraries pass; their info and debug lines do not."""
    name = record.name
    return record.levelno >= logging.WARNING or not (
        name in NOISY_LOGGERS or name.startswith(_NOISY_PREFIXES)
    )


def configure_logging(settings: Settings, console: Console) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(
        console=console, show_path=False, show_level=False, markup=False, log_time_format="%X"
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(message)s", handlers=[handler], force=True
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Some libraries set their own module loggers to INFO on import (Great Expectations does), which
    # a parent's level does not override: the handler drops their chatter instead.
    handler.addFilter(_quiet_libraries)
    # MLflow configures its own loggers on import: its table-creation and pickling notes are noise here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """An unreachable database is a user-facing condition: one line, not a traceback."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import OperationalError

    from churnops.errors import ConfigError

    try:
        yield
    except OperationalError as err:
        raise ConfigError(f"database unreachable: {str(err.orig).strip().splitlines()[0]}") from err
    except RedisError as err:
        raise ConfigError(f"online store unreachable: {err}") from err


def print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))

"""Service logging: one line per record on stderr, JSON in production, cheap to format.

Only the `serve` entry point calls `configure`; modules just log.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from churnops.settings import Settings


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...access fields}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if access:
            payload |= access
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for development; access records show their fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        access = getattr(record, "access", None)
        message = record.getMessage()
        if access:
            message = " ".join(f"{k}={v}" for k, v in access.items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {message}"
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.app_env == "production" else TextFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    for noisy in ("alembic", "urllib3", "git", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

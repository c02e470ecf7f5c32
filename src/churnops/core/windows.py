"""Monitoring windows and names as users type them (`--window 1h`, `--window 5000`, `?metric=psi`),
and the JSON form of monitoring answers.

A window is either the last N predictions or the predictions of the last duration. Each
parser raises InvalidRequest (HTTP 422, one CLI line) naming the value, the field and
the accepted forms, so a typo never reaches numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from churnops.errors import InvalidRequest

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_COUNT = re.compile(r"^(\d+)$")
MAX_WINDOW_SECONDS = 366 * 86_400


@dataclass(frozen=True)
class Window:
    """Exactly one of `seconds` (the last duration) or `predictions` (the last N) is set."""

    seconds: int | None = None
    predictions: int | None = None

    def describe(self) -> str:
        if self.seconds is not None:
            return f"last {_duration_text(self.seconds)}"
        return f"last {self.predictions} predictions"


_SHOWN_UNITS = (("d", 86_400), ("h", 3600), ("m", 60))  # no weeks: '60d' reads better than '8w4d'


def _duration_text(seconds: int) -> str:
    """3600 -> '1h', 5184000 -> '60d', 90 -> '90s': the largest unit that divides it, as users type it."""
    unit, size = next(((u, n) for u, n in _SHOWN_UNITS if seconds % n == 0), ("s", 1))
    return f"{seconds // size}{unit}"


def parse_window(text: str, field: str = "window") -> Window:
    """'15m', '1h', '1d', '2w' (a duration) or '5000' (a number of predictions)."""
    value = text.strip().lower()
    if match := _DURATION.match(value):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if not 0 < seconds <= MAX_WINDOW_SECONDS:
            raise InvalidRequest(f"{field}: {text!r} must be longer than 0 and at most 366d", field)
        return Window(seconds=seconds)
    if match := _COUNT.match(value):
        count = int(match.group(1))
        if count < 1:
            raise InvalidRequest(f"{field}: {text!r} must be at least 1 prediction", field)
        return Window(predictions=count)
    raise InvalidRequest(
        f"{field}: unknown window {text!r}; "
        "use a duration (30s, 15m, 1h, 1d, 2w) or a number of predictions (5000)",
        field,
    )


def check_name(value: str, known: Sequence[str], what: str, field: str) -> str:
    """`value` when it is one of `known`, else InvalidRequest listing them."""
    if value not in known:
        raise InvalidRequest(f"{field}: unknown {what} {value!r}; known: {', '.join(known)}", field)
    return value


def json_ready(value: Any) -> Any:
    """Dicts, lists and tuples with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value

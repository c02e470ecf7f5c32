"""`churnops audit`: verify the ledger's chains, summarise it, export it pseudonymised."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from churnops.core.ledger import FIELDS, ChainReport, verify_chain
from churnops.errors import DataError
from churnops.io.ledger_store import LedgerStore
from churnops.io.secrets import Secrets, load_secrets
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings

logger = logging.getLogger(__name__)

# Exported as stored, with the time as ISO text, minus the ciphertext, its key period and the link.
_NOT_EXPORTED = {"payload", "key_epoch", "prev_hash", "at_us"}
EXPORT_FIELDS = ("at", *(name for name in FIELDS if name not in _NOT_EXPORTED))


@dataclass(frozen=True)
class Verification:
    chains: list[ChainReport]

    @property
    def ok(self) -> bool:
        return all(chain.problem is None for chain in self.chains)

    @property
    def records(self) -> int:
        return sum(chain.records for chain in self.chains)

    def summary(self) -> str:
        problems = [chain.problem for chain in self.chains if chain.problem is not None]
        if problems:
            return f"ledger verification FAILED: {problems[0]}" + (
                f" (and {len(problems) - 1} more chains)" if len(problems) > 1 else ""
            )
        checkpoints = sum(chain.checkpoints for chain in self.chains)
        return (
            f"ledger verified: {self.records:,} records in {len(self.chains)} chains, "
            f"{checkpoints:,} signed checkpoints, no edit, deletion, reordering or truncation found"
        )


@contextmanager
def ledger_store(settings: Settings) -> Iterator[LedgerStore]:
    if settings.sql_store_url.startswith("sqlite"):
        settings.ensure_home()
    store = SqlStore(settings.sql_store_url)
    try:
        yield LedgerStore(store)
    finally:
        store.close()


def verify(
    settings: Settings, keys: Secrets | None = None, progress: Callable[[int], None] | None = None
) -> Verification:
    """Check every writer's chain and checkpoints; the first problem of each chain is reported."""
    keys = keys or load_secrets(settings)
    with ledger_store(settings) as store:
        reports = [
            verify_chain(
                writer,
                _counted(store.chain(writer), progress),
                store.checkpoints(writer),
                keys.checkpoint_key,
            )
            for writer in store.writers()
        ]
    return Verification(reports)


def _counted(
    rows: Iterator[dict[str, Any]], progress: Callable[[int], None] | None
) -> Iterator[dict[str, Any]]:
    for count, row in enumerate(rows, 1):
        if progress is not None and count % 10_000 == 0:
            progress(10_000)
        yield row


def stats(settings: Settings) -> dict[str, Any]:
    """Counts by kind, writers, checkpoints and the time span (ISO times)."""
    with ledger_store(settings) as store:
        counts = store.counts()
    for key in ("first_at_us", "last_at_us"):
        value = counts.pop(key)
        counts[key.removesuffix("_us")] = _iso(value) if value is not None else None
    return counts


def export(settings: Settings, since: str, out: Path) -> int:
    """Records at or after `since` (ISO date or time) as JSON lines, pseudonymised (payloads omitted)."""
    since_us = _parse_since(since)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".part")
    written = 0
    with ledger_store(settings) as store, temporary.open("wb") as handle:
        for row in store.records(since_us=since_us):
            row["at"] = _iso(row["at_us"])
            handle.write(orjson.dumps({name: row.get(name) for name in EXPORT_FIELDS}) + b"\n")
            written += 1
    temporary.replace(out)  # a failed export leaves no half file under the requested name
    return written


def _parse_since(since: str) -> int:
    try:
        moment = datetime.fromisoformat(since)
    except ValueError as err:
        raise DataError(
            f"--since {since!r}: expected an ISO date like 2026-11-01 or 2026-11-01T12:00"
        ) from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, tz=UTC).isoformat()

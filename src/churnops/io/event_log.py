"""Admin, privacy and lifecycle actions as ledger events, each durable before it takes effect.

An `EventLog` is a writer of its own (a chain per process). `append` stores the event and
a checkpoint in one transaction and may run the action's own SQL in that same
transaction, so an action whose event cannot be written is not carried out, and an
event never claims an action that was rolled back.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from churnops.core.ledger import FIELDS, Chain, RecordIds, sign_checkpoint
from churnops.core.ledger_rows import Sealer
from churnops.io.ledger_store import LedgerStore
from churnops.io.secrets import Secrets
from churnops.io.sql_schema import ledger_checkpoints, ledger_records

SqlAction = Callable[[sa.Connection], Any]


def new_writer_id(kind: str) -> str:
    """Unique per process and purpose, and free of anything about the host's users or customers."""
    return f"{kind}{os.getpid():x}-{secrets.token_hex(6)}"


class EventLog:
    """Synchronous, one event at a time (events are rare; predictions have the batched writer)."""

    def __init__(self, store: LedgerStore, keys: Secrets, epoch_days: int = 7) -> None:
        self.store = store
        self.checkpoint_key = keys.checkpoint_key
        self.ids = RecordIds()
        self._lock = threading.Lock()
        chain = Chain(new_writer_id("e"))
        self.sealer = Sealer(chain, keys.pseudonym_key, keys.feature_key, keys.wrapping_key, epoch_days)

    def subject(self, customer_id: str) -> str:
        return self.sealer.subject(customer_id)

    def append(
        self,
        action: str,
        details: Mapping[str, Any],
        principal: str | None,
        *,
        subject: str | None = None,
        request_id: str | None = None,
        then: SqlAction | None = None,
    ) -> tuple[str, Any]:
        """Record `action` and run `then(conn)` in the same transaction; returns (event id, then's result)."""
        with self._lock:  # one event at a time per chain: concurrent admin calls never share a seq
            chain = self.sealer.chain
            seq, head = chain.seq, chain.head
            row = self.sealer.event_row(self.ids.next(), action, details, principal, subject, request_id)
            checkpoint = sign_checkpoint(self.checkpoint_key, chain.writer_id, chain.seq, chain.head, row[4])
            try:
                with self.store.store.ready().begin() as conn:
                    conn.execute(ledger_records.insert(), [dict(zip(FIELDS, row, strict=True))])
                    conn.execute(ledger_checkpoints.insert(), [checkpoint.as_row()])
                    result = then(conn) if then is not None else None
            except BaseException:
                chain.seq, chain.head = seq, head  # nothing was stored: the chain stays where it was
                raise
        return str(row[0]), result


def now_us() -> int:
    return time.time_ns() // 1000

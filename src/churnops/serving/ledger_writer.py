"""The prediction ledger's writer: a bounded in-process queue in front of batched, chained writes.

The request handler only appends a `Prediction` tuple to a deque (refused with 503 when
the queue is full: no unaudited prediction is answered). A supervised task drains it
every `CHURNOPS_AUDIT_FLUSH_MS` (at once in sync mode), seals and chains the batch on the
event loop in slices of SEAL_SLICE records (CPU work in a thread would fight the loop for
the GIL at each of its system calls), and a worker thread stores it in one transaction
(COPY on PostgreSQL). When the
database fails or is slow the batch is appended to the spool file and fsynced instead;
the spool is replayed, in order and idempotently, as soon as the database answers again.

Durability: `async` (default) — a record is durable within the flush interval plus one
write (~25-100 ms); a SIGKILL loses what is in the queue and the batch in flight, at
most that much. SIGTERM drains the queue into the database or the spool before exit.
`sync` — the response waits until its record is in the database or the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops.core.breaker import CircuitBreaker
from churnops.core.ledger import sign_checkpoint
from churnops.core.ledger_rows import Prediction, Sealer
from churnops.errors import AuditUnavailable
from churnops.io.ledger_store import LedgerStore
from churnops.io.spool import Spool, SpoolBatch, claim, read_frames, release

logger = logging.getLogger(__name__)

MAX_BATCH = 5_000
SEAL_SLICE = 128  # records sealed between two turns of the event loop (~0.8 ms)
ORPHAN_SCAN_S = 10.0  # how often a healthy writer looks for spool files of writers that died


@dataclass
class LedgerCounters:
    """Counted in the writer thread, read by the metrics snapshot (plain ints: no locks needed)."""

    outcomes: dict[str, int] = field(
        default_factory=lambda: {"written": 0, "spooled": 0, "replayed": 0, "refused": 0, "unsealable": 0}
    )
    write_seconds_sum: float = 0.0
    writes: int = 0
    seal_seconds_sum: float = 0.0  # on the serving loop: the ledger's own cost per record, in situ
    sealed: int = 0
    last_error: str | None = None


class LedgerWriter:
    """One per worker process: its own chain, spool file and data keys."""

    def __init__(
        self,
        store: LedgerStore,
        spool: Spool,
        sealer: Sealer,
        checkpoint_key: bytes,
        *,
        sync: bool = False,
        queue_size: int = 100_000,
        flush_s: float = 0.04,
        checkpoint_s: float = 5.0,
        database_down: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self.store = store
        self.spool = spool
        self.sealer = sealer
        self.checkpoint_key = checkpoint_key
        self.sync = sync
        self.queue_size = queue_size
        self.flush_s = flush_s
        self.checkpoint_s = checkpoint_s
        self.database_down = database_down
        self.queue: deque[tuple[Prediction, asyncio.Future[None] | None]] = deque()
        self.pending: list[SpoolBatch] = []  # sealed, but neither stored nor spooled yet
        self.pending_records = 0
        self.breaker = CircuitBreaker(failure_threshold=1, reset_after=1.0)
        self.counters = LedgerCounters()
        self._checkpointed_seq = sealer.chain.seq
        self._checkpointed_at = time.monotonic()
        self._wake: asyncio.Event | None = None
        self._orphans_checked_at = 0.0
        self._spooled = spool.pending()  # a spool file left with frames (same writer id: never)
        # Set when a delivery ended with records neither stored nor spooled. Not `bool(pending)`:
        # pending is briefly non-empty during every ordinary write, and readiness must not see that.
        self._held = False

    @property
    def writer_id(self) -> str:
        return self.sealer.chain.writer_id

    # -- the request side ----------------------------------------------------------------

    def submit(self, prediction: Prediction) -> None:
        """Hot path (async durability): queue the record or refuse the prediction."""
        if len(self.queue) + self.pending_records >= self.queue_size:
            self.counters.outcomes["refused"] += 1
            raise AuditUnavailable("the prediction ledger cannot take more records: try again shortly")
        self.queue.append((prediction, None))

    async def submit_durable(self, prediction: Prediction) -> None:
        """Sync durability: return once the record is in the database or the spool."""
        if len(self.queue) + self.pending_records >= self.queue_size:
            self.counters.outcomes["refused"] += 1
            raise AuditUnavailable("the prediction ledger cannot take more records: try again shortly")
        done = asyncio.get_running_loop().create_future()
        self.queue.append((prediction, done))
        if self._wake is not None:
            self._wake.set()
        await done

    def depth(self) -> int:
        return len(self.queue) + self.pending_records

    def healthy(self) -> bool:
        """False when the last delivery could neither store nor spool, or the queue is nearly full."""
        return not self._held and self.depth() < 0.9 * self.queue_size

    # -- the writer task -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Supervised body: flush on every tick (or at once when a sync request waits)."""
        self._wake = wake = asyncio.Event()
        await asyncio.to_thread(self.replay_orphans)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.flush_s)
            wake.clear()
            await self.flush()
        await self.drain()

    async def flush(self) -> int:
        """Write what is queued (up to one batch); resolve the sync waiters of that batch."""
        items = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_BATCH))]
        if not items and not self._checkpoint_due() and not self.pending:
            return 0
        try:
            rows = await self._seal([p for p, _ in items])
            await asyncio.to_thread(self._persist, rows)
        except BaseException as err:
            for _, done in items:
                if done is not None and not done.done():
                    done.set_exception(AuditUnavailable(f"the ledger record was not stored: {err}"))
            raise
        for _, done in items:
            if done is not None and not done.done():
                done.set_result(None)
        return len(items)

    async def drain(self) -> None:
        """Shutdown: everything queued goes to the database or the spool, then a last checkpoint."""
        while self.queue:
            await self.flush()
        await asyncio.to_thread(self._persist, [], True)

    async def _seal(self, predictions: list[Prediction]) -> list[list[Any]]:
        """Seal and chain on the event loop, a slice at a time with requests in between: pure CPU
        in a thread would contend with the loop for the GIL at every one of its system calls (on
        one core that cost the loop more than the sealing itself)."""
        rows: list[list[Any]] = []
        for start in range(0, len(predictions), SEAL_SLICE):
            if start:
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:  # shutdown past its deadline: the chain has moved on,
                    self._seal_into(rows, predictions[start:])
                    self._persist(rows)  # so these records are stored or spooled here, not dropped
                    raise
            began = time.perf_counter()
            self._seal_into(rows, predictions[start : start + SEAL_SLICE])
            self.counters.seal_seconds_sum += time.perf_counter() - began
        self.counters.sealed += len(rows)  # unsealable records are counted apart
        return rows

    def _seal_into(self, rows: list[list[Any]], predictions: list[Prediction]) -> None:
        """Append the sealed rows; a record that cannot be sealed (a value JSON cannot hold) is
        counted and logged as `unsealable` and the rest of the batch goes on (the chain only moves
        for whole records, so it has no gap)."""
        while predictions:
            before = len(rows)
            try:
                rows.extend(map(self.sealer.prediction_row, predictions))  # keeps what it sealed
                return
            except Exception as err:
                bad = predictions[len(rows) - before]
                self.counters.outcomes["unsealable"] += 1
                self.counters.last_error = f"unsealable record {bad.prediction_id}: {err}"
                logger.error("ledger record %s cannot be sealed (%s): not stored", bad.prediction_id, err)
                predictions = predictions[len(rows) - before + 1 :]

    # -- the worker thread ---------------------------------------------------------------

    def _persist(self, rows: list[list[Any]], final: bool = False) -> None:
        batch = SpoolBatch(rows, self.sealer.take_new_keys())
        if final or self._checkpoint_due():
            self._add_checkpoint(batch)
        if batch.records or batch.checkpoints or batch.keys:
            self.pending.append(batch)
            self.pending_records += len(rows)
        self._deliver()

    def _checkpoint_due(self) -> bool:
        moved = self.sealer.chain.seq > self._checkpointed_seq
        return moved and time.monotonic() - self._checkpointed_at >= self.checkpoint_s

    def _add_checkpoint(self, batch: SpoolBatch) -> None:
        chain = self.sealer.chain
        if chain.seq == self._checkpointed_seq:
            return
        at_us = time.time_ns() // 1000
        batch.checkpoints.append(
            sign_checkpoint(self.checkpoint_key, chain.writer_id, chain.seq, chain.head, at_us).as_row()
        )
        self._checkpointed_seq, self._checkpointed_at = chain.seq, time.monotonic()

    def _deliver(self) -> None:
        """Database first (after replaying the spool), else the spool; what neither takes stays pending."""
        try:
            self._try_deliver()
        finally:
            self._held = bool(self.pending)

    def _try_deliver(self) -> None:
        if self.breaker.allow():
            try:
                self._replay_spool()
                while self.pending:
                    self._store(self.pending[0], "written")
                self.breaker.record_success()
                if time.monotonic() - self._orphans_checked_at > ORPHAN_SCAN_S:
                    self.replay_orphans()
                return
            except self.database_down as err:
                self.breaker.record_failure()
                self.counters.last_error = f"{type(err).__name__}: {err}"
                logger.warning("ledger database unavailable (%s): spooling", type(err).__name__)
        try:
            while self.pending:
                batch = self.pending[0]
                self.spool.append(batch)
                self._spooled = True
                self._done(batch, "spooled")
        except OSError as err:
            self.counters.last_error = f"spool: {err}"
            logger.error("ledger spool unwritable (%s): %d records held in memory", err, self.pending_records)

    def _store(self, batch: SpoolBatch, outcome: str) -> None:
        started = time.perf_counter()
        self.store.append(batch.records, batch.keys, batch.checkpoints)
        self.counters.write_seconds_sum += time.perf_counter() - started
        self.counters.writes += 1
        self._done(batch, outcome)

    def _done(self, batch: SpoolBatch, outcome: str) -> None:
        self.pending.pop(0)
        self.pending_records -= len(batch.records)
        self.counters.outcomes[outcome] += len(batch.records)

    def _replay_spool(self) -> None:
        if not self._spooled:  # no fstat per batch: this writer knows when it spooled
            return
        replayed = 0
        for batch in self.spool.batches():
            self.store.append(batch.records, batch.keys, batch.checkpoints, idempotent=True)
            replayed += len(batch.records)
        self.spool.clear()
        self._spooled = False
        self.counters.outcomes["replayed"] += replayed
        logger.info("ledger spool replayed: %d records", replayed)

    def replay_orphans(self) -> int:
        """Spool files left by writers that died: replay them into the database (idempotently)."""
        self._orphans_checked_at = time.monotonic()
        total = 0
        for path in self.spool.orphans():
            total += self._replay_orphan(path)
        return total

    def _replay_orphan(self, path: Path) -> int:
        fd = claim(path)
        if fd is None:
            return 0
        replayed, done = 0, False
        try:
            for batch in read_frames(path):
                self.store.append(batch.records, batch.keys, batch.checkpoints, idempotent=True)
                replayed += len(batch.records)
            done = True
        except self.database_down as err:
            logger.warning("orphan spool %s not replayed yet (%s)", path.name, type(err).__name__)
        finally:
            release(path, fd, done)
        self.counters.outcomes["replayed"] += replayed
        return replayed

    def spool_bytes(self) -> int:
        return self.spool.size()

    def stats(self) -> dict[str, Any]:
        return {
            "writer_id": self.writer_id,
            "queue_depth": self.depth(),
            "spool_bytes": self.spool_bytes(),
            "durability": "sync" if self.sync else "async",
            **self.counters.outcomes,
            "last_error": self.counters.last_error,
        }


def open_ledger(settings: Any, keys: Any, epoch_days: int) -> tuple[LedgerWriter, Any]:
    """This worker's prediction writer and event log on the SQL store (schema migrated if reachable)."""
    import sqlalchemy as sa

    from churnops.core.ledger import Chain
    from churnops.io.event_log import EventLog, new_writer_id
    from churnops.io.ledger_store import writer_limits
    from churnops.io.offline_store import DEPENDENCY_DOWN
    from churnops.io.sql_store import SqlStore

    database_down: tuple[type[BaseException], ...] = (*DEPENDENCY_DOWN, sa.exc.DBAPIError)
    store = LedgerStore(SqlStore(settings.sql_store_url, writer_limits()))
    try:
        store.store.upgrade()
    except database_down as err:  # the writer spools until the database answers
        logger.warning("ledger database unreachable at start-up (%s): spooling", type(err).__name__)
    writer_id = new_writer_id("p")
    sealer = Sealer(Chain(writer_id), keys.pseudonym_key, keys.feature_key, keys.wrapping_key, epoch_days)
    writer = LedgerWriter(
        store,
        Spool(settings.home / "spool", writer_id),
        sealer,
        keys.checkpoint_key,
        sync=settings.audit_durability == "sync",
        queue_size=settings.audit_queue_size,
        flush_s=settings.audit_flush_ms / 1000,
        checkpoint_s=settings.audit_checkpoint_seconds,
        database_down=database_down,
    )
    return writer, EventLog(store, keys, epoch_days)

"""The ledger writer: readiness (not ready only when records are truly held, never mid-write), and
no record lost to a cancelled flush or to one record that cannot be sealed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

from churnops.core.ledger import Chain, RecordIds, verify_chain
from churnops.core.ledger_rows import Prediction, Sealer
from churnops.io.ledger_store import LedgerStore
from churnops.io.spool import Spool
from churnops.io.sql_store import SqlStore
from churnops.serving.ledger_writer import LedgerWriter

KEY = b"k" * 32


class SlowStore(LedgerStore):
    """A real SQLite ledger whose writes wait for the test to let them through."""

    def __init__(self, path: Path) -> None:
        super().__init__(SqlStore(f"sqlite:///{path}"))
        self.store.upgrade()
        self.entered, self.release = threading.Event(), threading.Event()
        self.down = False

    def append(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.entered.set()
        self.release.wait(10)
        if self.down:
            raise ConnectionError("database gone")
        super().append(*args, **kwargs)


def _writer(tmp_path: Path) -> tuple[LedgerWriter, SlowStore]:
    store = SlowStore(tmp_path / "ledger.db")
    sealer = Sealer(Chain("w-test"), KEY, KEY, KEY, 7)
    writer = LedgerWriter(store, Spool(tmp_path / "spool", "w-test"), sealer, KEY)
    return writer, store


def _prediction(ids: RecordIds) -> Prediction:
    return Prediction(
        ids.next(), 1, "r", "C-1", None, "m", "1", "champion", None, None, "served",
        0.5, True, 0.3, [("contract", 0.2)], "online_store", {"contract": "Month-to-month"},
    )  # fmt: skip


def test_a_write_in_flight_is_not_unreadiness(tmp_path: Path) -> None:
    """The CI flake: readiness asked while the worker thread was storing an ordinary batch."""
    writer, store = _writer(tmp_path)
    worker = threading.Thread(
        target=writer._persist, args=([writer.sealer.prediction_row(_prediction(RecordIds()))],)
    )
    worker.start()
    assert store.entered.wait(5)
    during = writer.healthy()
    store.release.set()
    worker.join(5)
    assert during, "a batch being written made the writer report itself unable to store records"
    assert writer.healthy()
    assert writer.counters.outcomes["written"] == 1


def test_records_neither_stored_nor_spooled_are_unreadiness(tmp_path: Path) -> None:
    writer, store = _writer(tmp_path)
    store.down = True
    store.release.set()
    os.close(writer.spool._fd)  # the spool file can no longer be written: a full or failed disk
    writer._persist([writer.sealer.prediction_row(_prediction(RecordIds()))])
    assert not writer.healthy()
    assert str(writer.counters.last_error).startswith("spool:")


def test_a_flush_cancelled_mid_seal_still_stores_every_record(tmp_path: Path) -> None:
    """Shutdown cancels the writer past its deadline: records already chained must not vanish (the
    chain would show a gap), nor the ones taken from the queue but not sealed yet."""
    writer, store = _writer(tmp_path)
    store.release.set()
    ids = RecordIds()
    for _ in range(1_000):
        writer.submit(_prediction(ids))

    async def cancel_mid_seal() -> None:
        task = asyncio.create_task(writer.flush())
        await asyncio.sleep(0)  # the first slice is sealed, the task yields
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_seal())
    assert writer.sealer.chain.seq == 1_000
    assert writer.counters.outcomes["written"] == 1_000


def test_a_record_that_cannot_be_sealed_is_counted_and_the_rest_of_its_batch_is_stored(
    tmp_path: Path,
) -> None:
    """One record with a value JSON cannot hold: before, it took its whole batch with it (and left a
    seq gap); now only it is missing, counted `unsealable`, and the chain verifies."""
    writer, store = _writer(tmp_path)
    store.release.set()
    ids = RecordIds()
    predictions = [_prediction(ids) for _ in range(300)]
    bad = predictions[150]._replace(features={"contract": object()})
    predictions[150] = bad
    for p in predictions:
        writer.submit(p)
    asyncio.run(writer.flush())
    asyncio.run(writer.drain())  # the final checkpoint
    assert writer.counters.outcomes["unsealable"] == 1
    assert writer.counters.outcomes["written"] == 299
    assert writer.counters.sealed == 299  # audit_seal_seconds_count: sealed records only
    assert bad.prediction_id in str(writer.counters.last_error)
    stored = list(store.chain("w-test"))
    assert len(stored) == 299
    assert bad.prediction_id not in {r["record_id"] for r in stored}
    report = verify_chain("w-test", stored, store.checkpoints("w-test"), KEY)
    assert report.problem is None, report.problem
    assert report.head_seq == 299

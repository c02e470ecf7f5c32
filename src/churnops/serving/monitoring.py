"""Monitoring in a serving worker: drift counts and cost accounting on the hot path, flushed off it.

Hot path (`start` / `observe`, about a microsecond): each answered prediction is appended to its
slot's pending list and counted in the UsageMeter under its variant; every FOLD_SECONDS the
monitoring task folds the pending predictions into the slot's DriftAccumulator with `add_many`
(numpy per feature, ~1.4 us a prediction against ~3.3 us for `add` on the request), on the
event loop, so nothing is ever counted twice or lost. One request in `sample_every` also has
its own thread CPU time measured around its scoring (`time.thread_time()` is a system call of
~1.5 us, too dear for every request) and is charged `sample_every` times that: an unbiased
measurement of each variant's request CPU. The rest of the process's CPU (event loop, HTTP
parsing, ledger writer, metrics, these folds) is background, shared out by prediction counts
in core.cost.

Off the hot path (the supervised `monitoring` task): every `monitor_flush_seconds` the counts
of every slot (live, or swapped out since the last flush) and the interval's usage go to the
monitor store, where windows merge across workers and replicas; every
`monitor_refresh_seconds` the reports of jobs.monitor are recomputed from the store and
become this worker's Prometheus gauges; hourly, old drift rows are rolled up and rows past the
retention purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churnops.core.cost import UsageMeter
from churnops.core.drift_accumulator import encode_counts
from churnops.core.drift_profile import TOTAL_INDEX
from churnops.io.monitor_store import DriftRow, MonitorStore, UsageRow

if TYPE_CHECKING:
    from churnops.core.params import Params
    from churnops.jobs.monitor import Stores
    from churnops.serving.slots import ModelSlot
    from churnops.serving.state import ServiceState

logger = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_PENDING_FLUSHES = 720  # an hour of 5 s flushes kept while the store is down; older ones dropped
# The performance report scans the ledger: it is shared by every worker and replica through the
# monitor store and recomputed at most every PERFORMANCE_EVERY refreshes (5 min by default).
PERFORMANCE_EVERY = 20
MAX_PENDING = 100_000  # folded on the request past this (only when the monitoring task is down)
FOLD_SECONDS = 0.05  # pending predictions are folded this often: ~0.7 ms of numpy at 10,000/s
HOUSEKEEPING_SECONDS = 3600.0  # roll old drift rows up and purge past retention, hourly


class ServingMonitor:
    """One worker's drift windows (on its slots) and usage meter, and what to flush next."""

    def __init__(self, worker_id: str, sample_every: int = 8, replica_share: float = 1.0) -> None:
        self.worker_id = worker_id
        self.sample_every = sample_every
        self.replica_share = replica_share
        self.meter = UsageMeter()
        self._tick = 0
        self._unprofiled: dict[tuple[str, str, str], int] = {}  # (name, version, variant) -> predictions
        self._seen: dict[int, ModelSlot] = {}  # slots to flush once more (swapped out since last flush)
        self._saved_profiles: set[str] = set()
        self._pending: deque[tuple[list[DriftRow], UsageRow]] = deque(maxlen=MAX_PENDING_FLUSHES)
        self.dropped_flushes = 0
        self.flush_errors = 0
        self._last_us = time.time_ns() // 1000
        self._last_cpu = time.process_time()
        self._last_rss = resident_bytes()

    # -- hot path ------------------------------------------------------------------------

    def start(self) -> float:
        """Thread CPU time now for one request in `sample_every`, else -1.0 (not measured)."""
        self._tick += 1
        if self._tick % self.sample_every:
            return -1.0
        return time.thread_time()

    def observe(
        self, slot: ModelSlot, record: Mapping[str, Any], probability: float, cpu_started: float
    ) -> None:
        """Count one answered prediction: drift bins of its slot, and its variant's usage."""
        if slot.drift is not None:
            pending = slot.drift_pending
            pending.append((record, probability))
            if len(pending) >= MAX_PENDING:  # the monitoring task is not folding: bound the memory
                _fold(slot)
        else:
            key = (slot.model_name, slot.version, slot.variant)
            self._unprofiled[key] = self._unprofiled.get(key, 0) + 1
        if cpu_started >= 0.0:
            self.meter.record(slot.variant, (time.thread_time() - cpu_started) * self.sample_every)
        else:
            self.meter.record(slot.variant, 0.0)

    def observe_batch(
        self, slot: ModelSlot, items: list[tuple[Mapping[str, Any], float]], cpu_started: float
    ) -> None:
        """A batch on one slot: every item's drift bins, and the batch's CPU over its predictions."""
        if slot.drift is not None:
            slot.drift_pending.extend(items)
        else:
            key = (slot.model_name, slot.version, slot.variant)
            self._unprofiled[key] = self._unprofiled.get(key, 0) + len(items)
        cpu = (time.thread_time() - cpu_started) * self.sample_every if cpu_started >= 0.0 else 0.0
        self.meter.record(slot.variant, cpu, len(items))

    # -- flushes (event loop: the swap of every window; the store write runs in a thread) ------

    def fold(self, slots: list[ModelSlot]) -> int:
        """Fold every pending prediction of these slots (and of the slots swapped out since the last
        flush) into their drift windows; returns how many. Runs on the event loop, like `observe`."""
        return sum(_fold(slot) for slot in {**self._seen, **{id(s): s for s in slots}}.values())

    def snapshot(self, slots: list[ModelSlot]) -> tuple[list[DriftRow], UsageRow]:
        """Take this interval's counts and usage and start the next interval."""
        self.fold(slots)
        now_us, cpu, rss = time.time_ns() // 1000, time.process_time(), resident_bytes()
        start_us = self._last_us
        rows: list[DriftRow] = []
        current = {id(slot): slot for slot in slots}
        for slot in {**self._seen, **current}.values():
            rows.extend(self._slot_rows(slot, start_us, now_us))
        self._seen = current
        for (name, version, variant), n in self._unprofiled.items():
            rows.append(DriftRow(name, version, variant, None, self.worker_id, start_us, now_us, n, None))
        self._unprofiled = {}
        usage = self.meter.snapshot_and_reset(
            wall_seconds=(now_us - start_us) / 1e6,
            process_cpu_seconds=max(cpu - self._last_cpu, 0.0),
            memory_bytes=(rss + self._last_rss) / 2.0,
            replica_share=self.replica_share,
        )
        predictions = sum(v.predictions for v in usage.variants.values())
        self._last_us, self._last_cpu, self._last_rss = now_us, cpu, rss
        return rows, UsageRow(self.worker_id, start_us, now_us, predictions, usage.to_dict())

    def _slot_rows(self, slot: ModelSlot, start_us: int, end_us: int) -> list[DriftRow]:
        drift = slot.drift
        if drift is None or drift.total == 0:
            return []
        counts = drift.snapshot_and_reset()
        n = int(counts[TOTAL_INDEX])
        return [
            DriftRow(
                slot.model_name,
                slot.version,
                slot.variant,
                drift.fingerprint,
                self.worker_id,
                start_us,
                end_us,
                n,
                encode_counts(counts),
            )
        ]

    def write(
        self, store: MonitorStore, slots: list[ModelSlot], rows: list[DriftRow], usage: UsageRow
    ) -> None:
        """Store this flush and any that failed before (oldest first); keep them all on failure."""
        self._save_profiles(store, slots)
        if len(self._pending) == self._pending.maxlen:
            self.dropped_flushes += 1
        self._pending.append((rows, usage))
        while self._pending:
            drift, interval = self._pending[0]
            store.append(drift, interval)
            self._pending.popleft()

    def _save_profiles(self, store: MonitorStore, slots: list[ModelSlot]) -> None:
        for slot in slots:
            drift = slot.drift
            if drift is not None and drift.fingerprint not in self._saved_profiles:
                store.save_profile(drift.fingerprint, slot.model_name, slot.version, drift.profile.to_dict())
                self._saved_profiles.add(drift.fingerprint)


def _fold(slot: ModelSlot) -> int:
    pending, drift = slot.drift_pending, slot.drift
    if not pending or drift is None:
        return 0
    slot.drift_pending = []
    drift.add_many([record for record, _ in pending], [p for _, p in pending])
    return len(pending)


def resident_bytes() -> float:
    """This process's resident memory now (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return float(int(handle.read().split()[1]) * _PAGE)
    except (OSError, ValueError, IndexError):
        import resource

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


@dataclass
class MonitorContext:
    """What the monitoring task and routes of one worker read: its own pool on the SQL store, params."""

    stores: Stores
    params: Params
    lock: threading.Lock = field(default_factory=threading.Lock)
    performance_cache: tuple[float, dict[str, Any]] | None = None  # (monotonic time, report)

    def close(self) -> None:
        self.stores.monitor.close()


def context_of(state: ServiceState) -> MonitorContext:
    """This worker's MonitorContext, opened on first use (called from worker threads)."""
    context: MonitorContext | None = state.monitor_context
    if context is None:
        from churnops.io.datasets import load_params
        from churnops.io.monitor_store import monitor_limits
        from churnops.io.sql_store import SqlStore
        from churnops.jobs.monitor import Stores

        with _OPEN_LOCK:
            context = state.monitor_context
            if context is None:
                store = SqlStore(state.settings.sql_store_url, monitor_limits())
                context = state.monitor_context = MonitorContext(Stores.on(store), load_params(None))
    return context


_OPEN_LOCK = threading.Lock()


async def run_monitoring(state: ServiceState, stop: asyncio.Event) -> None:
    """The supervised task: flush every few seconds, refresh the gauges every `monitor_refresh_seconds`."""
    monitor = state.monitor
    assert monitor is not None
    settings = state.settings
    context = await asyncio.to_thread(context_of, state)
    stores, params = context.stores, context.params
    refreshes, next_refresh = 0, time.monotonic()
    next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
    next_flush = time.monotonic() + settings.monitor_flush_seconds
    try:
        while not stop.is_set():
            wait = max(min(FOLD_SECONDS, next_flush - time.monotonic()), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set():
                break
            monitor.fold(state.slots.all())
            if time.monotonic() < next_flush:
                continue
            next_flush = time.monotonic() + settings.monitor_flush_seconds
            await flush(state, monitor, stores.monitor)
            if time.monotonic() >= next_refresh:
                performance = refreshes % PERFORMANCE_EVERY == 0
                await asyncio.to_thread(refresh_gauges, state, stores, params, performance)
                refreshes += 1
                next_refresh = time.monotonic() + settings.monitor_refresh_seconds
            if time.monotonic() >= next_housekeeping:
                await asyncio.to_thread(housekeep, stores, params)
                next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
    finally:
        await flush(state, monitor, stores.monitor)  # a last flush: counts outlive the worker


async def flush(state: ServiceState, monitor: ServingMonitor, store: MonitorStore) -> None:
    """One flush: windows swapped on the event loop, written in a thread; a failure keeps them pending."""
    slots = state.slots.all()
    rows, usage = monitor.snapshot(slots)
    try:
        await asyncio.to_thread(monitor.write, store, slots, rows, usage)
    except Exception as err:  # the store is down: counts stay pending and go with the next flush
        monitor.flush_errors += 1
        logger.warning(
            "monitoring flush failed (%s: %s); %d pending", type(err).__name__, err, len(monitor._pending)
        )


def housekeep(stores: Stores, params: Params) -> None:
    from churnops.jobs.monitor import housekeep as fold_and_purge

    try:
        fold_and_purge(stores, params)
    except Exception as err:  # retried next hour; windows stay right, only longer to read
        logger.warning("monitoring: roll-up failed (%s: %s)", type(err).__name__, err)


def refresh_gauges(state: ServiceState, stores: Stores, params: Params, performance: bool) -> None:
    """Recompute drift and cost from the shared store (and performance, shared by all workers, when
    asked) and make them this worker's gauges."""
    from churnops.jobs.monitor import compute, gauges

    reports = compute(stores, params, ("drift", "cost"))
    if performance:
        try:
            reports["performance"] = performance_report(state, stores, params)
        except Exception as err:  # logged; the other gauges still refresh
            logger.warning("monitoring: performance report failed (%s: %s)", type(err).__name__, err)
    state.monitor_reports.update(reports)
    state.metrics.monitoring = gauges(state.monitor_reports, params)


def performance_report(state: ServiceState, stores: Stores, params: Params) -> dict[str, Any]:
    """The shared performance report, at most PERFORMANCE_EVERY refreshes old."""
    from churnops.jobs.monitor import shared_performance

    max_age = PERFORMANCE_EVERY * state.settings.monitor_refresh_seconds
    return shared_performance(stores, params, max_age)

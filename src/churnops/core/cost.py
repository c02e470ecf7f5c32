"""Cost per prediction from measured CPU and memory time, priced with a table from params.yaml.

Measured, not assumed. Per worker and measurement interval the serving side records, per
variant, the predictions and the thread CPU seconds of their own work (`time.thread_time()`
around scoring; a shadow's scoring is recorded under the shadow's variant), and for the
whole worker the process CPU seconds, the memory held (mean resident bytes) and the wall
time. The rest of the process CPU (event loop, audit writer, metrics, reloads) is
background, shared out by each variant's share of the interval's predictions, as are the
memory held and the replica's fixed cost (each of a replica's W workers carries 1/W of it).
Intervals without predictions are idle cost, reported apart, never charged to a variant.

    usd = cpu_seconds / 3600 * vcpu_hour_usd
        + byte_seconds / 2**30 / 3600 * gb_hour_usd
        + replica_seconds / 3600 * replica_hour_usd
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from churnops.core.monitoring_params import CostParams, PriceTable
from churnops.core.windows import json_ready
from churnops.errors import ConfigError, DataError

_GIB = float(2**30)
_HOUR = 3600.0
_NO_PRICES = (
    "cost: no price table; set monitoring.cost.prices in params.yaml "
    "(vcpu_hour_usd, gb_hour_usd, replica_hour_usd)"
)


@dataclass(frozen=True)
class VariantUsage:
    """One variant's share of a worker's interval."""

    predictions: int
    request_cpu_seconds: float


@dataclass(frozen=True)
class WorkerUsage:
    """One worker process over one measurement interval."""

    wall_seconds: float
    process_cpu_seconds: float  # all CPU of the process in the interval, request work included
    memory_bytes: float  # mean resident bytes held over the interval
    variants: Mapping[str, VariantUsage]
    replica_share: float = 1.0  # share of one replica's fixed cost (1 / workers per replica)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, to store intervals of every worker and replica in one place."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerUsage:
        try:
            variants = {
                str(name): VariantUsage(int(v["predictions"]), float(v["request_cpu_seconds"]))
                for name, v in data["variants"].items()
            }
            return cls(
                wall_seconds=float(data["wall_seconds"]),
                process_cpu_seconds=float(data["process_cpu_seconds"]),
                memory_bytes=float(data["memory_bytes"]),
                variants=variants,
                replica_share=float(data.get("replica_share", 1.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"cost: malformed usage record ({err.__class__.__name__}: {err})") from err


class UsageMeter:
    """What one worker's request path adds up between snapshots: predictions and thread CPU per variant.

    The request path calls `record(variant, time.thread_time() - started)`; every interval the
    worker reads its process CPU time and resident memory and calls `snapshot_and_reset`.
    """

    def __init__(self) -> None:
        self._predictions: dict[str, int] = {}
        self._cpu: dict[str, float] = {}

    def record(self, variant: str, cpu_seconds: float, predictions: int = 1) -> None:
        self._predictions[variant] = self._predictions.get(variant, 0) + predictions
        self._cpu[variant] = self._cpu.get(variant, 0.0) + cpu_seconds

    def snapshot_and_reset(
        self,
        *,
        wall_seconds: float,
        process_cpu_seconds: float,
        memory_bytes: float,
        replica_share: float = 1.0,
    ) -> WorkerUsage:
        predictions, cpu = self._predictions, self._cpu
        self._predictions, self._cpu = {}, {}
        variants = {name: VariantUsage(count, cpu.get(name, 0.0)) for name, count in predictions.items()}
        return WorkerUsage(wall_seconds, process_cpu_seconds, memory_bytes, variants, replica_share)


@dataclass(frozen=True)
class VariantCost:
    """What one variant's predictions cost; `per_1000_usd` is None-able NaN with no predictions."""

    variant: str
    predictions: int
    cpu_seconds: float
    request_cpu_seconds: float
    byte_seconds: float
    replica_seconds: float
    cpu_usd: float
    memory_usd: float
    fixed_usd: float
    total_usd: float
    per_1000_usd: float


@dataclass(frozen=True)
class CostReport:
    """Cost per variant over the measured intervals, and the idle cost nobody was charged."""

    status: Literal["ok", "no_data"]
    message: str
    variants: tuple[VariantCost, ...]
    idle_usd: float = 0.0
    prices: dict[str, float] = field(default_factory=dict)

    def per_1000(self) -> dict[str, float]:
        return {v.variant: v.per_1000_usd for v in self.variants}

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json_ready(asdict(self))
        return result


@dataclass
class _Totals:
    predictions: int = 0
    request_cpu: float = 0.0
    cpu: float = 0.0
    byte_seconds: float = 0.0
    replica_seconds: float = 0.0


def cost_report(usage: Sequence[WorkerUsage], prices: PriceTable | None) -> CostReport:
    """Price the measured intervals (of any workers and replicas) per variant."""
    if prices is None:
        raise ConfigError(_NO_PRICES)
    totals: dict[str, _Totals] = {}
    idle = _Totals()
    for interval in usage:
        _check(interval)
        _attribute(interval, totals, idle)
    priced = tuple(_price(name, t, prices) for name, t in sorted(totals.items()))
    idle_usd = _usd(idle.cpu, idle.byte_seconds, idle.replica_seconds, prices)[3]
    table = prices.model_dump()
    if not any(v.predictions for v in priced):
        return CostReport("no_data", "not enough data: no predictions measured", priced, idle_usd, table)
    summary = ", ".join(f"{v.variant} ${v.per_1000_usd:.3g}" for v in priced if v.predictions)
    return CostReport("ok", f"cost per 1,000 predictions: {summary}", priced, idle_usd, table)


@dataclass(frozen=True)
class CostAnomaly:
    """Cost per 1,000 against its trailing baseline (the median of earlier windows)."""

    status: Literal["ok", "anomaly", "not_judged"]
    current: float
    baseline: float
    ratio: float
    factor: float
    message: str


def cost_anomaly(current: float, trailing: Sequence[float], params: CostParams | None = None) -> CostAnomaly:
    """Flag `current` when it exceeds `anomaly_factor` x the median of the trailing windows."""
    params = params or CostParams()
    history = [v for v in trailing if math.isfinite(v) and v > 0]
    factor = params.anomaly_factor
    if not math.isfinite(current) or len(history) < params.min_baseline:
        message = f"not judged: {len(history)} trailing windows < min {params.min_baseline}"
        if not math.isfinite(current):
            message = "not judged: no cost measured in this window"
        return CostAnomaly("not_judged", current, math.nan, math.nan, factor, message)
    baseline = statistics.median(history)
    ratio = current / baseline
    if ratio > factor:
        message = (
            f"anomaly: ${current:.3g} per 1,000 is {ratio:.2f}x the trailing ${baseline:.3g} (> {factor}x)"
        )
        return CostAnomaly("anomaly", current, baseline, ratio, factor, message)
    return CostAnomaly("ok", current, baseline, ratio, factor, f"ok: {ratio:.2f}x the trailing baseline")


def _check(interval: WorkerUsage) -> None:
    numbers = (
        interval.wall_seconds,
        interval.process_cpu_seconds,
        interval.memory_bytes,
        interval.replica_share,
    )
    if not all(math.isfinite(x) and x >= 0 for x in numbers):
        raise DataError("cost: usage must be finite and non-negative (wall, CPU, memory, replica share)")
    for name, v in interval.variants.items():
        if v.predictions < 0 or not (math.isfinite(v.request_cpu_seconds) and v.request_cpu_seconds >= 0):
            raise DataError(f"cost: variant {name!r}: predictions and request CPU must be non-negative")


def _attribute(interval: WorkerUsage, totals: dict[str, _Totals], idle: _Totals) -> None:
    """Request CPU to its variant; background CPU, memory and fixed cost by share of predictions."""
    request_cpu = sum(v.request_cpu_seconds for v in interval.variants.values())
    background = max(interval.process_cpu_seconds - request_cpu, 0.0)
    byte_seconds = interval.memory_bytes * interval.wall_seconds
    replica_seconds = interval.wall_seconds * interval.replica_share
    predictions = sum(v.predictions for v in interval.variants.values())
    if predictions == 0:
        idle.cpu += request_cpu + background
        idle.byte_seconds += byte_seconds
        idle.replica_seconds += replica_seconds
        return
    for name, v in interval.variants.items():
        share = v.predictions / predictions
        t = totals.setdefault(name, _Totals())
        t.predictions += v.predictions
        t.request_cpu += v.request_cpu_seconds
        t.cpu += v.request_cpu_seconds + share * background
        t.byte_seconds += share * byte_seconds
        t.replica_seconds += share * replica_seconds


def _usd(cpu: float, byte_seconds: float, replica_seconds: float, prices: PriceTable) -> tuple[float, ...]:
    cpu_usd = cpu / _HOUR * prices.vcpu_hour_usd
    memory_usd = byte_seconds / _GIB / _HOUR * prices.gb_hour_usd
    fixed_usd = replica_seconds / _HOUR * prices.replica_hour_usd
    return cpu_usd, memory_usd, fixed_usd, cpu_usd + memory_usd + fixed_usd


def _price(name: str, t: _Totals, prices: PriceTable) -> VariantCost:
    cpu_usd, memory_usd, fixed_usd, total = _usd(t.cpu, t.byte_seconds, t.replica_seconds, prices)
    return VariantCost(
        variant=name,
        predictions=t.predictions,
        cpu_seconds=t.cpu,
        request_cpu_seconds=t.request_cpu,
        byte_seconds=t.byte_seconds,
        replica_seconds=t.replica_seconds,
        cpu_usd=cpu_usd,
        memory_usd=memory_usd,
        fixed_usd=fixed_usd,
        total_usd=total,
        per_1000_usd=1000.0 * total / t.predictions if t.predictions else math.nan,
    )

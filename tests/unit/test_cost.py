"""Cost per 1,000 predictions from measured CPU and memory, and the cost-anomaly rule."""

from __future__ import annotations

import json
import math

import pytest

from churnops.core.cost import (
    CostParams,
    PriceTable,
    UsageMeter,
    VariantUsage,
    WorkerUsage,
    cost_anomaly,
    cost_report,
)
from churnops.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

PRICES = PriceTable(vcpu_hour_usd=0.04, gb_hour_usd=0.005, replica_hour_usd=0.02)
GIB = 2**30


def interval(**variants: tuple[int, float]) -> WorkerUsage:
    return WorkerUsage(
        wall_seconds=3600.0,
        process_cpu_seconds=1800.0,
        memory_bytes=2 * GIB,
        variants={name: VariantUsage(*v) for name, v in variants.items()},
        replica_share=0.5,
    )


def test_one_variant_pays_for_everything_it_used() -> None:
    report = cost_report([interval(champion=(1_000_000, 1200.0))], PRICES)
    (champion,) = report.variants
    assert champion.cpu_seconds == 1800.0  # its 1,200 s plus all 600 s of background
    assert champion.cpu_usd == pytest.approx(0.5 * 0.04)
    assert champion.memory_usd == pytest.approx(2 * 0.005)
    assert champion.fixed_usd == pytest.approx(0.5 * 0.02)
    assert champion.per_1000_usd == pytest.approx(1000 * (0.02 + 0.01 + 0.01) / 1_000_000)
    assert report.status == "ok"
    assert "champion $" in report.message


def test_a_shadow_pays_for_its_own_cpu_and_its_share_of_the_rest() -> None:
    report = cost_report([interval(champion=(750, 600.0), shadow=(250, 900.0))], PRICES)
    costs = {v.variant: v for v in report.variants}
    # background 300 s and memory split 3:1 by predictions; request CPU stays with its variant
    assert costs["champion"].cpu_seconds == pytest.approx(600 + 0.75 * 300)
    assert costs["shadow"].cpu_seconds == pytest.approx(900 + 0.25 * 300)
    assert costs["shadow"].byte_seconds == pytest.approx(0.25 * 2 * GIB * 3600)
    assert costs["shadow"].per_1000_usd > costs["champion"].per_1000_usd
    total = sum(v.total_usd for v in report.variants)
    assert total == pytest.approx(0.5 * 0.04 + 2 * 0.005 + 0.5 * 0.02)


def test_intervals_of_several_workers_add_up_and_idle_time_is_apart() -> None:
    idle = WorkerUsage(wall_seconds=3600.0, process_cpu_seconds=36.0, memory_bytes=GIB, variants={})
    report = cost_report([interval(champion=(500, 100.0)), interval(champion=(500, 100.0)), idle], PRICES)
    (champion,) = report.variants
    assert champion.predictions == 1000
    assert report.idle_usd == pytest.approx(0.01 * 0.04 + 0.005 + 0.02)
    json.dumps(report.to_dict(), allow_nan=False)


def test_no_price_table_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no price table; set monitoring\.cost\.prices"):
        cost_report([interval(champion=(10, 1.0))], CostParams().prices)


def test_no_predictions_is_a_not_enough_data_answer() -> None:
    report = cost_report([], PRICES)
    assert report.status == "no_data"
    assert report.message == "not enough data: no predictions measured"


@pytest.mark.parametrize(
    "usage",
    [
        WorkerUsage(-1.0, 1.0, 1.0, {}),
        WorkerUsage(1.0, math.nan, 1.0, {}),
        WorkerUsage(1.0, 1.0, 1.0, {"a": VariantUsage(-1, 0.0)}),
    ],
)
def test_impossible_usage_is_refused(usage: WorkerUsage) -> None:
    with pytest.raises(DataError, match="cost:"):
        cost_report([usage], PRICES)


def test_usage_round_trips_and_malformed_records_are_clear() -> None:
    usage = interval(champion=(10, 1.0))
    assert WorkerUsage.from_dict(json.loads(json.dumps(usage.to_dict()))) == usage
    with pytest.raises(DataError, match="malformed usage record"):
        WorkerUsage.from_dict({"wall_seconds": 1})


def test_meter_collects_per_variant_and_resets() -> None:
    meter = UsageMeter()
    meter.record("champion", 0.0001)
    meter.record("champion", 0.0003)
    meter.record("shadow", 0.0002)
    usage = meter.snapshot_and_reset(wall_seconds=5.0, process_cpu_seconds=0.01, memory_bytes=GIB)
    assert usage.variants["champion"] == VariantUsage(2, pytest.approx(0.0004))  # type: ignore[arg-type]
    assert usage.variants["shadow"].predictions == 1
    again = meter.snapshot_and_reset(wall_seconds=5.0, process_cpu_seconds=0.0, memory_bytes=GIB)
    assert again.variants == {}


def test_cost_anomaly_at_one_and_a_half_times_the_trailing_median() -> None:
    trailing = [0.020, 0.024, 0.022, 0.030]
    assert cost_anomaly(0.030, trailing).status == "ok"
    flagged = cost_anomaly(0.040, trailing)
    assert flagged.status == "anomaly"
    assert flagged.baseline == pytest.approx(0.023)
    assert flagged.ratio == pytest.approx(0.040 / 0.023)
    assert "1.5x" in flagged.message


def test_cost_anomaly_needs_a_baseline_and_a_figure() -> None:
    short = cost_anomaly(0.5, [0.02, math.nan])
    assert short.status == "not_judged"
    assert short.message == "not judged: 1 trailing windows < min 3"
    assert cost_anomaly(math.nan, [0.02] * 5).status == "not_judged"
    assert cost_anomaly(0.05, [0.02] * 2, CostParams(min_baseline=2)).status == "anomaly"

"""Serving building blocks without a server: breaker, metrics exposition, request decoding rules."""

from __future__ import annotations

import pytest

from churnops.core.breaker import BreakerState, CircuitBreaker
from churnops.errors import InvalidRequest
from churnops.io.datasets import load_spec
from churnops.serving.metrics import ServiceMetrics
from churnops.serving.predict_api import _PREDICT, _decode
from churnops.serving.scorer import FeatureRules

pytestmark = pytest.mark.unit


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_after=5.0, clock=lambda: now[0])
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    breaker.record_failure()  # the probe failed: open again
    assert breaker.state is BreakerState.OPEN
    now[0] = 10.0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_metrics_render_sums_workers(tmp_path) -> None:
    first, second = ServiceMetrics(tmp_path), ServiceMetrics(tmp_path)
    second.pid = first.pid + 1  # pretend another worker
    for metrics, count in ((first, 3), (second, 2)):
        for _ in range(count):
            metrics.observe_prediction("champion", "4", "online_store", 0.002, "ok")
    second.publish()
    text = first.render().decode()
    assert (
        'predictions_total{variant="champion",model_version="4",outcome="ok",feature_source="online_store"} 5'
        in text
    )
    assert 'inference_latency_seconds_bucket{variant="champion",model_version="4",le="0.0025"} 5' in text
    assert 'inference_latency_seconds_bucket{variant="champion",model_version="4",le="0.001"} 0' in text
    assert 'inference_latency_seconds_count{variant="champion",model_version="4"} 5' in text


@pytest.mark.parametrize(
    ("body", "field", "malformed"),
    [
        (b"{", None, True),
        (b"", None, True),
        (b'{"customer_id": 1}', "customer_id", False),
        (b'{"customer_id": "a", "x": 1}', "x", False),
        (b'{"features": {}}', None, False),
        (b"[]", None, False),
    ],
)
def test_decode_errors_name_the_field(body: bytes, field: str | None, malformed: bool) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _decode(_PREDICT, body)
    assert caught.value.malformed is malformed
    if field:
        assert caught.value.field == field


def test_feature_rules() -> None:
    rules = FeatureRules(load_spec("synthetic"))
    rules.check({"age": 40, "contract": "One year", "region": None, "partner": 1})
    with pytest.raises(InvalidRequest, match=r"features\.age: expected a number"):
        rules.check({"age": "forty"})
    with pytest.raises(InvalidRequest, match=r"features\.age"):
        rules.check({"age": True})
    with pytest.raises(InvalidRequest, match="unknown feature"):
        rules.check({"ssn": "x"})
    with pytest.raises(InvalidRequest, match="got dict"):
        rules.check({"region": {"a": 1}})

"""Pure access-control rules: key format and checksum, scopes, GCRA arithmetic, signing, route table."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnops.core import auth, gcra, signing
from churnops.core.auth import OPEN, Rate, ScopeTable
from churnops.errors import RateLimited
from churnops.io.rate_limiter import InProcessBuckets, RateLimiter

pytestmark = pytest.mark.unit


# -- keys ------------------------------------------------------------------------------------------


def test_key_round_trip_and_shape() -> None:
    key_id, secret = auth.new_key_id(), auth.new_secret()
    key = auth.format_key(key_id, secret)
    assert key.startswith(f"cho_{key_id}_")
    assert len(key) == 4 + 12 + 1 + 40 + 6
    assert auth.parse_key(key) == (key_id, secret)


@given(st.integers(min_value=0, max_value=45), st.sampled_from(auth.BASE62))
def test_any_one_character_typo_fails_the_checksum(position: int, replacement: str) -> None:
    key = auth.format_key("abcdefghijkl", "A" * 40)
    index = 17 + position  # inside the secret or the checksum
    if key[index] == replacement:
        return
    typo = key[:index] + replacement + key[index + 1 :]
    with pytest.raises(auth.MalformedKey, match="checksum"):
        auth.parse_key(typo)


@pytest.mark.parametrize(
    "text", ["", "cho_", "cho_abc_def", "chx_abcdefghijkl_" + "A" * 46, "cho_ABCDEFGHIJKL_" + "A" * 46]
)
def test_malformed_keys(text: str) -> None:
    with pytest.raises(auth.MalformedKey):
        auth.parse_key(text)


def test_secret_hash_is_peppered_and_compared_in_constant_time() -> None:
    stored = auth.hash_secret(b"pepper-1", "s3cret")
    assert auth.secret_matches(b"pepper-1", "s3cret", stored)
    assert not auth.secret_matches(b"pepper-2", "s3cret", stored)
    assert not auth.secret_matches(b"pepper-1", "s3creT", stored)
    assert "s3cret" not in stored


def test_scopes_and_rates() -> None:
    assert auth.parse_scopes("predict, admin") == {"predict", "admin"}
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        auth.parse_scopes("predict,root")
    with pytest.raises(ValueError, match="at least one"):
        auth.parse_scopes("")
    assert auth.claim_scopes("predict audit other") == {"predict", "audit"}
    assert auth.claim_scopes(["admin", 3]) == {"admin"}
    assert auth.claim_scopes(None) == frozenset()
    assert auth.parse_rate("100/minute") == Rate(100, 60)
    assert auth.parse_rate("5/seconds") == Rate(5, 1)
    assert str(Rate(100, 60)) == "100/minute"
    for bad in ("100", "0/minute", "1/week", "-1/second"):
        with pytest.raises(ValueError, match="rate limit"):
            auth.parse_rate(bad)


# -- GCRA ------------------------------------------------------------------------------------------


def test_burst_then_one_per_interval() -> None:
    rate = Rate(100, 60)
    tat = None
    for _ in range(100):
        grant = gcra.take(tat, 1000.0, rate)
        assert grant.granted == 1
        tat = grant.tat
    refused = gcra.take(tat, 1000.0, rate)
    assert refused.granted == 0
    assert refused.retry_after == pytest.approx(0.6)
    assert refused.reset == pytest.approx(60.0)
    assert gcra.take(tat, 1000.59, rate).granted == 0
    assert gcra.take(tat, 1000.61, rate).granted == 1


def test_no_doubling_at_a_window_boundary() -> None:
    """A burst just before a minute boundary and one just after: the second gets only what
    regenerated in between (fixed windows would accept both whole)."""
    rate = Rate(100, 60)
    tat = None
    for _ in range(100):
        grant = gcra.take(tat, 59.9, rate)
        tat = grant.tat
    second = 0
    for _ in range(100):
        grant = gcra.take(tat, 60.1, rate)
        if grant.granted:
            second += 1
            tat = grant.tat
    assert second == 0  # 0.2 s later: not even one token back (one per 0.6 s)
    assert gcra.take(tat, 60.5, rate).granted == 1  # 0.6 s after the burst: one


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=200),
    st.lists(st.tuples(st.floats(min_value=0, max_value=5), st.integers(1, 50)), min_size=1, max_size=60),
)
def test_granted_never_exceeds_burst_plus_regeneration(count: int, steps: list[tuple[float, int]]) -> None:
    """Over [0, t]: granted <= count + t / interval, whatever the request pattern and lease sizes."""
    rate = Rate(count, 60)
    tat, now, total = None, 0.0, 0
    for gap, want in steps:
        now += gap
        grant = gcra.take(tat, now, rate, want)
        assert 0 <= grant.granted <= want
        if grant.granted:
            tat = grant.tat
        total += grant.granted
        assert total <= count + math.floor(now / rate.interval + 1e-9)


def test_lease_sizes() -> None:
    assert gcra.lease_size(Rate(100, 60)) == 1
    assert gcra.lease_size(Rate(1_000_000_000, 60)) == 833_333
    assert gcra.lease_size(Rate(1000, 1)) == 50
    assert gcra.local_share(Rate(100, 60), 3) == Rate(33, 60)
    assert gcra.local_share(Rate(2, 60), 5) == Rate(1, 60)


def test_header_fields_follow_the_ietf_draft() -> None:
    policy, current = gcra.header_fields(Rate(100, 60), 42, 29.2)
    assert policy == '"key";q=100;w=60'
    assert current == '"key";r=42;t=30'


def test_leases_never_hand_out_more_than_the_store_granted() -> None:
    clock = [0.0]
    buckets = InProcessBuckets(clock=lambda: clock[0])
    limiter = RateLimiter(buckets, failures=(), clock=lambda: clock[0])
    rate = Rate(1000, 1)  # leases of 50

    async def run() -> int:
        accepted = 0
        for _ in range(1500):
            try:
                await limiter.acquire("k", rate)
                accepted += 1
            except RateLimited:
                pass
        return accepted

    assert asyncio.run(run()) == 1000  # the burst, not a token more


def test_background_renewal_keeps_fast_keys_off_the_store_and_exact() -> None:
    """Leases of a fast key are renewed before they run out (no request waits on the store);
    tokens still held join the next lease, none are handed out twice."""
    clock = [0.0]
    buckets = InProcessBuckets(clock=lambda: clock[0])
    calls: list[int] = []
    original = buckets.take

    async def counted(key: str, rate: Rate, want: int, timeout_s: float | None = None) -> gcra.Grant:
        grant = await original(key, rate, want, timeout_s)
        calls.append(grant.granted)
        return grant

    buckets.take = counted  # type: ignore[method-assign]
    limiter = RateLimiter(buckets, failures=(), clock=lambda: clock[0])
    rate = Rate(10_000, 1)  # leases of 500, renewed with 125 left

    async def run() -> int:
        accepted = 0
        for _ in range(12_000):
            try:
                await limiter.acquire("k", rate)
                accepted += 1
            except RateLimited:
                pass
            await asyncio.sleep(0)  # let a renewal run, as a busy server would between requests
        return accepted

    accepted = asyncio.run(run())
    assert accepted == sum(calls) == 10_000  # never more than the store granted
    assert len(calls) >= 20  # leases of 500 (the last ones smaller as the burst runs out)


# -- signing ---------------------------------------------------------------------------------------


def test_canonical_string_and_query_order() -> None:
    canonical = signing.canonical_string(1700000000, "n" * 16, "post", "/v1/predict", "b=2&a=1&a=0", b"{}")
    lines = canonical.decode().split("\n")
    assert lines[:6] == ["v1", "1700000000", "n" * 16, "POST", "/v1/predict", "a=0&a=1&b=2"]
    assert lines[6] == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert signing.canonical_query("x=a%20b&y=") == signing.canonical_query("y=&x=a+b")


def test_signature_verifies_and_header_parses() -> None:
    canonical = signing.canonical_string(1, "abcdefghijklmnop", "GET", "/", "", b"")
    header = signing.signature_header("chs_secret", 1, "abcdefghijklmnop", canonical)
    timestamp, nonce, presented = signing.parse_header(header)
    assert (timestamp, nonce) == (1, "abcdefghijklmnop")
    signing.verify("chs_secret", canonical, presented)
    with pytest.raises(signing.BadSignature):
        signing.verify("chs_other", canonical, presented)
    for bad in ("t=1,n=short,v1=" + "0" * 64, "v1=" + "0" * 64, "t=1,n=abcdefghijklmnop,v1=XYZ"):
        with pytest.raises(signing.BadSignature, match="malformed"):
            signing.parse_header(bad)


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (299, True), (-299, True), (300, True), (301, False)])
def test_timestamp_window(offset: int, ok: bool) -> None:
    if ok:
        signing.check_timestamp(1000, 1000 + offset)
    else:
        with pytest.raises(signing.BadSignature, match="timestamp"):
            signing.check_timestamp(1000, 1000 + offset)
        with pytest.raises(signing.BadSignature, match="timestamp"):
            signing.check_timestamp(1000, 1000 - offset)


# -- route table -----------------------------------------------------------------------------------


def test_scope_table_matches_templates_and_methods() -> None:
    table = ScopeTable()
    table.add("/v1/models", ["GET"], frozenset({"predict"}))
    table.add("/v1/models/{version}/approve", ["POST"], frozenset({"admin"}))
    table.add("/health/live", ["GET"], OPEN)
    assert table.lookup("/v1/models")["GET"].scopes == {"predict"}  # type: ignore[index]
    assert "HEAD" in table.lookup("/v1/models")  # type: ignore[operator]
    assert table.lookup("/v1/models/7/approve")["POST"].scopes == {"admin"}  # type: ignore[index]
    assert table.lookup("/v1/models/7/approve/x") is None
    assert table.lookup("/v1/models/a/b/approve") is None
    assert table.lookup("/health/live")["GET"].open  # type: ignore[index]
    assert table.lookup("/nope") is None


# -- error mapping ---------------------------------------------------------------------------------


def test_access_errors_map_to_their_statuses_and_unknown_ones_never_to_400() -> None:
    from churnops.errors import ChurnopsError, Forbidden, Unauthenticated, Unavailable
    from churnops.serving.errors import classify, error_headers

    assert classify(Unauthenticated("x", "missing"))[0] == 401
    assert error_headers(Unauthenticated("x", "missing"))[0][0] == b"www-authenticate"
    assert classify(Forbidden("x", "forbidden"))[0] == 403
    limited = RateLimited("x", [(b"retry-after", b"3")])
    assert (classify(limited)[0], error_headers(limited)) == (429, [(b"retry-after", b"3")])
    assert classify(Unavailable("x"))[0] == 503

    class Unmapped(ChurnopsError):
        pass

    status, code, message, _ = classify(Unmapped("secret detail"))
    assert (status, code) == (500, "internal_error")
    assert "secret detail" not in message

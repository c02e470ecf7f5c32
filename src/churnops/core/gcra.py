"""GCRA (generic cell rate algorithm): the rate-limit arithmetic shared by Redis (Lua) and in-process.

A key allowed `count` requests per `seconds` emits one token every `interval = seconds / count`
and may burst `count` at once. The only state is the theoretical arrival time (TAT) of the
next token: a request for `want` tokens at `now` is granted as many as fit under
`now + capacity` (capacity = count * interval = seconds), and TAT moves by one interval per
token granted. No windows, so nothing doubles at a window boundary.

`take` grants *up to* `want` tokens: the service leases several at once for fast keys (see
`lease_size`) and never hands unused ones back, so the shared limit is never exceeded.
The Lua script in `churnops.io.rate_limiter` is this function on Redis `TIME`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from churnops.core.auth import Rate

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens granted (0: refused), the key's new TAT, and what the RateLimit fields report."""

    granted: int
    tat: float
    retry_after: float  # seconds until one token is available (0 when granted)
    remaining: int  # tokens still available right now, after this grant
    reset: float  # seconds until the bucket is full again


def take(tat: float | None, now: float, rate: Rate, want: int = 1) -> Grant:
    """Grant up to `want` tokens at time `now` (seconds) given the stored TAT (None: never used)."""
    interval = rate.interval
    capacity = float(rate.seconds)
    current = now if tat is None or tat < now else tat
    available = math.floor((now + capacity - current) / interval + EPSILON)
    granted = min(want, available)
    if granted < 1:
        return Grant(0, current, max(current + interval - capacity - now, 0.0), 0, current - now)
    new_tat = current + granted * interval
    return Grant(granted, new_tat, 0.0, available - granted, new_tat - now)


def lease_size(rate: Rate, lease_seconds: float = 0.05) -> int:
    """Tokens to take per store call: what the key may spend in `lease_seconds`, at most a
    twentieth of its burst, at least 1 (a 100/minute key takes one at a time, exactly)."""
    per_second = rate.count / rate.seconds
    return max(1, min(int(per_second * lease_seconds), rate.count // 20))


def local_share(rate: Rate, processes: int) -> Rate:
    """The limit one process enforces alone while the shared store is down: the key's limit
    divided by the processes that share it (at least 1 request per period)."""
    return Rate(max(1, rate.count // max(1, processes)), rate.seconds)


def header_fields(rate: Rate, remaining: int, reset: float) -> tuple[str, str]:
    """`RateLimit-Policy` and `RateLimit` values of draft-ietf-httpapi-ratelimit-headers."""
    policy = f'"key";q={rate.count};w={rate.seconds}'
    return policy, f'"key";r={max(remaining, 0)};t={max(math.ceil(reset - EPSILON), 0)}'

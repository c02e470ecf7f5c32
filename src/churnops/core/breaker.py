"""A circuit breaker: closed -> open after repeated failures -> half-open probe -> closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Values exported as `circuit_breaker_state`."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures; while open, callers skip the dependency until `reset_after` passes."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False  # half-open lets one call through at a time
        self.probe_started: float = 0.0

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """True when a call may go to the dependency: closed, or the one half-open probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            # A probe that never reported back (cancelled, or raised past its caller) must not hold
            # the breaker half-open forever: after `reset_after` another call may probe.
            now = self.clock()
            if not self.probing or now - self.probe_started >= self.reset_after:
                self.probing, self.probe_started = True, now
                return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold or self.state is BreakerState.HALF_OPEN:
            self.opened_at = self.clock()
        self.probing = False

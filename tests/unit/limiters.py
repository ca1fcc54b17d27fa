"""A send limiter for one process, for the unit tests (the system's own: ``outbound.rate_limit``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jastipin.outbound.rate_limit import SendLimiter


class TokenBucket(SendLimiter):
    """Classic token bucket for one process, thread-safe: ``acquire()`` blocks until a token is free."""

    def __init__(
        self,
        rate_per_second: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate_per_second
        self.capacity = burst if burst is not None else max(1.0, rate_per_second)
        self._tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, deadline: float | None = None) -> bool:
        """``deadline`` is epoch seconds, like GlobalRateLimiter's: False when no token comes before it."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
                if deadline is not None and time.time() + wait > deadline:
                    return False
                if wait == 0.0:
                    self._tokens -= 1
                    return True
            self._sleep(wait)

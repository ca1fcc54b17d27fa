"""The virtual clock the rate limiter and the sender's deadline run on in the cost report."""

from __future__ import annotations

import threading
import time


class VirtualClock:
    """Real time plus every wait the rate limiter asked for: a sleep returns at once and moves the clock, so
    a sender invocation's modelled duration includes the waits without the benchmark sleeping them."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._last = threading.local()

    def time(self) -> float:
        now = time.time() + self._offset
        self._last.value = now
        return now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            target = getattr(self._last, "value", time.time() + self._offset) + max(seconds, 0.0)
            now = time.time() + self._offset
            if target > now:
                self._offset += target - now

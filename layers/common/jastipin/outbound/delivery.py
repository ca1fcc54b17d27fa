"""The sender: fan a job out to a trip's participants (``outbound.fanout``), and send each chunk
(``outbound.chunk_send.ChunkSend``: decide per recipient, send under the rate limit with bounded concurrency,
retry what is transient, log exactly one outcome per recipient).

``Sender`` holds what lives as long as the container: the settings, the queues, the WhatsApp client, the
limiter, the clock and sleep the retries are timed by, and the thread pools; each chunk gets its own
``ChunkSend``. ``Deadline`` is the invocation's remaining time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from jastipin.outbound.chunk_send import (
    MAX_ATTEMPTS,
    UNLOGGED_LIMIT,
    ChunkSend,
    SendingHalted,
    backoff_seconds,
)
from jastipin.outbound.fanout import FanOut, FanOutTakenOver
from jastipin.outbound.jobs import Job
from jastipin.outbound.outcomes import ChunkResult
from jastipin.outbound.queues import JobQueues
from jastipin.outbound.rate_limit import SendLimiter
from jastipin.outbound.whatsapp import WhatsAppClient
from jastipin.settings import SenderSettings

__all__ = [
    "MAX_ATTEMPTS",
    "SAFETY_MARGIN_SECONDS",
    "UNLOGGED_LIMIT",
    "Deadline",
    "Sender",
    "SendingHalted",
    "backoff_seconds",
]

logger = Logger(child=True)

SAFETY_MARGIN_SECONDS = 5.0  # stop sending this long before the Lambda timeout


class Deadline:
    """The invocation's remaining time (``remaining_ms``: the Lambda context's; None: no limit), and the wall
    clock a chunk's time decisions are read on (``clock``: epoch seconds; the real one by default)."""

    def __init__(
        self, remaining_ms: Callable[[], int] | None, clock: Callable[[], float] | None = None
    ) -> None:
        self._remaining_ms = remaining_ms
        self._clock = clock if clock is not None else time.time  # looked up now: a benchmark may patch time

    def now(self) -> float:
        """Epoch time, as ``latest_start`` and the limiter's send slots count it."""
        return self._clock()

    def utcnow(self) -> datetime:
        """``now`` as an aware UTC datetime (the 24-hour window is one)."""
        return datetime.fromtimestamp(self._clock(), UTC)

    def seconds_left(self) -> float:
        return self._remaining_ms() / 1000 if self._remaining_ms else float("inf")

    def allows(self, seconds: float) -> bool:
        return self.seconds_left() > seconds + SAFETY_MARGIN_SECONDS

    def latest_start(self, request_seconds: float) -> float | None:
        """Epoch time after which a request of ``request_seconds`` must not start (None: no limit)."""
        if self._remaining_ms is None:
            return None
        return self.now() + self.seconds_left() - request_seconds - SAFETY_MARGIN_SECONDS


class Sender:
    def __init__(
        self,
        settings: SenderSettings,
        queues: JobQueues,
        whatsapp: WhatsAppClient,
        limiter: SendLimiter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.whatsapp = whatsapp
        self.limiter = limiter
        self.sleep = sleep  # a retry's backoff is waited out with it
        self.clock = clock  # retries are due on it (a test moves it with its sleep)
        self.send_pool = ThreadPoolExecutor(max_workers=settings.send_concurrency, thread_name_prefix="send")
        # Outcomes are conditional updates (they merge with statuses that came first), written as they come,
        # side by side (OutcomeWriter).
        self.log_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="log")

    def fan_out(self, job: Job, deadline: Deadline | None = None) -> int:
        """Queue the job's chunk jobs from where its fan-out stands (``outbound.fanout``), handing over to a
        continuation before the deadline; returns the recipients this invocation queued."""
        deadline = deadline or Deadline(None)
        try:
            result = FanOut(self.settings, self.queues).run(
                job, lambda: deadline.seconds_left() - SAFETY_MARGIN_SECONDS
            )
        except FanOutTakenOver:  # the same message, delivered twice, is being handled elsewhere: let it go
            logger.warning("fan-out advanced by another delivery of its message; stopping here")
            return 0
        return result.recipients

    def send_chunk(self, job: Job, deadline: Deadline) -> ChunkResult:
        """Send a chunk job to its recipients (``ChunkSend``); raises ``SendingHalted`` when the token is
        rejected, and whatever a table raises (the message goes back to its queue)."""
        return ChunkSend(self, job, deadline).run()

"""The sender: fan a job out to a trip's participants (``outbound.fanout``), and send each chunk
(``outbound.chunk_send.ChunkSend``: decide per recipient, send under the rate limit with bounded concurrency,
retry what is transient, log exactly one outcome per recipient).

``Sender`` holds what lives as long as the container: the settings, the queues, the WhatsApp client, the
limiter, the clock and sleep the retries are timed by, the event loop the sends run on (its HTTP connections
are kept from one invocation to the next) and the log writes' thread pool; each chunk gets its own
``ChunkSend``. ``Deadline`` is the invocation's remaining time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

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

if TYPE_CHECKING:
    from jastipin.data.async_dynamodb import AsyncDynamoDB

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
T = TypeVar("T")

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
        dynamodb: AsyncDynamoDB | None = None,
    ) -> None:
        """``dynamodb``: the outcome writes' client on the event loop (the deployed sender's); without it,
        outcomes are written through botocore on the log pool (moto's in-process ``mock_aws`` sees those)."""
        self.settings = settings
        self.dynamodb = dynamodb
        self.queues = queues
        self.whatsapp = whatsapp
        self.limiter = limiter
        self.sleep = sleep  # a retry's backoff is waited out with it
        self.clock = clock  # retries are due on it (a test moves it with its sleep)
        # Outcomes are conditional updates (they merge with statuses that came first), written as they come,
        # side by side (OutcomeWriter).
        self.log_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="log")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()  # one chunk on the loop at a time (Lambda: one invocation)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the sender's event loop, made on first use and kept for the container's life
        (with the WhatsApp client's connections on it)."""
        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(coroutine)

    async def pause(self, seconds: float) -> None:
        """Wait out a retry's backoff: ``asyncio.sleep``, or the injected ``sleep`` (a test's moves its clock
        and returns at once)."""
        if self.sleep is time.sleep:
            await asyncio.sleep(seconds)
        else:
            self.sleep(seconds)
            await asyncio.sleep(0)

    def close(self) -> None:
        """Close the loop and its connections (tests, and a local process at exit; a Lambda container just
        ends). A chunk still running on the loop is left alone."""
        if not self._loop_lock.acquire(timeout=1.0):
            return
        try:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.run_until_complete(self.whatsapp.aclose())
                if self.dynamodb is not None:
                    self._loop.run_until_complete(self.dynamodb.close())
                self._loop.close()  # its default executor too, without waiting
        finally:
            self._loop_lock.release()
        self.log_pool.shutdown(wait=False)

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

"""One chunk's sending in one invocation (``ChunkSend``): who is still to get it, who is skipped, the sends
under the rate limit with bounded concurrency, the retries, and one outcome per recipient in the log.

Retries: a recipient that fails transiently (429, 5xx, timeout, pair limit) is retried up to
``MAX_ATTEMPTS`` times with exponential backoff from 2 s, counted from its own failure (its retry goes ahead
of the chunk's first sends still waiting) — inside the invocation while time allows, else by re-queueing a job
that carries only the pending recipients. Recipients already in a final state (read from the log at the
start) are never sent again when SQS redelivers a message.

The sends are an asyncio loop: ``send_concurrency`` (32 by default) requests in flight cost no thread each,
so a Graph latency of 200 ms does not cap an instance (README, "Sender instance and sizing"). Every
outcome's log write is still one conditional update (it merges with a status that came first), posted on
the same loop (``data.async_dynamodb``; through botocore on the log pool's threads under ``mock_aws``).

``Sender`` (``outbound.delivery``) holds what lives as long as the container (settings, queues, the WhatsApp
client, the limiter, the clock, the event loop, the log pool) and starts one ``ChunkSend`` per chunk;
everything that belongs to one chunk (its job, recipients, attempts, deadline, and the state of its send
workers) is here.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jastipin.data import notifications_log
from jastipin.data.models import FINAL_STATUSES, LogStatus, log_key
from jastipin.operations.observability import breakdown
from jastipin.outbound.jobs import AutoReplyJob, Job, ProductUpdateJob, ProofJob, Recipient
from jastipin.outbound.outcomes import (
    ChunkResult,
    Outcome,
    OutcomeWriter,
    arecord_one,
    record,
    record_one,
)
from jastipin.outbound.rate_limit import SlotLimiter
from jastipin.outbound.recipients import (
    MembershipWatch,
    decide,
    follow_user_id_changes,
    mark_marketing_opt_out,
)
from jastipin.outbound.whatsapp import (
    Address,
    AuthError,
    MarketingOptOut,
    RateLimited,
    WhatsAppError,
    WindowClosed,
    image_message,
    template_message,
    text_message,
)

if TYPE_CHECKING:
    from jastipin.outbound.delivery import Deadline, Sender

logger = Logger(child=True)
metrics = Metrics()
T = TypeVar("T")

MAX_ATTEMPTS = 3  # spec: attempts 3
BACKOFF_BASE_SECONDS = 2.0  # spec: exponential from 2000 ms
# A send that got no answer (timeout, dropped connection) may have reached Meta; its status, which echoes our
# log key, comes through the webhook and the inbound queue. It is sent again only if no status came by then.
AMBIGUOUS_WAIT_SECONDS = 5.0
# Outcomes whose log write has not completed, beyond the sends in flight: a send waits when there are this
# many. A crash re-sends at most these (README, Reliability); without the bound, sends ran on for as long as a
# slow or failing write took (the SDK retries one for seconds).
UNLOGGED_LIMIT = 25
WAIT_TICK_SECONDS = 1.0  # how often the send loop's threads look again when nothing woke them


class SendingHalted(Exception):
    """The token is invalid: nothing more can be sent; the message goes back to SQS (and alarms fire)."""


class _Marker:
    """What the send workers hand over in place of an outcome."""


LATE = _Marker()  # the send would have left too late for its slot: it takes another
ALREADY_OUT = _Marker()  # a retry not made: the timed-out send reached Meta (its status came)
_NO_SLOT = _Marker()  # no send slot before the invocation must stop


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[T], None], arg: T) -> None:
    """Run ``callback(arg)`` on ``loop``'s thread (from a log write's thread)."""
    loop.call_soon_threadsafe(callback, arg)


def backoff_seconds(attempts: int) -> float:
    """After the n-th failed attempt wait 2, 4, 8... seconds."""
    return float(BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))


class ChunkSend:
    """The sending of one chunk job in one invocation; ``run`` once.

    ``send_concurrency`` workers, coroutines on the sender's event loop (``Sender.run``), each claim a piece
    of work, wait for their own send slot, and only then take what to send with it: a retry that is due by
    then goes first. Each takes its outcome in itself: logged (on the log pool's threads), retried or put
    back. Only the loop's thread touches the scheduling state below, so it needs no lock; blocking calls
    (DynamoDB reads, a limiter's reservation, a test's blocking limiter) run on threads."""

    def __init__(self, sender: Sender, job: Job, deadline: Deadline) -> None:
        self.sender = sender
        self.job = job
        self.deadline = deadline
        self.attempts: dict[str, int] = {}  # attempts so far, per recipient id
        self.window_open: set[str] = set()  # recipients whose 24-hour window is open (free-form text)
        self.watch: MembershipWatch | None = None  # STOP re-checked right before each send
        # What the sending came to.
        self.outcomes: list[Outcome] = []  # every attempt's, retried ones (QUEUED) included
        self.not_started: list[Recipient] = []  # no send slot in time (or halted)
        self.later: list[tuple[Recipient, float]] = []  # (retry, seconds to wait) not fitting
        self.retried = 0
        self.halted = False  # the token was rejected
        self.stopped = False  # something failed: start nothing more
        self.out_of_slots = False  # no send slot before the invocation must stop
        self.latencies_ms: list[float] = []  # each WhatsApp call's, in milliseconds
        # The send workers' scheduling (all on the sender's event loop: no locks).
        self._first: deque[Recipient] = deque()  # first sends, in order
        self._retries: list[tuple[float, int, Recipient]] = []  # (due on sender.clock, order, recipient)
        self._order = itertools.count()
        self._claimed = 0  # workers waiting for a send slot, each for one piece of work
        self._busy = 0  # workers between their claim and taking the outcome in
        self._sleeping = False  # a worker is waiting out a retry's backoff
        self._waiters: list[asyncio.Future[None]] = []  # workers waiting for work
        self._error: BaseException | None = None  # the first error: the chunk stops and raises it
        self._unlogged: asyncio.Semaphore  # made on the loop (_send_all_async)
        self._rereading = asyncio.Lock()  # the STOP watch's re-read (_left)
        self._latencies: list[float] = []
        self._latest_start: float | None = None  # epoch time after which no send may start (None: no limit)
        self._late_seconds = getattr(sender.limiter, "late_seconds", None)
        self._claims_slots = isinstance(sender.limiter, SlotLimiter)  # checked once: a Protocol check is slow
        # A reservation on the loop, through the sender's AsyncDynamoDB (GlobalRateLimiter.aclaim_slot); else
        # on a thread.
        self._aclaim = getattr(sender.limiter, "aclaim_slot", None) if sender.dynamodb is not None else None

    # -- the chunk ---------------------------------------------------------------------------------------
    def run(self) -> ChunkResult:
        job, sender = self.job, self.sender
        recipients = follow_user_id_changes(list(job.participants or []))
        previous = self._previous_outcomes(recipients)
        todo = [r for r in recipients if previous.get(r.id, (None, 0))[0] not in FINAL_STATUSES]
        self.attempts = {r.id: previous.get(r.id, (None, 0))[1] for r in todo}
        result = ChunkResult()
        skipped, pending, self.window_open = decide(job, todo, self.attempts, now=self.deadline.utcnow)
        if skipped:
            self._write_log(skipped)
        result.outcomes += skipped
        if job.needs_membership:
            self.watch = MembershipWatch(job.trip_id, [r.id for r in pending], sender.clock)
        try:
            self._send_all(pending)
        finally:
            breakdown.latencies(job, self._latencies)  # one hand-over per chunk, not one metric per send
        result.outcomes += [o for o in self.outcomes if o.status is not LogStatus.QUEUED]
        if self.halted:
            self._count(result)
            raise SendingHalted("WhatsApp rejected the access token; sending stopped")
        if self.retried:
            metrics.add_metric(name="NotificationRetried", unit=MetricUnit.Count, value=self.retried)
            breakdown.count(job, "NotificationRetried", self.retried)
        if self.not_started or self.later:
            # Out of time: hand the rest to a new message (not counted as an attempt for not_started); a
            # retry that did not fit waits out the rest of its backoff as the message's delay.
            result.requeued = self.not_started + [r for r, _ in self.later]
            delay = max((seconds for _, seconds in self.later), default=0.0)
            self._requeue(result.requeued, delay=math.ceil(delay))
        self._count(result)
        return result

    def _previous_outcomes(self, recipients: list[Recipient]) -> dict[str, tuple[str, int]]:
        """The log's view of these recipients. A stub (a status that came before this job's outcome, whose
        invocation then ended) is completed here: the message went out, nothing is sent again."""
        found = notifications_log.previous(self.job.job_id, [r.id for r in recipients])
        stubs = [
            Outcome(r, LogStatus.SENT, max(1, found[r.id].attempts), found[r.id].provider_msg_id)
            for r in recipients
            if r.id in found and not found[r.id].complete and found[r.id].status in FINAL_STATUSES
        ]
        if stubs:
            self._write_log(stubs)
        return {pid: (p.status, p.attempts) for pid, p in found.items()}

    def _already_out(self, recipients: list[Recipient]) -> set[str]:
        """Recipients whose message a status has shown to be out (sent, delivered, read, or failed at Meta)
        although this invocation saw the send fail: a timed-out send that Meta took. Not sent again."""
        found = notifications_log.previous(self.job.job_id, [r.id for r in recipients])
        return {
            pid
            for pid, p in found.items()
            if p.status in (LogStatus.SENT, LogStatus.DELIVERED, LogStatus.READ, LogStatus.FAILED)
            and p.provider_msg_id
        }

    # -- sending -----------------------------------------------------------------------------------------
    def _send_all(self, recipients: list[Recipient]) -> None:
        """Send to each recipient (concurrently, under the rate limit) unless they left the trip. A recipient
        that fails transiently is sent again ``backoff_seconds(attempt)`` after that failure (2 s, then 4 s),
        ahead of the first sends still waiting, so that a retry is neither early nor late by the length of
        the chunk; a retry that would not fit in the invocation is handed back (``later``)."""
        self.sender.run(self._send_all_async(recipients))

    async def _send_all_async(self, recipients: list[Recipient]) -> None:
        sender = self.sender
        concurrency = sender.settings.send_concurrency
        loop = asyncio.get_running_loop()
        self._latest_start = self.deadline.latest_start(sender.settings.wa_timeout_seconds)
        self._first.extend(recipients)
        # No more than UNLOGGED_LIMIT + send_concurrency sends are ever unlogged (made or in flight): a send
        # takes a slot, the log write of its outcome frees it.
        self._unlogged = asyncio.Semaphore(UNLOGGED_LIMIT + concurrency)

        # Outcomes are logged as they complete (a crash re-sends at most the sends not yet logged), side by
        # side on the log pool's threads; a write that fails stops the chunk like any other error.
        dynamodb = sender.dynamodb
        if dynamodb is not None:  # tasks on the loop (the deployed sender): its callbacks come on the loop
            writer = OutcomeWriter.on_loop(
                loop,
                lambda o: arecord_one(dynamodb, self.job, o, sender.settings),
                written=self._logged,
                failed=self._stop,
            )
        else:  # through botocore, on the log pool's threads (tests under moto's mock_aws)

            def written(count: int) -> None:
                _call_soon(loop, self._logged, count)

            def failed(exc: BaseException) -> None:
                _call_soon(loop, self._stop, exc)

            writer = OutcomeWriter(
                sender.log_pool,
                lambda o: record_one(self.job, o, sender.settings),
                written=written,
                failed=failed,
            )
        if recipients:  # the token and the HTTP session, before any send slot is taken
            await sender.whatsapp.aprepare()
        sender.limiter.expect(len(recipients))
        workers = [asyncio.ensure_future(self._worker(writer)) for _ in range(concurrency)]
        try:
            await asyncio.gather(*workers)
            if self._error is not None:
                raise self._error
        except BaseException as exc:
            # The message goes back to SQS: start nothing more (each further send would be made again on the
            # redelivery, unlogged), and let the sends in flight end before the invocation does.
            self._stop(exc)
            await asyncio.gather(*workers, return_exceptions=True)
            # What was sent is logged, as far as the log takes it.
            await asyncio.to_thread(writer.wait, raise_error=False)
            raise
        finally:
            await asyncio.to_thread(sender.limiter.release)
        self.latencies_ms = list(self._latencies)
        now = sender.clock()
        if self.halted:  # not sent: the whole message comes back (SendingHalted)
            self.not_started += [*self._first, *(r for _, _, r in sorted(self._retries))]
        else:  # out of send slots: the rest goes to a new message, retries after the rest of their backoff
            self.not_started += list(self._first)
            self.later += [(r, max(0.0, due - now)) for due, _, r in sorted(self._retries)]
        await asyncio.to_thread(writer.wait)

    def _logged(self, count: int) -> None:
        """``count`` outcomes are in the log (or overtaken by a later one): as many more sends may be made."""
        for _ in range(count):
            self._unlogged.release()

    def _stop(self, exc: BaseException) -> None:
        """Something failed: start nothing more; ``_send_all_async`` raises the first error."""
        if self._error is None:
            self._error = exc
        self.stopped = True
        self._notify()
        for _ in range(self.sender.settings.send_concurrency):
            self._unlogged.release()  # wakes the sends waiting for a slot: they stop

    def _take_in(self, r: Recipient, outcome: Outcome | _Marker | None, writer: OutcomeWriter) -> None:
        """What a send came to for ``r``: logged, retried, or put back."""
        if outcome is None:
            self.not_started.append(r)
        elif outcome is LATE:
            self.sender.limiter.missed()
            self._first.appendleft(r)  # first in line for the next slot; not an attempt
        elif outcome is ALREADY_OUT:
            logger.info("timed-out send that reached Meta", extra={"recipients": 1})
        elif isinstance(outcome, Outcome):
            self.outcomes.append(outcome)
            writer.add(outcome)
            if outcome.status is LogStatus.QUEUED and not self.halted:
                self.retried += 1
                backoff = backoff_seconds(outcome.attempts)
                if outcome.ambiguous:  # its status has this long to show it went out
                    backoff = max(backoff, AMBIGUOUS_WAIT_SECONDS)
                if self.deadline.allows(backoff + self.sender.settings.wa_timeout_seconds):
                    self._schedule_retry(r, backoff)
                else:
                    self.later.append((r, backoff))

    def _schedule_retry(self, r: Recipient, backoff: float) -> None:
        """Due ``backoff`` seconds from now; a send that timed out may have reached Meta, so its status
        (echoing our log key) has the backoff to arrive and is looked for first (``_already_out``)."""
        heapq.heappush(self._retries, (self.sender.clock() + backoff, next(self._order), r))
        if self.watch is not None:
            self.watch.expect([r.id])

    # -- the send workers (coroutines on the sender's event loop) ----------------------------------------
    def _available(self, now: float) -> int:
        return len(self._first) + sum(1 for when, _, _ in self._retries if when <= now) - self._claimed

    def _take(self, now: float) -> tuple[Recipient | None, bool]:
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2], True
        return (self._first.popleft() if self._first else None), False

    def _notify(self) -> None:
        """Wake the workers waiting for work (``_wait``)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        """Until ``_notify`` or ``timeout`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        handle = asyncio.get_running_loop().call_later(timeout, self._wake, waiter)
        try:
            await waiter
        finally:
            handle.cancel()

    @staticmethod
    def _wake(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    async def _worker(self, writer: OutcomeWriter) -> None:
        """Claim a piece of work, wait for a send slot, then take what to send with it (a retry due by then
        goes first), send it and take the outcome in; until nothing is left or the chunk stops."""
        try:
            while await self._claim():
                claimed = True
                try:
                    slot = await self._slot()
                    self._claimed -= 1
                    claimed = False
                    if slot is _NO_SLOT:  # no send slot before the invocation must stop
                        self.out_of_slots = True
                        return
                    r, is_retry = self._take(self.sender.clock())
                    if r is None:  # taken by another worker meanwhile: this slot goes unused
                        continue
                    if is_retry and r.id in await asyncio.to_thread(self._already_out, [r]):
                        # A send that timed out but reached Meta: its status came in the backoff.
                        self._take_in(r, ALREADY_OUT, writer)
                        continue
                    outcome = await self._send_one(r, slot if isinstance(slot, float) else None)
                    self._take_in(r, outcome, writer)
                finally:
                    if claimed:
                        self._claimed -= 1
                    self._busy -= 1
                    # Wake the waiting workers only when there is news for them: nothing is in flight any
                    # more (they end, or one waits out a backoff), sending stopped, or work was put back.
                    # A retry that falls due wakes its waiter by the wait's own timeout. (Waking them all
                    # after every send made each chunk's tail wake and re-wait ~30 workers per send.)
                    if (
                        self._busy == 0
                        or self.halted
                        or self.out_of_slots
                        or len(self._first) > self._claimed
                    ):
                        self._notify()
        except BaseException as exc:
            self._stop(exc)

    async def _slot(self) -> float | bool | _Marker:
        """Wait for this worker's send slot: its time (epoch seconds) from a limiter that tells it, True from
        one that only blocks, ``_NO_SLOT`` when none comes before the latest start."""
        limiter, latest = self.sender.limiter, self._latest_start
        if not self._claims_slots:  # a limiter that blocks until the slot (the tests' own): on a thread
            take = getattr(limiter, "acquire_slot", None)
            if take is not None:
                found = await asyncio.to_thread(take, latest)
                return _NO_SLOT if found is None else float(found)
            return True if await asyncio.to_thread(limiter.acquire, latest) else _NO_SLOT
        while True:
            # A reservation is a DynamoDB call: made on the loop (aclaim_slot) or on a thread, the sends in
            # flight go on meanwhile.
            claim = cast(SlotLimiter, limiter).claim_slot
            if cast(SlotLimiter, limiter).has_slot():
                slot = claim(latest)
            elif self._aclaim is not None:
                slot = await self._aclaim(latest, self.sender.dynamodb)
            else:
                slot = await asyncio.to_thread(claim, latest)
            if slot is None:
                return _NO_SLOT
            wait = slot - self.deadline.now()
            if wait > 0:
                await asyncio.sleep(wait)
            if cast(SlotLimiter, limiter).in_time(slot):
                return float(slot)

    async def _claim(self) -> bool:
        """Wait until there is a piece of work to claim (True) or nothing more to do (False)."""
        while True:
            if self.halted or self.stopped or self.out_of_slots:
                return False
            now = self.sender.clock()
            if self._sleeping:  # another worker waits out a backoff: nothing else is to be done
                await self._wait(WAIT_TICK_SECONDS)
                continue
            if self._available(now) > 0:
                self._claimed += 1
                self._busy += 1
                return True
            idle = self._busy == 0  # nothing in flight can bring work
            if idle and not self._first and not self._retries:
                self._notify()
                return False  # nothing left
            if idle and self._retries:
                # Only a retry's backoff is left to wait out: one worker sleeps it (the Sender's sleep: a
                # test's clock moves by it), the others wait to be woken.
                self._sleeping = True
                try:
                    await self.sender.pause(max(0.0, self._retries[0][0] - now))
                finally:
                    self._sleeping = False
                    self._notify()
                continue
            timeout = WAIT_TICK_SECONDS
            if self._retries:
                timeout = min(timeout, max(0.0, self._retries[0][0] - now))
            await self._wait(timeout)

    async def _send_one(self, r: Recipient, slot: float | None) -> Outcome | _Marker | None:
        # Wait for a slot no later than a send may start: past that the recipient is left for the next
        # invocation (requeued), as when the rate limiter has no slot in time.
        unlogged = self._unlogged
        if unlogged.locked():
            latest_start = self._latest_start
            wait_s = None if latest_start is None else max(0.0, latest_start - self.deadline.now())
            try:
                await asyncio.wait_for(unlogged.acquire(), wait_s)
            except TimeoutError:
                return None
        else:
            await unlogged.acquire()
        outcome = await self._try_send(r, slot)
        if outcome is None or outcome is LATE:
            unlogged.release()  # nothing was sent: nothing to log
        return outcome

    async def _try_send(self, r: Recipient, slot: float | None) -> Outcome | _Marker | None:
        if self.halted or self.stopped:
            return None
        if self.watch is not None and await self._left(r.id):  # after the wait for a send slot: STOP holds
            return Outcome(r, LogStatus.SKIPPED, self.attempts.get(r.id, 0), reason="unsubscribed")
        late_seconds = self._late_seconds
        if slot is not None and late_seconds is not None and self.deadline.now() - slot > late_seconds:
            return LATE  # leaving this late, beside on-time sends, could crowd a second: another slot
        attempt = self.attempts.get(r.id, 0) + 1
        self.attempts[r.id] = attempt
        started = time.perf_counter()
        try:
            wamid = await self._deliver(r, r.id in self.window_open)
        except AuthError as exc:
            self.halted = True
            metrics.add_metric(name="WhatsAppAuthError", unit=MetricUnit.Count, value=1)
            logger.error("WhatsApp token rejected: sending halted", extra={"code": exc.code})
            return Outcome(r, LogStatus.QUEUED, attempt - 1, reason=exc.reason, error_code=exc.code)
        except WhatsAppError as exc:
            outcome = self._failure(r, attempt, exc)
            if isinstance(exc, MarketingOptOut) and outcome.status is LogStatus.FAILED:
                await asyncio.to_thread(mark_marketing_opt_out, r)  # DynamoDB writes: off the loop
            return outcome
        finally:  # WhatsAppSendLatency, published per chunk (``breakdown.latencies``)
            self._latencies.append((time.perf_counter() - started) * 1000)
        return Outcome(r, LogStatus.SENT, attempt, provider_msg_id=wamid)

    async def _left(self, participant_id: str) -> bool:
        """``watch.left``, its memberships re-read on a thread when due (a DynamoDB read on the loop would
        hold up every send in flight, and make those past their late check leave late); one at a time."""
        watch = self.watch
        assert watch is not None
        if watch.due():
            async with self._rereading:
                if watch.due():
                    await asyncio.to_thread(watch.refresh)
        return watch.left(participant_id)

    async def _deliver(self, r: Recipient, window_open: bool) -> str:
        job = self.job
        to = Address(phone=r.phone, user_id=r.user_id)
        key = log_key(job.job_id, r.id)  # comes back in the statuses: they update the entry by key
        message: dict[str, Any]
        if isinstance(job, ProofJob) and window_open:
            message = image_message(link=job.image_url, media_id=job.media_id, caption=job.caption)
        elif isinstance(job, AutoReplyJob) or (  # an auto-reply is inside the window by definition
            isinstance(job, ProductUpdateJob) and (window_open or job.template_ref is None)
        ):
            message = text_message(job.message)
        elif job.template_ref is None:
            raise WindowClosed("no template for a closed window", code=131047)
        else:
            ref = job.template_ref
            message = template_message(
                ref.name,
                ref.language,
                ref.parameters,
                header_image_url=ref.header_image_url,
                header_image_id=ref.header_image_id,
            )
        return await self.sender.whatsapp.asend(to, message, key)

    @staticmethod
    def _failure(r: Recipient, attempt: int, exc: WhatsAppError) -> Outcome:
        logger.info(  # Meta's trace id is what its support asks for
            "send refused",
            extra={
                "participant_id": r.id,
                "attempt": attempt,
                "code": exc.code,
                "subcode": exc.subcode,
                "http_status": exc.http_status,
                "fbtrace_id": exc.fbtrace_id,
            },
        )
        if isinstance(exc, RateLimited):
            metrics.add_metric(name="WhatsAppRateLimited", unit=MetricUnit.Count, value=1)
        if exc.retryable and attempt < MAX_ATTEMPTS:
            return Outcome(
                r, LogStatus.QUEUED, attempt, reason=exc.reason, error_code=exc.code, ambiguous=exc.ambiguous
            )
        reason = "window_closed" if isinstance(exc, WindowClosed) else exc.reason
        return Outcome(r, LogStatus.FAILED, attempt, reason=reason, error_code=exc.code)

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _requeue(self, recipients: list[Recipient], delay: int) -> None:
        suffix = f"r{int(time.time() * 1000)}"
        self.sender.queues.send(
            self.job.chunk(recipients), dedup_suffix=suffix, delay_seconds=min(max(delay, 0), 900)
        )
        logger.info(
            "recipients re-queued",
            extra={"job_id": self.job.job_id, "recipients": len(recipients), "delay_seconds": delay},
        )

    def _write_log(self, outcomes: Iterable[Outcome]) -> None:
        record(self.job, outcomes, self.sender.settings, self.sender.log_pool)

    def _count(self, result: ChunkResult) -> None:
        for status, name in (
            (LogStatus.SENT, "NotificationSent"),
            (LogStatus.FAILED, "NotificationFailed"),
            (LogStatus.SKIPPED, "NotificationSkipped"),
        ):
            value = result.count(status)
            if value:
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)  # alarms: service only
                breakdown.count(self.job, name, value)  # + per queue and message type

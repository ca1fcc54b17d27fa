"""The sender's logic: fan a job out to a trip's participants, decide per recipient (send, skip), send under
the rate limit with bounded concurrency, retry what is transient, and log exactly one outcome per recipient.

Retries: a recipient that fails transiently (429, 5xx, timeout, pair limit) is retried up to
``MAX_ATTEMPTS`` times with exponential backoff from 2 s, counted from its own failure (its retry goes ahead
of the chunk's first sends still waiting) — inside the invocation while time allows, else by re-queueing a job
that carries only the pending recipients. Recipients already in a final state (read from
the log at the start) are never sent again when SQS redelivers a message.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jastipin.data import notifications_log
from jastipin.data.models import (
    FINAL_STATUSES,
    LogStatus,
    log_key,
)
from jastipin.operations.observability import breakdown
from jastipin.outbound.fanout import FanOut, FanOutTakenOver
from jastipin.outbound.jobs import AutoReplyJob, Job, ProductUpdateJob, ProofJob, Recipient
from jastipin.outbound.outcomes import ChunkResult, Outcome, OutcomeWriter, record, record_one
from jastipin.outbound.queues import JobQueues
from jastipin.outbound.rate_limit import SendLimiter
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
    WhatsAppClient,
    WhatsAppError,
    WindowClosed,
)
from jastipin.settings import Settings

logger = Logger(child=True)
metrics = Metrics()

MAX_ATTEMPTS = 3  # spec: attempts 3
BACKOFF_BASE_SECONDS = 2.0  # spec: exponential from 2000 ms
# A send that got no answer (timeout, dropped connection) may have reached Meta; its status, which echoes our
# log key, comes through the webhook and the inbound queue. It is sent again only if no status came by then.
AMBIGUOUS_WAIT_SECONDS = 5.0
SAFETY_MARGIN_SECONDS = 5.0  # stop sending this long before the Lambda timeout
# Outcomes whose log write has not completed, beyond the sends in flight: a send waits when there are this
# many. A crash re-sends at most these (README, Reliability); without the bound, sends ran on for as long as a
# slow or failing write took (the SDK retries one for seconds).
UNLOGGED_LIMIT = 25
WAIT_TICK_SECONDS = 1.0  # how often the send loop's threads look again when nothing woke them


class SendingHalted(Exception):
    """The token is invalid: nothing more can be sent; the message goes back to SQS (and alarms fire)."""


class _Marker:
    """What ``Sender._send_all``'s workers hand over in place of an outcome."""


LATE = _Marker()  # the send would have left too late for its slot: it takes another
ALREADY_OUT = _Marker()  # a retry not made: the timed-out send reached Meta (its status came)
WORKER_EXIT = _Marker()  # a send worker has stopped


@dataclass
class _Sending:
    """What one invocation's sending of a chunk came to (``Sender._send_all``)."""

    outcomes: list[Outcome] = field(default_factory=list)  # every attempt's, retried ones (QUEUED) included
    not_started: list[Recipient] = field(default_factory=list)  # no send slot in time (or halted)
    later: list[tuple[Recipient, float]] = field(default_factory=list)  # (retry, seconds to wait) not fitting
    retried: int = 0
    halted: bool = False  # the token was rejected
    stopped: bool = False  # something failed: start nothing more
    out_of_slots: bool = False  # no send slot before the invocation must stop


class Deadline:
    def __init__(self, remaining_ms: Callable[[], int] | None) -> None:
        self._remaining_ms = remaining_ms

    def seconds_left(self) -> float:
        return self._remaining_ms() / 1000 if self._remaining_ms else float("inf")

    def allows(self, seconds: float) -> bool:
        return self.seconds_left() > seconds + SAFETY_MARGIN_SECONDS

    def latest_start(self, request_seconds: float) -> float | None:
        """Epoch time after which a request of ``request_seconds`` must not start (None: no limit)."""
        if self._remaining_ms is None:
            return None
        return time.time() + self.seconds_left() - request_seconds - SAFETY_MARGIN_SECONDS


def backoff_seconds(attempts: int) -> float:
    """After the n-th failed attempt wait 2, 4, 8... seconds."""
    return float(BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))


class Sender:
    def __init__(
        self,
        settings: Settings,
        queues: JobQueues,
        whatsapp: WhatsAppClient,
        limiter: SendLimiter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.queues = queues
        self.whatsapp = whatsapp
        self.limiter = limiter
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=settings.send_concurrency, thread_name_prefix="send")
        # Outcomes are conditional updates (they merge with statuses that came first), written as they come,
        # side by side (OutcomeWriter).
        self._log_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="log")

    # -- fan-out -----------------------------------------------------------------------------------------
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

    # -- sending a chunk ---------------------------------------------------------------------------------
    def send_chunk(self, job: Job, deadline: Deadline) -> ChunkResult:
        recipients = follow_user_id_changes(list(job.participants or []))
        previous = self._previous_outcomes(job, recipients)
        todo = [r for r in recipients if previous.get(r.id, (None, 0))[0] not in FINAL_STATUSES]
        attempts = {r.id: previous.get(r.id, (None, 0))[1] for r in todo}
        result = ChunkResult()
        skipped, pending, window_open = decide(job, todo, attempts)
        if skipped:
            self._write_log(job, skipped)
        result.outcomes += skipped
        watch = None
        if job.needs_membership:
            watch = MembershipWatch(job.trip_id, [r.id for r in pending], self._clock)
        if pending:
            self.whatsapp.prepare()  # the token, read before any send slot is taken
        sending = self._send_all(job, pending, attempts, window_open, deadline, watch)
        result.outcomes += [o for o in sending.outcomes if o.status is not LogStatus.QUEUED]
        if sending.halted:
            self._count(job, result)
            raise SendingHalted("WhatsApp rejected the access token; sending stopped")
        if sending.retried:
            metrics.add_metric(name="NotificationRetried", unit=MetricUnit.Count, value=sending.retried)
            breakdown.count(job, "NotificationRetried", sending.retried)
        if sending.not_started or sending.later:
            # Out of time: hand the rest to a new message (not counted as an attempt for not_started); a
            # retry that did not fit waits out the rest of its backoff as the message's delay.
            result.requeued = sending.not_started + [r for r, _ in sending.later]
            delay = max((seconds for _, seconds in sending.later), default=0.0)
            self._requeue(job, result.requeued, delay=math.ceil(delay))
        self._count(job, result)
        return result

    def _previous_outcomes(self, job: Job, recipients: list[Recipient]) -> dict[str, tuple[str, int]]:
        """The log's view of these recipients. A stub (a status that came before this job's outcome, whose
        invocation then ended) is completed here: the message went out, nothing is sent again."""
        found = notifications_log.previous(job.job_id, [r.id for r in recipients])
        stubs = [
            Outcome(r, LogStatus.SENT, max(1, found[r.id].attempts), found[r.id].provider_msg_id)
            for r in recipients
            if r.id in found and not found[r.id].complete and found[r.id].status in FINAL_STATUSES
        ]
        if stubs:
            self._write_log(job, stubs)
        return {pid: (p.status, p.attempts) for pid, p in found.items()}

    def _already_out(self, job: Job, recipients: list[Recipient]) -> set[str]:
        """Recipients whose message a status has shown to be out (sent, delivered, read, or failed at Meta)
        although this invocation saw the send fail: a timed-out send that Meta took. Not sent again."""
        found = notifications_log.previous(job.job_id, [r.id for r in recipients])
        return {
            pid
            for pid, p in found.items()
            if p.status in (LogStatus.SENT, LogStatus.DELIVERED, LogStatus.READ, LogStatus.FAILED)
            and p.provider_msg_id
        }

    def _send_all(
        self,
        job: Job,
        recipients: list[Recipient],
        attempts: dict[str, int],
        window_open: set[str],
        deadline: Deadline,
        watch: MembershipWatch | None = None,
    ) -> _Sending:
        """Send to each recipient (concurrently, under the rate limit) unless they left the trip. A recipient
        that fails transiently is sent again ``backoff_seconds(attempt)`` after that failure (2 s, then 4 s),
        ahead of the first sends still waiting, so that a retry is neither early nor late by the length of
        the chunk; a retry that would not fit in the invocation is handed back (``later``).

        ``send_concurrency`` workers each claim a piece of work, wait for their own send slot, and only then
        take what to send with it: a retry that is due by then goes first. Outcomes come back to this thread,
        which logs them and schedules the retries."""
        state = _Sending()
        latest_start = deadline.latest_start(self.settings.wa_timeout_seconds)
        concurrency = self.settings.send_concurrency
        # No more than UNLOGGED_LIMIT + send_concurrency sends are ever unlogged (made or in flight): a send
        # takes a slot, the log write of its outcome frees it.
        unlogged_slots = threading.Semaphore(UNLOGGED_LIMIT + concurrency)
        take_slot = getattr(self.limiter, "acquire_slot", None)
        late_seconds = getattr(self.limiter, "late_seconds", None)

        work = threading.Condition()
        first = deque(recipients)  # first sends, in order
        retries: list[tuple[float, int, Recipient]] = []  # (due on self._clock, order, recipient)
        order = itertools.count()
        claimed = 0  # workers waiting for a send slot, each for one piece of work
        busy = 0  # workers between their claim and handing the outcome over
        outstanding = 0  # sends handed over whose outcome the loop below has not taken in yet
        results: queue.SimpleQueue[tuple[Recipient | None, Any]] = queue.SimpleQueue()

        def available(now: float) -> int:
            return len(first) + sum(1 for when, _, _ in retries if when <= now) - claimed

        def take(now: float) -> tuple[Recipient | None, bool]:
            if retries and retries[0][0] <= now:
                return heapq.heappop(retries)[2], True
            return (first.popleft() if first else None), False

        sleeping = False  # a worker is waiting out a retry's backoff

        def worker() -> None:
            try:
                work_on()
            finally:
                results.put((None, WORKER_EXIT))  # after every outcome this worker handed over

        def work_on() -> None:
            nonlocal claimed, busy, outstanding, sleeping
            while True:
                with work:
                    while True:
                        if state.halted or state.stopped or state.out_of_slots:
                            return
                        now = self._clock()
                        if sleeping:  # another worker waits out a backoff: nothing else is to be done
                            work.wait(WAIT_TICK_SECONDS)
                            continue
                        if available(now) > 0:
                            claimed += 1
                            busy += 1
                            break
                        idle = busy == 0 and outstanding == 0  # nothing in flight can bring work
                        if idle and not first and not retries:
                            work.notify_all()
                            return  # nothing left
                        if idle and retries and not sleeping:
                            # Only a retry's backoff is left to wait out: one worker sleeps it (the
                            # Sender's sleep: a test's clock moves by it), the others wait to be woken.
                            sleeping = True
                            work.release()
                            try:
                                self._sleep(max(0.0, retries[0][0] - now))
                            finally:
                                work.acquire()
                                sleeping = False
                                work.notify_all()
                            continue
                        timeout = WAIT_TICK_SECONDS
                        if retries:
                            timeout = min(timeout, max(0.0, retries[0][0] - now))
                        work.wait(timeout)
                try:
                    slot: float | None = None
                    if take_slot is not None:
                        slot = take_slot(latest_start)
                        got = slot is not None
                    else:
                        got = self.limiter.acquire(latest_start)
                    with work:
                        claimed -= 1
                        if not got:  # no send slot before the invocation must stop
                            state.out_of_slots = True
                            return
                        r, is_retry = take(self._clock())
                        if r is None:  # taken by another worker meanwhile: this slot goes unused
                            continue
                        outstanding += 1
                    if is_retry and self._already_out(job, [r]):
                        # A send that timed out but reached Meta: its status came in the backoff.
                        results.put((r, ALREADY_OUT))
                        continue
                    results.put((r, send_one(r, slot)))
                except BaseException as exc:  # handed to the loop below, which stops everything
                    results.put((None, exc))
                    return
                finally:
                    with work:
                        busy -= 1
                        work.notify_all()

        def send_one(r: Recipient, slot: float | None) -> Outcome | _Marker | None:
            # Wait for a slot no later than a send may start: past that the recipient is left for the next
            # invocation (requeued), as when the rate limiter has no slot in time.
            wait_s = None if latest_start is None else max(0.0, latest_start - time.time())
            if not unlogged_slots.acquire(timeout=wait_s):
                return None
            outcome = try_send(r, slot)
            if outcome is None or outcome is LATE:
                unlogged_slots.release()  # nothing was sent: nothing to log
            return outcome

        def try_send(r: Recipient, slot: float | None) -> Outcome | _Marker | None:
            if state.halted or state.stopped:
                return None
            if watch is not None and watch.left(r.id):  # after the wait for a send slot: STOP holds at once
                return Outcome(r, LogStatus.SKIPPED, attempts.get(r.id, 0), reason="unsubscribed")
            if slot is not None and late_seconds is not None and time.time() - slot > late_seconds:
                return LATE  # leaving this late, beside on-time sends, could crowd a second: another slot
            attempt = attempts.get(r.id, 0) + 1
            attempts[r.id] = attempt
            try:
                with breakdown.timed(job):  # WhatsAppSendLatency, per queue and message type
                    wamid = self._deliver(job, r, r.id in window_open)
            except AuthError as exc:
                state.halted = True
                metrics.add_metric(name="WhatsAppAuthError", unit=MetricUnit.Count, value=1)
                logger.error("WhatsApp token rejected: sending halted", extra={"code": exc.code})
                return Outcome(r, LogStatus.QUEUED, attempt - 1, reason=exc.reason, error_code=exc.code)
            except WhatsAppError as exc:
                return self._failure(r, attempt, exc)
            return Outcome(r, LogStatus.SENT, attempt, provider_msg_id=wamid)

        # Outcomes are logged as they complete (a crash re-sends at most the sends not yet logged); a write
        # that fails stops the chunk like any other error.
        writer = OutcomeWriter(
            self._log_pool,
            lambda o: record_one(
                job, o, self.settings
            ),  # on the log pool: it must not wait for the pool itself
            written=unlogged_slots.release,
            failed=lambda exc: results.put((None, exc)),
        )

        def schedule_retry(r: Recipient, backoff: float) -> None:
            """Due ``backoff`` seconds from now; a send that timed out may have reached Meta, so its status
            (echoing our log key) has the backoff to arrive and is looked for first (``_already_out``)."""
            heapq.heappush(retries, (self._clock() + backoff, next(order), r))
            if watch is not None:
                watch.expect([r.id])

        self.limiter.expect(len(recipients))
        workers = [self._pool.submit(worker) for _ in range(concurrency)]
        exited = 0
        try:
            while exited < concurrency:
                try:
                    r, outcome = results.get(timeout=WAIT_TICK_SECONDS)
                except queue.Empty:
                    r, outcome = None, None
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is WORKER_EXIT:
                    exited += 1
                if r is not None:
                    with work:
                        if outcome is None:
                            state.not_started.append(r)
                        elif outcome is LATE:
                            self.limiter.missed()
                            first.appendleft(r)  # first in line for the next slot; not an attempt
                        elif outcome is ALREADY_OUT:
                            logger.info("timed-out send that reached Meta", extra={"recipients": 1})
                        else:
                            state.outcomes.append(outcome)
                            writer.add(outcome)
                            if outcome.status is LogStatus.QUEUED and not state.halted:
                                state.retried += 1
                                backoff = backoff_seconds(outcome.attempts)
                                if outcome.ambiguous:  # its status has this long to show it went out
                                    backoff = max(backoff, AMBIGUOUS_WAIT_SECONDS)
                                if deadline.allows(backoff + self.settings.wa_timeout_seconds):
                                    schedule_retry(r, backoff)
                                else:
                                    state.later.append((r, backoff))
                        outstanding -= 1
                        work.notify_all()
        except BaseException:
            # The message goes back to SQS: start nothing more (each further send would be made again on the
            # redelivery, unlogged), and let the sends in flight end before the invocation does.
            with work:
                state.stopped = True
                work.notify_all()
            unlogged_slots.release(concurrency)  # wakes the sends waiting for a slot: they stop
            wait(workers)
            writer.wait(raise_error=False)  # what was sent is logged as far as the log takes it
            raise
        finally:
            self.limiter.release()
        now = self._clock()
        if state.halted:  # not sent: the whole message comes back (SendingHalted)
            state.not_started += [*first, *(r for _, _, r in sorted(retries))]
        else:  # out of send slots: the rest goes to a new message, retries after the rest of their backoff
            state.not_started += list(first)
            state.later += [(r, max(0.0, due - now)) for due, _, r in sorted(retries)]
        writer.wait()
        return state

    def _deliver(self, job: Job, r: Recipient, window_open: bool) -> str:
        to = Address(phone=r.phone, user_id=r.user_id)
        key = log_key(job.job_id, r.id)  # comes back in the statuses: they update the entry by key
        if isinstance(job, ProofJob) and window_open:
            return self.whatsapp.send_image(
                to, link=job.image_url, media_id=job.media_id, caption=job.caption, callback_data=key
            )
        if isinstance(job, AutoReplyJob):  # inside the window by definition
            return self.whatsapp.send_text(to, job.message, callback_data=key)
        if isinstance(job, ProductUpdateJob) and (window_open or job.template_ref is None):
            return self.whatsapp.send_text(to, job.message, callback_data=key)
        if job.template_ref is None:
            raise WindowClosed("no template for a closed window", code=131047)
        ref = job.template_ref
        return self.whatsapp.send_template(
            to,
            ref.name,
            ref.language,
            ref.parameters,
            header_image_url=ref.header_image_url,
            header_image_id=ref.header_image_id,
            callback_data=key,
        )

    def _failure(self, r: Recipient, attempt: int, exc: WhatsAppError) -> Outcome:
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
        if isinstance(exc, MarketingOptOut):
            mark_marketing_opt_out(r)
        reason = "window_closed" if isinstance(exc, WindowClosed) else exc.reason
        return Outcome(r, LogStatus.FAILED, attempt, reason=reason, error_code=exc.code)

    def _requeue(self, job: Job, recipients: list[Recipient], delay: int) -> None:
        suffix = f"r{int(time.time() * 1000)}"
        self.queues.send(job.chunk(recipients), dedup_suffix=suffix, delay_seconds=min(max(delay, 0), 900))
        logger.info(
            "recipients re-queued",
            extra={"job_id": job.job_id, "recipients": len(recipients), "delay_seconds": delay},
        )

    def _write_log(self, job: Job, outcomes: Iterable[Outcome]) -> None:
        record(job, outcomes, self.settings, self._log_pool)

    @staticmethod
    def _count(job: Job, result: ChunkResult) -> None:
        for status, name in (
            (LogStatus.SENT, "NotificationSent"),
            (LogStatus.FAILED, "NotificationFailed"),
            (LogStatus.SKIPPED, "NotificationSkipped"),
        ):
            value = result.count(status)
            if value:
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)  # alarms: service only
                breakdown.count(job, name, value)  # + per queue and message type

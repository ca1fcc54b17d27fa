"""One chunk's sending in one invocation (``ChunkSend``): who is still to get it, who is skipped, the sends
under the rate limit with bounded concurrency, the retries, and one outcome per recipient in the log.

Retries: a recipient that fails transiently (429, 5xx, timeout, pair limit) is retried up to
``MAX_ATTEMPTS`` times with exponential backoff from 2 s, counted from its own failure (its retry goes ahead
of the chunk's first sends still waiting) — inside the invocation while time allows, else by re-queueing a job
that carries only the pending recipients. Recipients already in a final state (read from the log at the
start) are never sent again when SQS redelivers a message.

``Sender`` (``outbound.delivery``) holds what lives as long as the container (settings, queues, the WhatsApp
client, the limiter, the clock, the pools) and starts one ``ChunkSend`` per chunk; everything that belongs
to one chunk (its job, recipients, attempts, deadline, and the state of its send workers) is here.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jastipin.data import notifications_log
from jastipin.data.models import FINAL_STATUSES, LogStatus, log_key
from jastipin.operations.observability import breakdown
from jastipin.outbound.jobs import AutoReplyJob, Job, ProductUpdateJob, ProofJob, Recipient
from jastipin.outbound.outcomes import ChunkResult, Outcome, OutcomeWriter, record, record_one
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
)

if TYPE_CHECKING:
    from jastipin.outbound.delivery import Deadline, Sender

logger = Logger(child=True)
metrics = Metrics()

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
WORKER_EXIT = _Marker()  # a send worker has stopped


def backoff_seconds(attempts: int) -> float:
    """After the n-th failed attempt wait 2, 4, 8... seconds."""
    return float(BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))


class ChunkSend:
    """The sending of one chunk job in one invocation; ``run`` once.

    ``send_concurrency`` workers (on the sender's pool) each claim a piece of work, wait for their own send
    slot, and only then take what to send with it: a retry that is due by then goes first. Outcomes come back
    to the thread that called ``run``, which logs them and schedules the retries. The scheduling state below
    is guarded by ``_work``."""

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
        # The send workers' scheduling.
        self._work = threading.Condition()
        self._first: deque[Recipient] = deque()  # first sends, in order
        self._retries: list[tuple[float, int, Recipient]] = []  # (due on sender.clock, order, recipient)
        self._order = itertools.count()
        self._claimed = 0  # workers waiting for a send slot, each for one piece of work
        self._busy = 0  # workers between their claim and handing the outcome over
        self._outstanding = 0  # sends handed over whose outcome the loop has not taken in yet
        self._sleeping = False  # a worker is waiting out a retry's backoff
        self._results: queue.SimpleQueue[tuple[Recipient | None, Any]] = queue.SimpleQueue()
        concurrency = sender.settings.send_concurrency
        # No more than UNLOGGED_LIMIT + send_concurrency sends are ever unlogged (made or in flight): a send
        # takes a slot, the log write of its outcome frees it.
        self._unlogged_slots = threading.Semaphore(UNLOGGED_LIMIT + concurrency)
        self._latest_start: float | None = None  # epoch time after which no send may start (None: no limit)
        self._take_slot = getattr(sender.limiter, "acquire_slot", None)
        self._late_seconds = getattr(sender.limiter, "late_seconds", None)

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
        if pending:
            sender.whatsapp.prepare()  # the token, read before any send slot is taken
        self._send_all(pending)
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
        sender = self.sender
        concurrency = sender.settings.send_concurrency
        self._latest_start = self.deadline.latest_start(sender.settings.wa_timeout_seconds)
        self._first.extend(recipients)
        # Outcomes are logged as they complete (a crash re-sends at most the sends not yet logged); a write
        # that fails stops the chunk like any other error. The write runs on the log pool: it must not wait
        # for the pool itself.
        writer = OutcomeWriter(
            sender.log_pool,
            lambda o: record_one(self.job, o, sender.settings),
            written=self._unlogged_slots.release,
            failed=lambda exc: self._results.put((None, exc)),
        )
        sender.limiter.expect(len(recipients))
        workers = [sender.send_pool.submit(self._worker) for _ in range(concurrency)]
        exited = 0
        try:
            while exited < concurrency:
                try:
                    r, outcome = self._results.get(timeout=WAIT_TICK_SECONDS)
                except queue.Empty:
                    r, outcome = None, None
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is WORKER_EXIT:
                    exited += 1
                if r is not None:
                    with self._work:
                        self._take_in(r, outcome, writer)
                        self._outstanding -= 1
                        self._work.notify_all()
        except BaseException:
            # The message goes back to SQS: start nothing more (each further send would be made again on the
            # redelivery, unlogged), and let the sends in flight end before the invocation does.
            with self._work:
                self.stopped = True
                self._work.notify_all()
            self._unlogged_slots.release(concurrency)  # wakes the sends waiting for a slot: they stop
            wait(workers)
            writer.wait(raise_error=False)  # what was sent is logged as far as the log takes it
            raise
        finally:
            sender.limiter.release()
        now = sender.clock()
        if self.halted:  # not sent: the whole message comes back (SendingHalted)
            self.not_started += [*self._first, *(r for _, _, r in sorted(self._retries))]
        else:  # out of send slots: the rest goes to a new message, retries after the rest of their backoff
            self.not_started += list(self._first)
            self.later += [(r, max(0.0, due - now)) for due, _, r in sorted(self._retries)]
        writer.wait()

    def _take_in(self, r: Recipient, outcome: Outcome | _Marker | None, writer: OutcomeWriter) -> None:
        """What a worker handed over for ``r`` (with ``_work`` held): logged, retried, or put back."""
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

    # -- the send workers --------------------------------------------------------------------------------
    def _available(self, now: float) -> int:
        return len(self._first) + sum(1 for when, _, _ in self._retries if when <= now) - self._claimed

    def _take(self, now: float) -> tuple[Recipient | None, bool]:
        if self._retries and self._retries[0][0] <= now:
            return heapq.heappop(self._retries)[2], True
        return (self._first.popleft() if self._first else None), False

    def _worker(self) -> None:
        try:
            self._work_on()
        finally:
            self._results.put((None, WORKER_EXIT))  # after every outcome this worker handed over

    def _work_on(self) -> None:
        while self._claim():
            try:
                slot: float | None = None
                if self._take_slot is not None:
                    slot = self._take_slot(self._latest_start)
                    got = slot is not None
                else:
                    got = self.sender.limiter.acquire(self._latest_start)
                with self._work:
                    self._claimed -= 1
                    if not got:  # no send slot before the invocation must stop
                        self.out_of_slots = True
                        return
                    r, is_retry = self._take(self.sender.clock())
                    if r is None:  # taken by another worker meanwhile: this slot goes unused
                        continue
                    self._outstanding += 1
                if is_retry and self._already_out([r]):
                    # A send that timed out but reached Meta: its status came in the backoff.
                    self._results.put((r, ALREADY_OUT))
                    continue
                self._results.put((r, self._send_one(r, slot)))
            except BaseException as exc:  # handed to the loop in _send_all, which stops everything
                self._results.put((None, exc))
                return
            finally:
                with self._work:
                    self._busy -= 1
                    self._work.notify_all()

    def _claim(self) -> bool:
        """Wait until there is a piece of work to claim (True) or nothing more to do (False)."""
        work = self._work
        with work:
            while True:
                if self.halted or self.stopped or self.out_of_slots:
                    return False
                now = self.sender.clock()
                if self._sleeping:  # another worker waits out a backoff: nothing else is to be done
                    work.wait(WAIT_TICK_SECONDS)
                    continue
                if self._available(now) > 0:
                    self._claimed += 1
                    self._busy += 1
                    return True
                idle = self._busy == 0 and self._outstanding == 0  # nothing in flight can bring work
                if idle and not self._first and not self._retries:
                    work.notify_all()
                    return False  # nothing left
                if idle and self._retries and not self._sleeping:
                    # Only a retry's backoff is left to wait out: one worker sleeps it (the Sender's sleep: a
                    # test's clock moves by it), the others wait to be woken.
                    self._sleeping = True
                    work.release()
                    try:
                        self.sender.sleep(max(0.0, self._retries[0][0] - now))
                    finally:
                        work.acquire()
                        self._sleeping = False
                        work.notify_all()
                    continue
                timeout = WAIT_TICK_SECONDS
                if self._retries:
                    timeout = min(timeout, max(0.0, self._retries[0][0] - now))
                work.wait(timeout)

    def _send_one(self, r: Recipient, slot: float | None) -> Outcome | _Marker | None:
        # Wait for a slot no later than a send may start: past that the recipient is left for the next
        # invocation (requeued), as when the rate limiter has no slot in time.
        latest_start = self._latest_start
        wait_s = None if latest_start is None else max(0.0, latest_start - self.deadline.now())
        if not self._unlogged_slots.acquire(timeout=wait_s):
            return None
        outcome = self._try_send(r, slot)
        if outcome is None or outcome is LATE:
            self._unlogged_slots.release()  # nothing was sent: nothing to log
        return outcome

    def _try_send(self, r: Recipient, slot: float | None) -> Outcome | _Marker | None:
        if self.halted or self.stopped:
            return None
        if self.watch is not None and self.watch.left(r.id):  # after the wait for a send slot: STOP holds
            return Outcome(r, LogStatus.SKIPPED, self.attempts.get(r.id, 0), reason="unsubscribed")
        late_seconds = self._late_seconds
        if slot is not None and late_seconds is not None and self.deadline.now() - slot > late_seconds:
            return LATE  # leaving this late, beside on-time sends, could crowd a second: another slot
        attempt = self.attempts.get(r.id, 0) + 1
        self.attempts[r.id] = attempt
        try:
            with breakdown.timed(self.job):  # WhatsAppSendLatency, per queue and message type
                wamid = self._deliver(r, r.id in self.window_open)
        except AuthError as exc:
            self.halted = True
            metrics.add_metric(name="WhatsAppAuthError", unit=MetricUnit.Count, value=1)
            logger.error("WhatsApp token rejected: sending halted", extra={"code": exc.code})
            return Outcome(r, LogStatus.QUEUED, attempt - 1, reason=exc.reason, error_code=exc.code)
        except WhatsAppError as exc:
            return self._failure(r, attempt, exc)
        return Outcome(r, LogStatus.SENT, attempt, provider_msg_id=wamid)

    def _deliver(self, r: Recipient, window_open: bool) -> str:
        job, whatsapp = self.job, self.sender.whatsapp
        to = Address(phone=r.phone, user_id=r.user_id)
        key = log_key(job.job_id, r.id)  # comes back in the statuses: they update the entry by key
        if isinstance(job, ProofJob) and window_open:
            return whatsapp.send_image(
                to, link=job.image_url, media_id=job.media_id, caption=job.caption, callback_data=key
            )
        if isinstance(job, AutoReplyJob):  # inside the window by definition
            return whatsapp.send_text(to, job.message, callback_data=key)
        if isinstance(job, ProductUpdateJob) and (window_open or job.template_ref is None):
            return whatsapp.send_text(to, job.message, callback_data=key)
        if job.template_ref is None:
            raise WindowClosed("no template for a closed window", code=131047)
        ref = job.template_ref
        return whatsapp.send_template(
            to,
            ref.name,
            ref.language,
            ref.parameters,
            header_image_url=ref.header_image_url,
            header_image_id=ref.header_image_id,
            callback_data=key,
        )

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
        if isinstance(exc, MarketingOptOut):
            mark_marketing_opt_out(r)
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

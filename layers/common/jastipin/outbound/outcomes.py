"""A chunk's outcomes: one per recipient (sent, failed or skipped, with its reason), written to the
notifications log as they come (``OutcomeWriter``), and what the chunk came to (``ChunkResult``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jastipin.data import notifications_log
from jastipin.data.models import LogStatus, log_expiry
from jastipin.outbound.jobs import Job, Recipient
from jastipin.settings import LogRetention

if TYPE_CHECKING:
    from jastipin.data.async_dynamodb import AsyncDynamoDB


@dataclass
class Outcome:
    recipient: Recipient
    status: LogStatus
    attempts: int
    provider_msg_id: str | None = None
    reason: str | None = None
    error_code: int | None = None
    ambiguous: bool = False  # a failed send that may have reached Meta (no answer came)


def _as_logged(o: Outcome) -> notifications_log.Outcome:
    return notifications_log.Outcome(
        o.recipient.id, o.status, o.attempts, o.provider_msg_id, o.reason, o.error_code
    )


class OutcomeWriter:
    """Writes a chunk's outcomes to the log as they come, side by side on the log pool, so that no send waits
    for a batch of them to fill and then be written (with the log slow, that wait used to outlast the send
    slots reserved meanwhile). One recipient's outcomes are written one after the other, the latest last: a
    retry's outcome never lands before the failure it follows, and an outcome overtaken while its
    recipient's previous write is still running is not written at all (the later one says more).

    ``written(n)`` is called as n outcomes are done with (written or overtaken); ``failed(exc)`` when a write
    fails (the chunk then stops); ``wait()`` returns when every write has ended."""

    def __init__(
        self,
        pool: ThreadPoolExecutor | None,
        write: Callable[[Outcome], None] | None,
        *,
        written: Callable[[int], None],
        failed: Callable[[BaseException], None],
        submit: Callable[[Outcome], Future[None] | asyncio.Task[None]] | None = None,
    ) -> None:
        """``write`` on ``pool``'s threads, or ``submit`` starting each write (``on_loop``); a write under way
        is a pool's Future or a loop's Task, and tells when it ends."""
        if submit is None:
            assert pool is not None and write is not None, "a pool and a write, or a submit"
            submit = lambda outcome: pool.submit(write, outcome)  # noqa: E731
        self._submit = submit
        self._written, self._failed = written, failed
        self._done = threading.Condition()
        self._running: set[str] = set()  # recipients whose write is running
        self._next: dict[str, Outcome] = {}  # recipient → the outcome to write after the running one
        self._errors: list[BaseException] = []

    @classmethod
    def on_loop(
        cls,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[Outcome], Coroutine[Any, Any, None]],
        *,
        written: Callable[[int], None],
        failed: Callable[[BaseException], None],
    ) -> OutcomeWriter:
        """The same, each write a task on ``loop`` (``arecord_one``) instead of a pool's thread. ``add`` is
        then called on the loop's thread, and ``written`` and ``failed`` are called there."""
        tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to its tasks

        def submit(outcome: Outcome) -> asyncio.Task[None]:
            task = loop.create_task(write(outcome))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return task

        return cls(None, None, written=written, failed=failed, submit=submit)

    def add(self, outcome: Outcome) -> None:
        rid = outcome.recipient.id
        with self._done:
            if rid not in self._running:
                self._start(outcome)
                return
            overtaken = self._next.pop(rid, None)
            self._next[rid] = outcome
        if overtaken is not None:
            self._written(1)

    def wait(self, *, raise_error: bool = True) -> None:
        with self._done:
            while self._running:
                self._done.wait()
            if self._errors and raise_error:
                raise self._errors[0]

    def _start(self, outcome: Outcome) -> None:  # with self._done held
        rid = outcome.recipient.id
        self._running.add(rid)
        self._submit(outcome).add_done_callback(lambda f: self._ended(rid, f))

    def _ended(self, rid: str, future: Future[None] | asyncio.Task[None]) -> None:
        error = future.exception()
        done_with = 1
        with self._done:
            following = self._next.pop(rid, None)
            if error is not None:
                self._errors.append(error)
            if following is not None and not self._errors:
                self._start(following)
            else:
                done_with += following is not None  # not written after a failure: the chunk stops
                self._running.discard(rid)
                self._done.notify_all()
        self._written(done_with)
        if error is not None:
            self._failed(error)


@dataclass
class ChunkResult:
    outcomes: list[Outcome] = field(default_factory=list)
    requeued: list[Recipient] = field(default_factory=list)

    def count(self, status: LogStatus | str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def record_one(job: Job, o: Outcome, settings: LogRetention) -> None:
    """Record one outcome, in the calling thread (``OutcomeWriter`` runs it on the log pool)."""
    message_type, expires = job.template or job.kind.value, log_expiry(settings)
    if o.status is LogStatus.SKIPPED:
        notifications_log.record_many(job.job_id, job.trip_id, message_type, [_as_logged(o)], expires)
    else:
        notifications_log.record(job.job_id, job.trip_id, message_type, _as_logged(o), expires)


async def arecord_one(dynamodb: AsyncDynamoDB, job: Job, o: Outcome, settings: LogRetention) -> None:
    """``record_one`` on the sender's event loop: a send's outcome through ``AsyncDynamoDB``; a skip (rare on
    the send path: a STOP seen right before the send) on a thread, as ``record_one`` writes it."""
    if o.status is LogStatus.SKIPPED:
        await asyncio.to_thread(record_one, job, o, settings)
        return
    message_type, expires = job.template or job.kind.value, log_expiry(settings)
    await notifications_log.arecord(dynamodb, job.job_id, job.trip_id, message_type, _as_logged(o), expires)


def record(job: Job, outcomes: Iterable[Outcome], settings: LogRetention, pool: ThreadPoolExecutor) -> None:
    """Record outcomes (``data.notifications_log``): skips in one batch (no status can race them), the rest
    as merges with any status that arrived first, side by side on ``pool``."""
    expires = log_expiry(settings)
    message_type = job.template or job.kind.value
    as_logged = [_as_logged(o) for o in outcomes]
    skips = [o for o in as_logged if o.status is LogStatus.SKIPPED]
    others = [o for o in as_logged if o.status is not LogStatus.SKIPPED]
    if skips:
        notifications_log.record_many(job.job_id, job.trip_id, message_type, skips, expires)
    list(
        pool.map(
            lambda o: notifications_log.record(job.job_id, job.trip_id, message_type, o, expires), others
        )
    )

"""Fan-out: a job without participants becomes chunk jobs of the trip's audience, at any trip size.

The trip's participants are read in participant-id order, 100 at a time (``audience.pages``); full chunks
(``CHUNK_SIZE`` recipients) go to the job's queue ten at a time (one SendMessageBatch), and after each batch
the progress is written to ``FanOutProgress``: the cursor (the last participant dealt with) and the number of
the next chunk. Before each page the invocation's remaining time is checked: when it runs low, what was read
is queued (a last, smaller chunk), and a *continuation* (the same job with the cursor) is queued to go on in
a fresh invocation, instead of timing out halfway and starting again after the visibility timeout.

A fan-out message that comes back (SQS redelivers it after a crash, or an operator redrives it from the DLQ)
resumes from the stored progress, never from the beginning: the progress is the further of the message's
cursor and the stored one. Chunks are numbered from 0 across continuations; the FIFO broadcast queue
deduplicates on ``<job id>-c<number>``. On a standard queue a crash between queueing a batch and writing the
progress can queue that batch (at most ten chunks) again, and so can a second delivery of the same message
racing the first (its progress write then fails and it stops, ``FanOutTakenOver``): the chunks' recipients
are then found in the log and not sent twice, as for any message SQS delivers twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jastipin import audience
from jastipin.data import fanout_progress
from jastipin.data.models import FanOutProgress, log_expiry
from jastipin.outbound.jobs import BroadcastJob, Job, Recipient
from jastipin.outbound.queues import SQS_BATCH, JobQueues
from jastipin.settings import SenderSettings

logger = Logger(child=True)
metrics = Metrics()

# What one more page may cost before the time check comes round again (a Query page, a contacts
# BatchGetItem, a SendMessageBatch and a progress update, with the SDK's retries), on top of the sender's own
# safety margin. A fan-out invocation hands over with at least this much left.
PAGE_RESERVE_SECONDS = 4.0


class FanOutTakenOver(RuntimeError):
    """Another invocation advanced this fan-out meanwhile (SQS delivered its message twice): stop here."""


@dataclass
class FanOutResult:
    recipients: int  # queued by this invocation
    chunks: int
    handed_over: bool  # a continuation was queued
    done: bool


class FanOut:
    def __init__(self, settings: SenderSettings, queues: JobQueues) -> None:
        self.settings = settings
        self.queues = queues

    def run(self, job: Job, time_left: Callable[[], float]) -> FanOutResult:
        """Queue the chunk jobs of ``job`` from where it stands; ``time_left()`` is the invocation's remaining
        time in seconds (the caller's safety margin already taken off)."""
        progress = self._progress(job)
        if progress.done:
            logger.info("fan-out already complete", extra={"chunks": progress.next_chunk})
            return FanOutResult(0, 0, handed_over=False, done=True)
        stored = int(progress.next_chunk)
        cursor: str | None = progress.cursor
        next_chunk = stored
        if job.next_chunk is not None and job.next_chunk > stored:  # the message is ahead (progress expired?)
            cursor, next_chunk = job.cursor, job.next_chunk
        state = _State(cursor, next_chunk, stored)
        size = self.settings.chunk_size
        buffer: list[Recipient] = []
        ready: list[list[Recipient]] = []
        queued = chunks = 0
        audience_filter = job.audience if isinstance(job, BroadcastJob) else None  # besides "active member"
        for last_read, page in audience.pages(job.trip_id, audience_filter, after=state.cursor):
            buffer += page
            while len(buffer) >= size:
                ready.append(buffer[:size])
                buffer = buffer[size:]
            if len(ready) >= SQS_BATCH:
                # Everything up to the last queued recipient is dealt with; the rest of the buffer is not.
                cursor = ready[SQS_BATCH - 1][-1].id
                queued_now = self._queue(job, progress, state, ready[:SQS_BATCH], cursor)
                queued, chunks, ready = queued + queued_now, chunks + SQS_BATCH, ready[SQS_BATCH:]
            if time_left() < PAGE_RESERVE_SECONDS:
                # Hand over: queue all that was read (the buffer as a smaller chunk) and go on elsewhere.
                rest = [*ready, buffer] if buffer else ready
                queued += self._queue(job, progress, state, rest, last_read, hand_over=True)
                chunks += len(rest)
                self._count(queued, chunks, handed_over=True)
                return FanOutResult(queued, chunks, handed_over=True, done=False)
        rest = [*ready, buffer] if buffer else ready
        queued += self._queue(job, progress, state, rest, state.cursor, done=True)
        chunks += len(rest)
        self._count(queued, chunks, handed_over=False)
        logger.info(
            "fan-out queued",
            extra={
                "recipients": int(progress.recipients),
                "chunks": state.next_chunk,
                "this_invocation": queued,
            },
        )
        return FanOutResult(queued, chunks, handed_over=False, done=True)

    # -- progress ----------------------------------------------------------------------------------------
    def _progress(self, job: Job) -> FanOutProgress:
        """The stored progress, created on the first run."""
        return fanout_progress.get_or_create(
            job.job_id, trip_id=job.trip_id, kind=job.kind.value, expires_at=log_expiry(self.settings)
        )

    def _queue(
        self,
        job: Job,
        progress: FanOutProgress,
        state: _State,
        chunks: list[list[Recipient]],
        cursor: str | None,
        *,
        hand_over: bool = False,
        done: bool = False,
    ) -> int:
        """Queue chunk jobs (and the continuation, when handing over), then record the progress."""
        jobs = [job.chunk(recipients) for recipients in chunks]
        suffixes = [f"c{state.next_chunk + i}" for i in range(len(jobs))]
        next_chunk = state.next_chunk + len(jobs)
        if hand_over:
            jobs.append(job.continuation(cursor, next_chunk))
            suffixes.append(f"k{next_chunk}")
        if jobs:
            self.queues.send_many(jobs, dedup_suffixes=suffixes)
        count = sum(len(c) for c in chunks)
        # Only from the state this invocation started from: a second delivery racing it stops.
        if not fanout_progress.advance(
            progress,
            from_chunk=state.stored,
            cursor=cursor,
            next_chunk=next_chunk,
            recipients=count,
            handed_over=hand_over,
            done=done,
        ):
            raise FanOutTakenOver(f"fan-out {job.job_id} advanced elsewhere")
        state.cursor, state.next_chunk, state.stored = cursor, next_chunk, next_chunk
        return count

    @staticmethod
    def _count(recipients: int, chunks: int, *, handed_over: bool) -> None:
        metrics.add_metric(name="FanOutRecipients", unit=MetricUnit.Count, value=recipients)
        if handed_over:
            metrics.add_metric(name="FanOutContinuations", unit=MetricUnit.Count, value=1)
            logger.info("fan-out handed over", extra={"recipients": recipients, "chunks": chunks})


@dataclass
class _State:
    cursor: str | None
    next_chunk: int
    stored: int  # next_chunk as the progress item holds it (the condition of the next write)

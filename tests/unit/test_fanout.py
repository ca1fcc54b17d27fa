"""Fan-out at any trip size: a cursor, a deadline, continuations, and resuming from the stored progress."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jastipin.data.models import FanOutProgress, Participant, ParticipantStatus, Trip
from jastipin.outbound.fanout import PAGE_RESERVE_SECONDS, FanOut, FanOutTakenOver
from jastipin.outbound.jobs import Job, JobKind, ProductUpdateJob, Recipient

TRIP = "jpn25"


class Queue:
    """Records what the fan-out queues, as SQS would hold it (chunk jobs and continuations)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Job, str]] = []

    def send_many(self, jobs, *, dedup_suffixes=None, delay_seconds: int = 0) -> int:
        self.messages += list(zip(jobs, dedup_suffixes, strict=True))
        return 1

    def chunks(self) -> list[tuple[Job, str]]:
        return [(job, suffix) for job, suffix in self.messages if not job.is_fan_out]

    def continuations(self) -> list[Job]:
        return [job for job, _ in self.messages if job.is_fan_out]


def seed(count: int, *, unsubscribed_every: int = 0) -> list[str]:
    """``count`` participants, every n-th of them STOPped; returns the active ids in id order."""
    Trip(TRIP, title="Jastip Jepang", owner_phone="+6281234567890").save()
    active = []
    with Participant.batch_write() as batch:
        for n in range(count):
            pid = f"p_{n:016d}"
            phone = f"+62812{n:07d}"
            stopped = bool(unsubscribed_every) and n % unsubscribed_every == 0
            status = ParticipantStatus.UNSUBSCRIBED if stopped else ParticipantStatus.ACTIVE
            batch.save(Participant(TRIP, pid, wa_key=phone, phone=phone, status=status.value))
            if not stopped:
                active.append(pid)
    return active


def fan_out_job(job_id: str = "job_1") -> ProductUpdateJob:
    return ProductUpdateJob(
        job_id=job_id,
        kind=JobKind.PRODUCT_UPDATE,
        trip_id=TRIP,
        product_id="prd_1",
        participants=None,
        template="product_update",
        message="Ada produk baru",
    )


def clock(pages_allowed: int) -> Callable[[], float]:
    """Time left: plenty for ``pages_allowed`` pages, then below the reserve."""
    calls = [0]

    def time_left() -> float:
        calls[0] += 1
        return 60.0 if calls[0] < pages_allowed else PAGE_RESERVE_SECONDS - 1

    return time_left


def recipients_of(queue: Queue) -> list[str]:
    return [r.id for job, _ in queue.chunks() for r in job.participants or []]


def test_a_trip_larger_than_one_invocation_reaches_everyone_once_through_continuations(settings):
    active = seed(2_450, unsubscribed_every=7)
    fan_out = FanOut(settings.model_copy(update={"chunk_size": 100}), queue := Queue())
    message, runs = fan_out_job(), 0
    while True:  # each message as its own invocation, with time for 6 pages (600 participants) each
        runs += 1
        result = fan_out.run(message, clock(pages_allowed=6))
        if not result.handed_over:
            break
        message = queue.continuations()[-1]
        assert message.cursor and message.next_chunk == int(FanOutProgress.get("job_1").next_chunk)
    assert result.done and runs == -(-len(active) // 600) == 4  # 2,100 active: 600 per invocation
    assert recipients_of(queue) == active  # everyone once, in id order
    numbers = [suffix for _, suffix in queue.chunks()]
    assert numbers == [f"c{i}" for i in range(len(numbers))]  # numbered across continuations, none twice
    assert all(len(job.participants or []) <= 100 for job, _ in queue.chunks())
    progress = FanOutProgress.get("job_1")
    assert (progress.done, progress.recipients, progress.continuations) == (True, len(active), 3)
    assert progress.next_chunk == len(numbers)


def test_a_redelivered_fan_out_resumes_from_the_stored_progress(settings):
    active = seed(1_000)
    fan_out = FanOut(settings.model_copy(update={"chunk_size": 100}), queue := Queue())
    original = fan_out_job()
    first = fan_out.run(original, clock(pages_allowed=3))
    assert first.handed_over and first.recipients == 300
    # SQS delivers the original message again (say its delete was lost): it goes on from the cursor.
    fan_out.run(original, clock(pages_allowed=100))
    # The continuation queued by the first run comes too: there is nothing left for it.
    (continuation,) = queue.continuations()
    again = fan_out.run(continuation, clock(pages_allowed=100))
    assert again.done and again.recipients == 0
    assert recipients_of(queue) == active
    assert len({suffix for _, suffix in queue.chunks()}) == len(queue.chunks()) == 10


def test_a_second_delivery_racing_the_first_stops_after_one_batch(settings):
    seed(1_000)
    fan_out = FanOut(settings.model_copy(update={"chunk_size": 100}), queue := Queue())
    job = fan_out_job()
    raced = [False]

    def time_left() -> float:
        if not raced[0]:  # while this run reads its first page, another delivery does the whole job
            raced[0] = True
            FanOut(settings.model_copy(update={"chunk_size": 100}), other := Queue()).run(job, lambda: 60.0)
            assert len(recipients_of(other)) == 1_000
        return 60.0

    with pytest.raises(FanOutTakenOver):
        fan_out.run(job, time_left)
    # Its first batch went out before its progress write found the job advanced: that batch (chunks c0-c9,
    # whose recipients the log then shows as handled) is the most a racing delivery can repeat.
    assert [suffix for _, suffix in queue.messages] == [f"c{i}" for i in range(10)]
    assert int(FanOutProgress.get("job_1").next_chunk) == 10 and FanOutProgress.get("job_1").done


def test_an_empty_or_finished_fan_out_queues_nothing(settings):
    seed(0)
    fan_out = FanOut(settings, queue := Queue())
    assert fan_out.run(fan_out_job(), lambda: 60.0).done
    assert fan_out.run(fan_out_job(), lambda: 60.0).recipients == 0  # redelivered after it completed
    assert queue.messages == []
    assert FanOutProgress.get("job_1").done


def test_out_of_time_at_once_still_hands_over_what_it_read(settings):
    active = seed(150)
    fan_out = FanOut(settings.model_copy(update={"chunk_size": 100}), queue := Queue())
    result = fan_out.run(fan_out_job(), lambda: 0.0)
    assert result.handed_over and result.recipients == 100  # the first page of 100, as one chunk
    (continuation,) = queue.continuations()
    assert continuation.cursor == active[99] and continuation.next_chunk == 1
    assert fan_out.run(continuation, lambda: 60.0).done
    assert recipients_of(queue) == active


def test_chunk_jobs_carry_no_cursor(settings):
    seed(5)
    FanOut(settings, queue := Queue()).run(fan_out_job(), lambda: 60.0)
    ((chunk, suffix),) = queue.chunks()
    assert suffix == "c0" and chunk.cursor is None and chunk.next_chunk is None
    assert [r.id for r in chunk.participants or []] == [f"p_{n:016d}" for n in range(5)]
    assert isinstance(chunk.participants[0], Recipient)  # type: ignore[index]

"""What the operators' API takes and answers (pydantic models): queue counts, DLQ listings, redrive and
purge requests and results, a trip's recent outcomes."""

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_REDRIVE_IDS = 100


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # built on first use, not at import


class QueueCounts(_View):
    visible: int  # ApproximateNumberOfMessages
    in_flight: int  # ApproximateNumberOfMessagesNotVisible (being processed, or being looked at)
    delayed: int  # ApproximateNumberOfMessagesDelayed
    oldest_age_seconds: float | None = None  # DLQs only (see the module docs)


class QueueStats(_View):
    name: str
    fifo: bool
    queue: QueueCounts
    dlq: QueueCounts


class FanOutView(_View):
    """How far a fan-out job got (``FanOutProgress``): a redrive resumes from there."""

    chunks_queued: int
    recipients_queued: int
    continuations: int  # hand-overs to a fresh invocation
    done: bool
    updated_at: datetime | None = None


class DlqMessage(_View):
    """A DLQ message as operators may see it: what the job is, never whom it is for or what it says."""

    message_id: str
    readable: bool  # False: the body is not a valid job (then only SQS facts are shown)
    job_id: str | None = None
    kind: str | None = None
    trip_id: str | None = None
    message_type: str | None = None
    fan_out: bool = False  # a fan-out job has no recipients yet: it is for the whole trip
    continuation: bool = False  # a fan-out that an earlier invocation handed over (it carries a cursor)
    progress: FanOutView | None = None  # a fan-out's progress so far
    recipients: int | None = None  # how many, never who
    receive_count: int  # SQS ApproximateReceiveCount: the source queue's receives plus every look here
    sent_at: datetime | None = None  # when the job was first queued
    age_seconds: float | None = None
    group_id: str | None = None  # FIFO MessageGroupId (the trip id)


class DlqListing(_View):
    queue: str
    fifo: bool
    messages: list[DlqMessage]
    oldest_age_seconds: float | None
    complete: bool  # False when there may be more than `limit` messages


class RedriveRequest(BaseModel):
    """Either ``{"message_ids": [...]}`` (non-empty) or ``{"all": true}``; anything else is 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"all": True}]})

    message_ids: list[str] = Field(default_factory=list, max_length=MAX_REDRIVE_IDS)
    all: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.all == bool(self.message_ids):
            raise ValueError('give either "message_ids" (a non-empty list) or "all": true')
        return self


class RedriveResult(_View):
    queue: str
    moved: int
    moved_ids: list[str]
    not_found: list[str]  # asked for but not seen in the DLQ (already moved, or hidden by another look)
    remaining: int  # messages still visible in the DLQ afterwards
    done: bool  # False: time ran out with messages left ("all"): call again


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"confirm": "notifications"}]})

    confirm: str = Field(default="", max_length=64, description="the queue's name, repeated")


class PurgeResult(_View):
    queue: str
    target: Literal["queue", "dlq"]
    deleted: int
    remaining: int  # still visible: call again when done is False
    in_flight: int  # being processed now: a purge cannot take these
    done: bool


class OutcomeView(_View):
    """One log entry: the participant's pseudonymous id only (no phone, no text, no wamid: a wamid encodes
    the recipient's number)."""

    job_id: str
    participant_id: str
    message_type: str
    status: str
    reason: str | None = None
    error_code: int | None = None
    attempts: int
    created_at: str
    updated_at: str


class TripOutcomes(_View):
    trip_id: str
    status: str | None
    outcomes: list[OutcomeView]
    truncated: bool  # stopped looking (time or size) before `limit` entries were found


# jastipin.data.models.LogStatus, or empty for any (not imported: the admin function does not load the
# tables' models to read a query); tests/unit/test_openapi.py checks the two agree
OutcomeStatus = Literal["", "queued", "sent", "delivered", "read", "failed", "skipped"]


class QueuesView(_View):
    queues: list[QueueStats]

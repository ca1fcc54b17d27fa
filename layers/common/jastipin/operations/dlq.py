"""Operators' view of the queues (what Bull Board gave the spec at ``/admin/queues``): counts per queue and
DLQ, the DLQ's messages without personal data, redrive one or all of them to their queue, purge with an
explicit confirmation, and the recent notification outcomes of a trip.

Knows nothing of Lambda or HTTP (``functions/admin/app.py`` is the thin handler); the SQS client is passed in.

SQS has no "peek": a DLQ is read by receiving its messages with a short visibility timeout and releasing them
at once (visibility 0). Each look raises the messages' ``ApproximateReceiveCount``, harmless on a DLQ (it has
no redrive policy of its own). The main queues are never read this way: a receive there counts towards their
``maxReceiveCount`` and could push a good message into its DLQ. So their oldest-message age is not in this
API (it is on the CloudWatch dashboard, ``ApproximateAgeOfOldestMessage``); a DLQ's is computed from the
``SentTimestamp`` of the messages seen (SQS keeps a message's original enqueue time when it moves it to the
DLQ, so that is the age since the job was first queued).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from jastipin.errors import JastipinError, NotFound
from jastipin.operations.views import (
    DlqListing,
    DlqMessage,
    FanOutView,
    PurgeRequest,
    PurgeResult,
    QueueCounts,
    QueueStats,
    RedriveRequest,
    RedriveResult,
)
from jastipin.outbound.jobs import QueueName, parse_job
from jastipin.settings import AdminSettings

SQS_BATCH = 10
INBOUND = "inbound"  # participants' WhatsApp messages, queued by the webhook for the inbound function
ADMIN_QUEUES = (*(q.value for q in QueueName), INBOUND)  # the job queues, then the inbound queue
PEEK_VISIBILITY_SECONDS = 20  # how long a looked-at DLQ message stays hidden if the release fails
MOVE_VISIBILITY_SECONDS = 60  # hidden while being redriven or purged (released again if not moved)
MAX_LIST = 100  # DLQ messages listed per request
STOP_BEFORE_SECONDS = 3.0  # leave this much of the invocation for the answer

TimeLeft = Callable[[], float]


def unlimited() -> float:
    return math.inf


class ConfirmationRequired(JastipinError):
    status_code = 422
    code = "confirmation_required"


# ---------------------------------------------------------------------------------------------- pure helpers
def dlq_message_view(message: dict[str, Any], now: float) -> DlqMessage:
    """The PII-free view of one received SQS message (``now``: epoch seconds)."""
    attributes = message.get("Attributes") or {}
    sent_ms = attributes.get("SentTimestamp")
    sent_at = datetime.fromtimestamp(int(sent_ms) / 1000, UTC) if sent_ms else None
    facts: dict[str, Any] = {
        "message_id": message["MessageId"],
        "receive_count": int(attributes.get("ApproximateReceiveCount", 0)),
        "sent_at": sent_at,
        "age_seconds": round(max(0.0, now - int(sent_ms) / 1000), 3) if sent_ms else None,
        "group_id": attributes.get("MessageGroupId"),
    }
    try:
        job = parse_job(message.get("Body") or "")
    except (ValidationError, ValueError):
        return _inbound_view(message.get("Body") or "", facts)
    return DlqMessage(
        readable=True,
        job_id=job.job_id,
        kind=job.kind.value,
        trip_id=job.trip_id,
        message_type=job.template or job.kind.value,
        fan_out=job.is_fan_out,
        continuation=job.is_fan_out and job.next_chunk is not None,
        recipients=None if job.is_fan_out else len(job.participants or []),
        **facts,
    )


def with_progress(messages: list[DlqMessage]) -> list[DlqMessage]:
    """Fan-out messages get their job's progress (one BatchGetItem per 100 jobs)."""
    from jastipin.data import fanout_progress

    found = fanout_progress.many(sorted({m.job_id for m in messages if m.fan_out and m.job_id}))
    views = {
        job_id: FanOutView(
            chunks_queued=int(p.next_chunk),
            recipients_queued=int(p.recipients),
            continuations=int(p.continuations),
            done=bool(p.done),
            updated_at=p.updated_at,
        )
        for job_id, p in found.items()
    }
    return [
        m.model_copy(update={"progress": views[m.job_id]}) if m.fan_out and m.job_id in views else m
        for m in messages
    ]


def _inbound_view(body: str, facts: dict[str, Any]) -> DlqMessage:
    """An inbound-queue message: only its kind and WhatsApp message type (its wamid encodes the sender's
    number; the text is the participant's), or for a delivery status ``status:<delivered|read|failed>``."""
    from jastipin.inbound.queued import QueuedStatus, read_queued

    try:
        work = read_queued(body)
    except ValueError:  # pydantic's ValidationError among them
        return DlqMessage(readable=False, **facts)
    if isinstance(work, QueuedStatus):
        kind = f"status:{work.status.status}"
        return DlqMessage(readable=True, kind=INBOUND, message_type=kind, recipients=1, **facts)
    return DlqMessage(readable=True, kind=INBOUND, message_type=work.message.type, recipients=1, **facts)


def redrive_entry(message: dict[str, Any], index: int, *, fifo: bool) -> dict[str, Any]:
    """A SendMessageBatch entry that puts a DLQ message back on its source queue, as it was.

    FIFO: same MessageGroupId (the trip: order within the trip is kept) and a fresh MessageDeduplicationId
    (a message that fails again keeps its id in the DLQ; reusing an id would let SQS drop the next redrive
    as a duplicate within 5 minutes). A crash between this send and the DLQ delete can queue the job twice:
    harmless, the sender skips recipients already in a final state."""
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        entry["MessageGroupId"] = (message.get("Attributes") or {}).get("MessageGroupId") or "redrive"
        entry["MessageDeduplicationId"] = f"redrive-{uuid.uuid4().hex}"
    return entry


# ---------------------------------------------------------------------------------------------- queues
@dataclass(frozen=True)
class QueuePair:
    name: str
    url: str
    dlq_url: str

    @property
    def fifo(self) -> bool:
        return self.url.endswith(".fifo")


class QueueAdmin:
    def __init__(
        self, sqs_client: Any, settings: AdminSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._sqs = sqs_client
        self._clock = clock
        pairs = {
            QueueName.NOTIFICATIONS.value: (settings.notifications_queue_url, settings.notifications_dlq_url),
            QueueName.BROADCAST.value: (settings.broadcast_queue_url, settings.broadcast_dlq_url),
            QueueName.PROOF_NOTIFY.value: (settings.proof_notify_queue_url, settings.proof_notify_dlq_url),
            INBOUND: (settings.inbound_queue_url, settings.inbound_dlq_url),
        }
        for name, (_, dlq_url) in pairs.items():
            if not dlq_url:
                raise RuntimeError(f"{name.upper()}_DLQ_URL is not configured")
        self.pairs = {name: QueuePair(name, url, dlq) for name, (url, dlq) in pairs.items()}

    def pair(self, name: str) -> QueuePair:
        found = self.pairs.get(name)
        if found is None:
            raise NotFound(f"no queue '{name[:64]}' (known: {', '.join(ADMIN_QUEUES)})", field="queue")
        return found

    # -- counts ----------------------------------------------------------------------------------------
    def counts(self, url: str) -> QueueCounts:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def stats(self) -> list[QueueStats]:
        found = []
        for pair in self.pairs.values():
            dlq = self.counts(pair.dlq_url)
            if dlq.visible:  # the age needs a look at the messages (see the module docs)
                oldest = self.list_dlq(pair.name, MAX_LIST).oldest_age_seconds
                dlq = dlq.model_copy(update={"oldest_age_seconds": oldest})
            found.append(QueueStats(name=pair.name, fifo=pair.fifo, queue=self.counts(pair.url), dlq=dlq))
        return found

    # -- DLQ ---------------------------------------------------------------------------------------------
    def list_dlq(self, name: str, limit: int = 50) -> DlqListing:
        pair = self.pair(name)
        limit = max(1, min(limit, MAX_LIST))
        expected = self.counts(pair.dlq_url).visible  # stop there: saves a last, empty, 1 s long poll
        seen: dict[str, dict[str, Any]] = {}
        handles: list[str] = []
        more = False
        try:
            while expected > len(seen):
                batch = self._receive(
                    pair.dlq_url, min(SQS_BATCH, limit - len(seen)), PEEK_VISIBILITY_SECONDS
                )
                handles += [m["ReceiptHandle"] for m in batch]
                fresh = [m for m in batch if m["MessageId"] not in seen]
                for message in fresh:
                    seen[message["MessageId"]] = message
                if not fresh:
                    break
                if len(seen) >= limit:
                    more = expected > limit
                    break
        finally:
            self._release(pair.dlq_url, handles)
        now = self._clock()
        messages = with_progress(
            sorted(
                (dlq_message_view(m, now) for m in seen.values()),
                key=lambda m: (m.sent_at is None, m.sent_at or datetime.min.replace(tzinfo=UTC)),
            )
        )
        ages = [m.age_seconds for m in messages if m.age_seconds is not None]
        return DlqListing(
            queue=pair.name,
            fifo=pair.fifo,
            messages=messages,
            oldest_age_seconds=max(ages) if ages else None,
            complete=not more,
        )

    def redrive(self, name: str, request: RedriveRequest, time_left: TimeLeft = unlimited) -> RedriveResult:
        """Move DLQ messages (the listed ids, or all) back to the queue they failed on, in DLQ order."""
        pair = self.pair(name)
        wanted = set(request.message_ids)
        # "all" stops after what was there at the start (plus a margin for approximate counts), so messages
        # that fail again while this runs are not moved round in circles.
        cap = self.counts(pair.dlq_url).visible + SQS_BATCH if request.all else math.inf
        moved: list[str] = []
        held: list[str] = []  # received but not moved: released at the end
        seen: set[str] = set()
        exhausted = False
        try:
            while time_left() > STOP_BEFORE_SECONDS and len(moved) < cap:
                batch = self._receive(pair.dlq_url, SQS_BATCH, MOVE_VISIBILITY_SECONDS)
                if not batch or all(m["MessageId"] in seen for m in batch):
                    held += [m["ReceiptHandle"] for m in batch]
                    exhausted = True
                    break
                seen.update(m["MessageId"] for m in batch)
                chosen = [m for m in batch if request.all or m["MessageId"] in wanted]
                held += [m["ReceiptHandle"] for m in batch if m not in chosen]
                if chosen:
                    done_ids, failed = self._move(pair, chosen)
                    moved += done_ids
                    held += [m["ReceiptHandle"] for m in failed]
                if not request.all and wanted <= set(moved):
                    break
        finally:
            self._release(pair.dlq_url, held)
        remaining = self.counts(pair.dlq_url).visible
        not_found = sorted(wanted - set(moved))
        done = (exhausted or remaining == 0) if request.all else not not_found
        return RedriveResult(
            queue=pair.name,
            moved=len(moved),
            moved_ids=moved,
            not_found=not_found,
            remaining=remaining,
            done=done,
        )

    def _move(
        self, pair: QueuePair, messages: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Send to the source queue, then delete from the DLQ what was sent: (moved ids, not moved)."""
        entries = [redrive_entry(m, i, fifo=pair.fifo) for i, m in enumerate(messages)]
        response = self._sqs.send_message_batch(QueueUrl=pair.url, Entries=entries)
        sent = {int(s["Id"]) for s in response.get("Successful", [])}
        ok = [m for i, m in enumerate(messages) if i in sent]
        self._delete(pair.dlq_url, ok)
        return [m["MessageId"] for m in ok], [m for i, m in enumerate(messages) if i not in sent]

    # -- purge -------------------------------------------------------------------------------------------
    def purge(
        self,
        name: str,
        target: Literal["queue", "dlq"],
        request: PurgeRequest,
        time_left: TimeLeft = unlimited,
    ) -> PurgeResult:
        """Delete every visible message of the queue or its DLQ. ``request.confirm`` must repeat the queue's
        name. Receive-and-delete rather than SQS PurgeQueue: it reports what it deleted, has no once-a-minute
        limit, and needs no permission beyond the poller policy; messages in flight are not taken."""
        pair = self.pair(name)
        if request.confirm != pair.name:
            what = "its DLQ" if target == "dlq" else "the queue"
            raise ConfirmationRequired(f'to purge {what}, send {{"confirm": "{pair.name}"}}', field="confirm")
        url = pair.dlq_url if target == "dlq" else pair.url
        deleted = 0
        exhausted = False
        while time_left() > STOP_BEFORE_SECONDS:
            batch = self._receive(url, SQS_BATCH, MOVE_VISIBILITY_SECONDS)
            if not batch:
                exhausted = True
                break
            self._delete(url, batch)
            deleted += len(batch)
        after = self.counts(url)
        return PurgeResult(
            queue=pair.name,
            target=target,
            deleted=deleted,
            remaining=after.visible,
            in_flight=after.in_flight,
            done=exhausted or after.visible == 0,
        )

    # -- SQS calls ---------------------------------------------------------------------------------------
    def _receive(self, url: str, count: int, visibility: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(count, SQS_BATCH)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=1,  # long polling asks every SQS server: a short poll can miss messages
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return messages

    def _release(self, url: str, handles: list[str]) -> None:
        for start in range(0, len(handles), SQS_BATCH):
            self._sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(handles[start : start + SQS_BATCH])
                ],
            )

    def _delete(self, url: str, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages[start : start + SQS_BATCH])
                ],
            )

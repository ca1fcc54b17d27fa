"""The notifications log: one entry per (job, recipient), the one module that knows its keys, conditions
and update expressions. The sender records outcomes here, the inbound function applies Meta's statuses
(queued by the webhook) here, the ledger and the admin API read here.

Any order, any timing. Meta often posts a message's statuses before the sender has stored the send's outcome
(sometimes before the send's HTTP response has been read). Both writers therefore *merge* into the entry,
whichever comes first, and nothing moves backwards:

- A status (``apply_status``) creates the entry if it is not there yet (a *stub*: status, wamid, pricing,
  error, expiry; no trip, type or attempts) or moves it forward: ``queued < sent < delivered < read``, read
  implying delivered; ``failed`` is final and keeps Meta's error. A duplicate or an older status changes
  nothing. A status of a queued entry without a wamid (the send timed out, yet Meta took it) gives it the
  wamid, so the sender does not send again.
- An outcome (``record``) sets the entry's job fields, and its status only if the entry has none yet or is
  still ``queued``: a status that arrived first is kept. A stub the sender never completes (a status for a
  message that is not ours) expires with the log's TTL; it is counted when made (metric
  ``StatusBeforeOutcome``), and a status that names no entry and whose wamid is unknown is counted too
  (``StatusForUnknownMessage``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError
from pynamodb.expressions.update import Action

from jastipin.data._conditions import CONDITION_FAILED
from jastipin.data.models import (
    FINAL_STATUSES,
    STATUS_RANK,
    LogStatus,
    NotificationLog,
    log_key,
    parse_log_key,
    utcnow,
)

if TYPE_CHECKING:  # aiohttp is the sender's alone: the other functions do not import it
    from jastipin.data.async_dynamodb import AsyncDynamoDB

logger = Logger(child=True)

__all__ = [
    "Outcome",
    "StatusChange",
    "apply_status",
    "arecord",
    "log_key",
    "parse_log_key",
    "previous",
    "record",
    "record_many",
    "trip_log",
]


@dataclass(frozen=True)
class Outcome:
    """What the sender decided or saw for one recipient of a job."""

    participant_id: str
    status: LogStatus
    attempts: int
    provider_msg_id: str | None = None
    reason: str | None = None
    error_code: int | None = None


@dataclass(frozen=True)
class StatusChange:
    """One of Meta's statuses, as the webhook read it."""

    wamid: str
    status: LogStatus
    key: tuple[str, str] | None  # (job id, participant id) from biz_opaque_callback_data
    error_code: int | None = None
    pricing_category: str | None = None
    pricing_type: str | None = None
    billable: bool | None = None


@dataclass(frozen=True)
class Previous:
    status: LogStatus
    attempts: int
    provider_msg_id: str | None
    complete: bool  # False: a stub a status made; the sender has not recorded its outcome yet


def _lower_than(status: LogStatus) -> list[str]:
    if status is LogStatus.FAILED:
        return [LogStatus.QUEUED.value, LogStatus.SENT.value, LogStatus.DELIVERED.value]
    return [s.value for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]


# -- the sender ----------------------------------------------------------------------------------------------


def previous(job_id: str, participant_ids: Iterable[str]) -> dict[str, Previous]:
    """What the log already holds for these recipients of the job (one BatchGetItem per 100)."""
    keys = [(job_id, pid) for pid in participant_ids]
    found: dict[str, Previous] = {}
    for entry in NotificationLog.batch_get(
        keys, attributes_to_get=["participant_id", "status", "attempts", "provider_msg_id", "trip_id"]
    ):
        if entry.status is None:  # caught mid-write (an in-process moto is not atomic; DynamoDB is)
            continue
        found[entry.participant_id] = Previous(
            status=LogStatus(entry.status),
            attempts=int(entry.attempts or 0),
            provider_msg_id=entry.provider_msg_id,
            complete=entry.trip_id is not None,
        )
    return found


# The outcome's update, written with the low-level client: one per sent recipient, on the sender's hot path,
# where building PynamoDB's expression objects cost more than the call itself. ``#x`` names the attributes
# (``status`` is a DynamoDB reserved word).
_OUTCOME_NAMES = {
    f"#{name}": name
    for name in (
        "trip_id",
        "message_type",
        "attempts",
        "created_at",
        "updated_at",
        "expires_at",
        "reason",
        "error_code",
        "status",
        "provider_msg_id",
    )
}
_NOT_YET_FINAL = "attribute_not_exists(#status) OR #status = :queued"


def record(job_id: str, trip_id: str, message_type: str, outcome: Outcome, expires_at: datetime) -> LogStatus:
    """Record one outcome, merging with a status that may have arrived first; returns the entry's status."""
    client: Any = NotificationLog._get_connection().connection.client  # botocore's, untyped
    first, merge = _outcome_updates(job_id, trip_id, message_type, outcome, expires_at)
    try:
        client.update_item(**first)
        return outcome.status
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != CONDITION_FAILED:
            raise
    return LogStatus(client.update_item(**merge)["Attributes"]["status"]["S"])


async def arecord(
    dynamodb: AsyncDynamoDB,
    job_id: str,
    trip_id: str,
    message_type: str,
    outcome: Outcome,
    expires_at: datetime,
) -> LogStatus:
    """``record`` on the sender's event loop (``AsyncDynamoDB``): the same two updates."""
    first, merge = _outcome_updates(job_id, trip_id, message_type, outcome, expires_at)
    try:
        await dynamodb.call("UpdateItem", first)
        return outcome.status
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != CONDITION_FAILED:
            raise
    return LogStatus((await dynamodb.call("UpdateItem", merge))["Attributes"]["status"]["S"])


def _outcome_updates(
    job_id: str, trip_id: str, message_type: str, outcome: Outcome, expires_at: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An outcome's two UpdateItem requests (the low-level API's parameters): the first sets the status when
    the entry has none yet or is still queued; when its condition fails (a status arrived first, or this
    outcome was recorded before), the second keeps the entry's status and adds the job's fields."""
    now = utcnow().isoformat()
    table = NotificationLog.Meta.table_name
    key = {"job_id": {"S": job_id}, "participant_id": {"S": outcome.participant_id}}
    values: dict[str, dict[str, str]] = {
        ":trip_id": {"S": trip_id},
        ":message_type": {"S": message_type},
        ":attempts": {"N": str(outcome.attempts)},
        ":now": {"S": now},
        ":expires_at": {"N": str(int(expires_at.timestamp()))},
    }
    sets = [
        "#trip_id = :trip_id",
        "#message_type = :message_type",
        "#attempts = :attempts",
        "#created_at = if_not_exists(#created_at, :now)",
        "#updated_at = :now",
        "#expires_at = :expires_at",
    ]
    removes: list[str] = []
    if outcome.reason is not None:
        sets.append("#reason = :reason")
        values[":reason"] = {"S": outcome.reason}
    else:  # a send that went through after a failed attempt: the failure is history
        removes.append("#reason")
    if outcome.error_code is not None:
        sets.append("#error_code = :error_code")
        values[":error_code"] = {"N": str(outcome.error_code)}
    else:
        removes.append("#error_code")
    with_status = [*sets, "#status = :status"]
    if outcome.provider_msg_id:
        values[":wamid"] = {"S": outcome.provider_msg_id}
        with_status.append("#provider_msg_id = :wamid")
    expression = "SET " + ", ".join(with_status) + (" REMOVE " + ", ".join(removes) if removes else "")
    first = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": expression,
        "ConditionExpression": _NOT_YET_FINAL,
        "ExpressionAttributeNames": _names(expression + _NOT_YET_FINAL),
        "ExpressionAttributeValues": {
            **values,
            ":status": {"S": outcome.status.value},
            ":queued": {"S": LogStatus.QUEUED.value},
        },
    }
    # The merge: reason and error code set when given, else left as the status made them.
    if outcome.provider_msg_id:
        sets.append("#provider_msg_id = if_not_exists(#provider_msg_id, :wamid)")
    expression = "SET " + ", ".join(sets)
    merge = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": expression,
        "ExpressionAttributeNames": _names(expression),
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
    }
    return first, merge


def _names(expression: str) -> dict[str, str]:
    """The ``#name`` placeholders an expression uses (DynamoDB refuses unused ones)."""
    return {k: v for k, v in _OUTCOME_NAMES.items() if k in expression}


def record_many(
    job_id: str, trip_id: str, message_type: str, outcomes: Iterable[Outcome], expires_at: datetime
) -> None:
    """Outcomes no status can race (skips: nothing was sent), 25 per BatchWriteItem."""
    now = utcnow().isoformat()
    with NotificationLog.batch_write() as batch:
        for o in outcomes:
            batch.save(
                NotificationLog(
                    job_id,
                    o.participant_id,
                    trip_id=trip_id,
                    message_type=message_type,
                    status=o.status.value,
                    provider_msg_id=o.provider_msg_id,
                    attempts=o.attempts,
                    reason=o.reason,
                    error_code=o.error_code,
                    created_at=now,
                    updated_at=now,
                    expires_at=expires_at,
                )
            )


# -- the webhook ---------------------------------------------------------------------------------------------


def apply_status(change: StatusChange, expires_at: datetime) -> str:
    """Apply one status; returns what happened: ``applied``, ``kept`` (before the outcome: a stub),
    ``unchanged`` (a duplicate or an older status) or ``unknown`` (no entry names it)."""
    key = change.key
    if key is None:
        matches = list(NotificationLog.by_provider_msg_id.query(change.wamid, limit=1))
        if not matches:
            key = (f"wamid#{change.wamid}", "-")  # kept until it expires: counted, never sent to
            outcome = _upsert(key, change, expires_at)
            return "unknown" if outcome != "unchanged" else outcome
        key = (matches[0].job_id, matches[0].participant_id)
    return _upsert(key, change, expires_at)


def _upsert(key: tuple[str, str], change: StatusChange, expires_at: datetime) -> str:
    actions: list[Action] = [
        NotificationLog.status.set(change.status.value),
        NotificationLog.updated_at.set(utcnow().isoformat()),
        NotificationLog.expires_at.set(NotificationLog.expires_at | expires_at),
    ]
    if change.status is LogStatus.FAILED and change.error_code is not None:
        actions.append(NotificationLog.error_code.set(change.error_code))
        actions.append(NotificationLog.reason.set(f"whatsapp_error_{change.error_code}"))
    pricing: list[Action] = []
    if change.pricing_category:
        pricing.append(NotificationLog.pricing_category.set(change.pricing_category))
    if change.pricing_type:
        pricing.append(NotificationLog.pricing_type.set(change.pricing_type))
    if change.billable is not None:
        pricing.append(NotificationLog.billable.set(change.billable))
    actions += pricing
    lower = NotificationLog.status.is_in(*_lower_than(change.status))
    entry = NotificationLog(*key)
    # The usual case, one write: the entry holds this wamid and is behind this status (the wamid is not
    # written again, so the wamid index is not either). Else: the entry is missing (a stub is made) or has
    # no wamid yet (a timed-out send Meta took), and gets this one.
    for attempt, condition in (
        (actions, lower & (NotificationLog.provider_msg_id == change.wamid)),
        (
            # ... or made meanwhile by another status of this message, or by the outcome: this wamid then
            [*actions, NotificationLog.provider_msg_id.set(change.wamid)],
            NotificationLog.status.does_not_exist()
            | (
                lower
                & (
                    NotificationLog.provider_msg_id.does_not_exist()
                    | (NotificationLog.provider_msg_id == change.wamid)
                )
            ),
        ),
    ):
        try:
            entry.update(actions=attempt, condition=condition)
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise  # the table failed (throttled, unavailable): the webhook answers 500, Meta retries
            continue
        return "applied" if entry.trip_id is not None else "kept"
    if pricing:  # an older status still brings Meta's pricing (a "read" may come before "delivered")
        _set_pricing(entry, change.wamid, pricing)
    return "unchanged"  # a duplicate or older status (the entry is at or past it), or another wamid's


def _set_pricing(entry: NotificationLog, wamid: str, pricing: list[Action]) -> None:
    try:
        entry.update(actions=pricing, condition=NotificationLog.provider_msg_id == wamid)
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise  # another wamid's entry: not this message's pricing


def final(status: LogStatus) -> bool:
    return status in FINAL_STATUSES


# -- readers (ledger, admin) ---------------------------------------------------------------------------

BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem maximum
WHOLE_JOB_KEYS = 25  # a job with this many keys among a batch of 100 is read whole, by Query


def trip_log(
    trip_id: str, *, newest_first: bool = False, page_size: int | None = None, whole_jobs: bool = True
) -> Iterator[NotificationLog]:
    """The log entries of a trip in ``created_at`` order, as the ``by_trip_keys`` index lists them.

    The index holds keys only, so the entries come from the table, a batch of up to 100 keys at a time: a job
    with many keys in the batch (a fan-out chunk) is read whole by a paged Query on its partition, billed by
    size (~24 entries of ~335 bytes per read unit, against 2 per unit by BatchGetItem), and its next keys are
    then served from memory; the other keys by one BatchGetItem. ``whole_jobs=False`` uses BatchGetItem only
    (a short look at the newest few entries, where reading a whole broadcast would be waste). An entry deleted
    in between (TTL) is left out."""
    keys = NotificationLog.by_trip_keys.query(
        trip_id, scan_index_forward=not newest_first, page_size=page_size
    )
    batch_size = min(BATCH_GET_KEYS, page_size or BATCH_GET_KEYS)
    whole: dict[str, dict[str, NotificationLog]] = {}  # job id -> its entries not yet handed out
    for batch in _batches(keys, batch_size):
        if whole_jobs:
            per_job = Counter(k.job_id for k in batch if k.job_id not in whole)
            for job_id, n in per_job.items():
                if n >= WHOLE_JOB_KEYS:
                    whole[job_id] = {e.participant_id: e for e in NotificationLog.query(job_id)}
        # Keys of the other jobs, and of whole jobs' entries written after their Query.
        missing = [
            (k.job_id, k.participant_id) for k in batch if k.participant_id not in whole.get(k.job_id, {})
        ]
        fetched = (
            {(e.job_id, e.participant_id): e for e in NotificationLog.batch_get(missing)} if missing else {}
        )
        for k in batch:
            entry = whole.get(k.job_id, {}).pop(k.participant_id, None)
            if entry is None:
                entry = fetched.get((k.job_id, k.participant_id))
            if entry is not None and entry.trip_id == trip_id:
                yield entry


def _batches(items: Iterable[NotificationLog], size: int) -> Iterator[list[NotificationLog]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch

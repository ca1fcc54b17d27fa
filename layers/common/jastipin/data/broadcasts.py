"""The broadcasts table (key: trip id, broadcast id): a paid template broadcast's request and estimate, kept
for good as the ledger's durable part, with the log's last view of it copied in (``observed``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from jastipin.data._conditions import condition_failed
from jastipin.data.models import Broadcast, BroadcastStatus


def create(record: Broadcast) -> bool:
    """Store a new broadcast (status pending); False if one with its id exists (the same idempotency key)."""
    try:
        record.save(condition=Broadcast.broadcast_id.does_not_exist())
    except PutError as exc:
        if not condition_failed(exc):
            raise
        return False
    return True


def get(trip_id: str, broadcast_id: str) -> Broadcast | None:
    try:
        return Broadcast.get(trip_id, broadcast_id, consistent_read=True)
    except DoesNotExist:
        return None


def of_trip(trip_id: str) -> list[Broadcast]:
    """The trip's broadcasts, oldest request first."""
    return sorted(Broadcast.query(trip_id), key=lambda r: r.requested_at)


def mark_queued(record: Broadcast) -> None:
    record.update(actions=[Broadcast.status.set(BroadcastStatus.QUEUED.value)])


def remember_observed(record: Broadcast, observed: dict[str, Any], entries: int, at: datetime) -> bool:
    """Copy the log's view of a broadcast (``entries`` log entries seen) into its record, unless a view of
    more entries is stored already (a later read of an expiring log never replaces a fuller one)."""
    try:
        record.update(
            actions=[
                Broadcast.observed.set(observed),
                Broadcast.observed_entries.set(entries),
                Broadcast.observed_at.set(at),
            ],
            condition=Broadcast.observed_entries.does_not_exist() | (Broadcast.observed_entries <= entries),
        )
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        return False
    return True

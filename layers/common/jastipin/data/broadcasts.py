"""The broadcasts table (key: trip id, broadcast id): a paid template broadcast's request and estimate, kept
for good as the ledger's durable part, with the log's last view of it copied in (``observed``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from jastipin.data._conditions import written
from jastipin.data.models import Broadcast, BroadcastStatus


def create(record: Broadcast) -> bool:
    """Store a new broadcast (status pending); False if one with its id exists (the same idempotency key)."""
    return written(lambda: record.save(condition=Broadcast.broadcast_id.does_not_exist()))


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
    actions: list[Action] = [
        Broadcast.observed.set(observed),
        Broadcast.observed_entries.set(entries),
        Broadcast.observed_at.set(at),
    ]
    not_fuller = Broadcast.observed_entries.does_not_exist() | (Broadcast.observed_entries <= entries)
    return written(lambda: record.update(actions=actions, condition=not_fuller))

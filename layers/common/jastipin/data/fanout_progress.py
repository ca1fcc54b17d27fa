"""The jobs table: how far the fan-out of one job got (``FanOutProgress``; see ``outbound.fanout``). Each
write is conditional on the progress the writer started from, so of two deliveries of one fan-out message
only one advances it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from jastipin.data._conditions import written
from jastipin.data.models import FanOutProgress, utcnow


def get_or_create(job_id: str, *, trip_id: str, kind: str, expires_at: datetime) -> FanOutProgress:
    """The stored progress of a job, created (from the start) on its first run."""
    try:
        return FanOutProgress.get(job_id, consistent_read=True)
    except DoesNotExist:
        pass
    progress = FanOutProgress(job_id, trip_id=trip_id, kind=kind, expires_at=expires_at)
    if written(lambda: progress.save(condition=FanOutProgress.job_id.does_not_exist())):
        return progress
    return FanOutProgress.get(job_id, consistent_read=True)  # another delivery created it meanwhile


def advance(
    progress: FanOutProgress,
    *,
    from_chunk: int,
    cursor: str | None,
    next_chunk: int,
    recipients: int,
    handed_over: bool,
    done: bool,
) -> bool:
    """Record that the chunks up to ``next_chunk`` (``recipients`` more people, up to ``cursor``) are queued,
    only if the stored progress is still at ``from_chunk``. False: another delivery advanced it."""
    actions: list[Action] = [
        FanOutProgress.cursor.set(cursor) if cursor else FanOutProgress.cursor.remove(),
        FanOutProgress.next_chunk.set(next_chunk),
        FanOutProgress.recipients.add(recipients),
        FanOutProgress.updated_at.set(utcnow()),
    ]
    if handed_over:
        actions.append(FanOutProgress.continuations.add(1))
    if done:
        actions.append(FanOutProgress.done.set(True))
    return written(lambda: progress.update(actions=actions, condition=_at(from_chunk)))


def many(job_ids: Iterable[str]) -> dict[str, FanOutProgress]:
    ids = list(dict.fromkeys(job_ids))
    return {p.job_id: p for p in FanOutProgress.batch_get(ids)} if ids else {}


def _at(next_chunk: int) -> Condition:
    """The stored progress is still at ``next_chunk`` (0 also when the item has no value yet)."""
    if next_chunk == 0:
        fresh: Condition = FanOutProgress.next_chunk.does_not_exist() | (FanOutProgress.next_chunk == 0)
        return fresh
    same: Condition = FanOutProgress.next_chunk == next_chunk
    return same

"""A trip's recent notification outcomes, for operators (newest first, optionally of one status)."""

from __future__ import annotations

from jastipin.errors import NotFound, Unprocessable
from jastipin.ids import normalise_slug
from jastipin.operations.dlq import STOP_BEFORE_SECONDS, TimeLeft, unlimited
from jastipin.operations.views import OutcomeView, TripOutcomes

MAX_OUTCOMES = 200


def normalise_trip_id(raw: str) -> str:
    trip_id = normalise_slug(raw) if raw.isascii() else None
    if trip_id is None:
        raise NotFound(f"no trip '{raw[:64]}'", field="tripId")
    return trip_id


def recent_outcomes(
    trip_id: str,
    *,
    limit: int = 50,
    status: str | None = None,
    time_left: TimeLeft = unlimited,
) -> TripOutcomes:
    """The trip's newest log entries, optionally of one status only (``notifications_log.trip_log``, newest
    first).

    Without a status the newest ``limit`` keys are fetched by BatchGetItem; with one, the walk may cover the
    trip's whole log (few entries fail), so a broadcast's entries are read by Query on the job instead."""
    from jastipin.data.models import LogStatus
    from jastipin.data.notifications_log import trip_log

    trip_id = normalise_trip_id(trip_id)
    if status is not None and status not in {s.value for s in LogStatus}:
        known = ", ".join(s.value for s in LogStatus)
        raise Unprocessable(f"status: one of {known}", field="status")
    limit = max(1, min(limit, MAX_OUTCOMES))
    if status is None:
        entries = trip_log(trip_id, newest_first=True, page_size=limit, whole_jobs=False)
    else:
        entries = trip_log(trip_id, newest_first=True)
    outcomes: list[OutcomeView] = []
    truncated = False
    for entry in entries:
        if status is None or entry.status == status:
            outcomes.append(
                OutcomeView(
                    job_id=entry.job_id,
                    participant_id=entry.participant_id,
                    message_type=entry.message_type,
                    status=entry.status,
                    reason=entry.reason,
                    error_code=int(entry.error_code) if entry.error_code is not None else None,
                    attempts=int(entry.attempts or 0),
                    created_at=entry.created_at,
                    updated_at=entry.updated_at,
                )
            )
            if len(outcomes) >= limit:
                break
        if time_left() <= STOP_BEFORE_SECONDS:
            truncated = True
            break
    return TripOutcomes(trip_id=trip_id, status=status, outcomes=outcomes, truncated=truncated)

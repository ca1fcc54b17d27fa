"""Who a trip's messages go to: the one filter shared by the broadcast estimate and the sender's fan-out, so
the estimate counts exactly the recipients a broadcast is queued for.

- Every fan-out: members of the trip whose membership is active (not STOPped).
- A broadcast (``AudienceFilter``) also needs the person to be *active*: their last activity — joining (or
  re-joining) this trip, or any WhatsApp message they sent us (``Contact.last_inbound_at``, whatever the
  trip) — at or after ``active_since`` (spec: the last 7 days; from the start of the hour 7 days ago); and for
  a marketing template, not opted out of marketing messages (STOP on Meta's side, ``user_preferences`` or
  error 131050).

The estimate reads the same audience from kept counts (``jastipin.audience_counts``), not from the members.
At send time the sender checks STOP and the marketing opt-out again (``delivery.Sender._decide``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import TypeVar

from jastipin.data import contacts, participants
from jastipin.data.models import Contact, Participant, ParticipantStatus, utcnow
from jastipin.outbound.jobs import AudienceFilter, Recipient

DEFAULT_ACTIVE_WITHIN_DAYS = 7  # spec: "Hanya peserta aktif dalam 7 hari terakhir"
MAX_ACTIVE_WITHIN_DAYS = 30
PAGE = 100  # participants per contacts BatchGetItem (DynamoDB's maximum)
QUERY_PAGE = 1000  # participants per Query page: 10 round trips for 10,000, not 100

T = TypeVar("T")


def broadcast_filter(
    active_within_days: int, *, marketing: bool, now: datetime | None = None
) -> AudienceFilter:
    """Active in the last N days, counted from the start of the hour N days ago: the kept counts are by hour
    of last activity (``jastipin.audience_counts``), so a cut-off on the hour is one they answer exactly."""
    now = now or utcnow()
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=active_within_days)
    return AudienceFilter(active_since=since, marketing=marketing)


def last_activity(participant: Participant, contact: Contact | None) -> datetime | None:
    moments = [participant.last_active_at, contact.last_inbound_at if contact else None]
    return max((m for m in moments if m is not None), default=None)


def is_in_audience(
    participant: Participant, contact: Contact | None, criteria: AudienceFilter | None
) -> bool:
    if participant.status != ParticipantStatus.ACTIVE.value:
        return False
    if criteria is None:
        return True
    last = last_activity(participant, contact)
    if last is None or last < criteria.active_since:
        return False
    return not (criteria.marketing and contact is not None and contact.marketing_opt_out)


def recipients(trip_id: str, criteria: AudienceFilter | None = None) -> Iterator[Recipient]:
    """The trip's recipients in participant-id order: one Query (paged) and, with a filter, one contacts
    BatchGetItem per 100 participants (a 10,000-member trip: 10 + 100 calls, about a second)."""
    for _, page in pages(trip_id, criteria):
        yield from page


def pages(
    trip_id: str, criteria: AudienceFilter | None = None, *, after: str | None = None
) -> Iterator[tuple[str, list[Recipient]]]:
    """The recipients of the trip's participants after ``after`` (participant id order), 100 participants
    at a time: ``(the last participant id read, the recipients among them)``; a page may hold none."""
    members = participants.active(trip_id, after=after, page_size=QUERY_PAGE)
    for page in chunked(members, PAGE):
        known: dict[str, Contact] = {}
        if criteria is not None:
            known = contacts.many(p.wa_key for p in page)
        yield (
            page[-1].participant_id,
            [
                Recipient(id=p.participant_id, phone=p.phone, user_id=p.user_id, name=p.name)
                for p in page
                if is_in_audience(p, known.get(p.wa_key), criteria)
            ],
        )


def count(trip_id: str, criteria: AudienceFilter | None = None) -> int:
    return sum(1 for _ in recipients(trip_id, criteria))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    page: list[T] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page

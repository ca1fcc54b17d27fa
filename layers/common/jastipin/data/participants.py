"""The participants table: a person's membership of one trip (key: trip id, participant id), with the
``by_participant`` index for the trips of one person. A phone may join several trips; STOP keeps the item
(status ``unsubscribed``) so a re-JOIN keeps the original ``joined_at``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from jastipin.data._conditions import written
from jastipin.data.models import Participant, ParticipantStatus, utcnow


def get(trip_id: str, participant_id: str, *, consistent: bool = False) -> Participant | None:
    try:
        return Participant.get(trip_id, participant_id, consistent_read=consistent)
    except DoesNotExist:
        return None


def many(trip_id: str, participant_ids: Iterable[str]) -> dict[str, Participant]:
    """The memberships of these participants in the trip that exist, by participant id (BatchGetItem)."""
    keys = [(trip_id, pid) for pid in dict.fromkeys(participant_ids)]
    return {p.participant_id: p for p in Participant.batch_get(keys)}


def active_among(trip_id: str, participant_ids: Iterable[str]) -> set[str]:
    """Which of these participants are active members of the trip (BatchGetItem, the status only)."""
    keys = [(trip_id, pid) for pid in dict.fromkeys(participant_ids)]
    return {
        m.participant_id
        for m in Participant.batch_get(keys, attributes_to_get=["participant_id", "status"])
        if m.status == ParticipantStatus.ACTIVE.value
    }


def active(trip_id: str, *, after: str | None = None, page_size: int = 1000) -> Iterator[Participant]:
    """The trip's active members in participant-id order, after ``after`` (one Query, paged)."""
    return iter(
        Participant.query(
            trip_id,
            Participant.participant_id > after if after else None,
            filter_condition=Participant.status == ParticipantStatus.ACTIVE.value,
            page_size=page_size,
        )
    )


def of_trip(trip_id: str) -> Iterator[Participant]:
    """Every membership of the trip, whatever its status (one consistent Query, paged)."""
    return iter(Participant.query(trip_id, consistent_read=True, page_size=1000))


def memberships(participant_id: str) -> list[Participant]:
    """Every membership of one person, whatever its status (the ``by_participant`` index)."""
    return list(Participant.by_participant.query(participant_id))


def join(
    trip_id: str,
    participant_id: str,
    *,
    wa_key: str,
    phone: str | None,
    user_id: str | None,
    name: str | None,
) -> bool:
    """Make the person an active member: a new membership, or a re-JOIN (also after STOP) that reactivates
    the old one and keeps its ``joined_at``. Returns True for a new membership."""
    membership = Participant(trip_id, participant_id, wa_key=wa_key, phone=phone, user_id=user_id, name=name)
    if written(lambda: membership.save(condition=Participant.participant_id.does_not_exist())):
        return True
    actions: list[Action] = [
        Participant.status.set(ParticipantStatus.ACTIVE.value),
        Participant.unsubscribed_at.remove(),
        Participant.last_active_at.set(utcnow()),
    ]
    if name:
        actions.append(Participant.name.set(name))
    membership.update(actions=actions)
    return False


def unsubscribe(trip_id: str, participant_id: str) -> bool:
    """STOP: the membership stays, unsubscribed. False if the person is not a member of the trip."""
    actions: list[Action] = [
        Participant.status.set(ParticipantStatus.UNSUBSCRIBED.value),
        Participant.unsubscribed_at.set(utcnow()),
    ]
    condition = Participant.participant_id.exists()
    return written(lambda: Participant(trip_id, participant_id).update(actions=actions, condition=condition))


def set_user_id(trip_id: str, participant_id: str, user_id: str) -> None:
    Participant(trip_id, participant_id).update(actions=[Participant.user_id.set(user_id)])


def move(membership: Participant, *, participant_id: str, wa_key: str, user_id: str) -> None:
    """Write a membership under a new participant id (a user id replaced), keeping its status and dates.
    The old one is then removed (``delete``)."""
    Participant(
        membership.trip_id,
        participant_id,
        wa_key=wa_key,
        phone=None,
        user_id=user_id,
        name=membership.name,
        status=membership.status,
        joined_at=membership.joined_at,
        unsubscribed_at=membership.unsubscribed_at,
        last_active_at=membership.last_active_at,
    ).save()


def delete(trip_id: str, participant_id: str) -> None:
    Participant(trip_id, participant_id).delete()

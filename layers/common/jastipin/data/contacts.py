"""The contacts table: one item per WhatsApp user as the business number knows them, keyed by ``wa_key`` (the
E.164 phone, or ``bsuid:<user id>`` for someone known only by a business-scoped user id). It holds the
24-hour customer-service window (``last_inbound_at``), marketing consent, the trip last joined, and the
forward (``moved_to``) left on a user id that WhatsApp replaced."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from jastipin.data._conditions import written
from jastipin.data.models import Contact, utcnow


def wa_key(phone: str | None, user_id: str | None) -> str:
    """The key of a person: their phone when known, else their user id."""
    return phone if phone else f"bsuid:{user_id}"


def get(key: str) -> Contact | None:
    try:
        return Contact.get(key, consistent_read=True)
    except DoesNotExist:
        return None


def many(keys: Iterable[str]) -> dict[str, Contact]:
    """The contacts of these keys that exist, by key (BatchGetItem, 100 keys a call)."""
    return {c.wa_key: c for c in Contact.batch_get(list(set(keys)))}


# What the sender reads of a contact before sending: the 24-hour window and marketing consent.
SENDING_ATTRIBUTES = ["wa_key", "last_inbound_at", "marketing_opt_out"]


def for_sending(keys: Iterable[str]) -> dict[str, Contact]:
    """``many``, with only what the sender decides on (``SENDING_ATTRIBUTES``): a projected read is less to
    carry and to parse, per recipient, on the send path."""
    return {c.wa_key: c for c in Contact.batch_get(list(set(keys)), attributes_to_get=SENDING_ATTRIBUTES)}


def forwards(user_ids: Iterable[str]) -> dict[str, str]:
    """For each of these user ids that WhatsApp replaced: the user id that replaced it (one BatchGetItem,
    three attributes)."""
    keys = [f"bsuid:{u}" for u in set(user_ids)]
    return {
        c.user_id: c.moved_to
        for c in Contact.batch_get(keys, attributes_to_get=["wa_key", "user_id", "moved_to"])
        if c.moved_to and c.user_id
    }


def touch(
    key: str,
    *,
    participant_id: str,
    phone: str | None,
    user_id: str | None,
    name: str | None,
    at: datetime,
    hour_start: datetime,
) -> tuple[Contact, bool]:
    """Record an inbound message at ``at``: opens (or extends) the 24-hour window. Returns the contact as
    stored and whether its last activity moved into a later hour (``hour_start`` is the start of ``at``'s).

    One UpdateItem in the usual case, which creates the contact if new and returns it: its condition holds
    when the message starts a new hour of activity. A later message within the hour takes a second update,
    and a late, older message (the window never moves back) a third, without the time."""
    contact = Contact(key)
    actions: list[Action] = [
        Contact.participant_id.set(Contact.participant_id | participant_id),  # if_not_exists
        Contact.marketing_opt_out.set(Contact.marketing_opt_out | False),
        Contact.updated_at.set(utcnow()),
    ]
    if phone:
        actions.append(Contact.phone.set(phone))
    if user_id:
        actions.append(Contact.user_id.set(user_id))
    if name:
        actions.append(Contact.name.set(name))
    with_time = [*actions, Contact.last_inbound_at.set(at)]
    for before, new_hour in ((hour_start, True), (at, False)):
        later = Contact.last_inbound_at.does_not_exist() | (Contact.last_inbound_at < before)
        if written(lambda: contact.update(actions=with_time, condition=later)):  # noqa: B023 (called at once)
            return contact, new_hour
    contact.update(actions=actions)
    return contact, False


def set_last_trip(contact: Contact, trip_id: str) -> None:
    """The trip an INFO or STOP without a slug means (``contact`` is updated in place)."""
    contact.update(actions=[Contact.last_trip_id.set(trip_id)])


def set_user_id(key: str, user_id: str) -> bool:
    """Record a person's new user id on their contact; False if there is no such contact."""
    return written(
        lambda: Contact(key).update(actions=[Contact.user_id.set(user_id)], condition=Contact.wa_key.exists())
    )


def move(before: Contact, *, to_key: str, participant_id: str, user_id: str) -> None:
    """Write a contact under a new key (a user known only by a user id that was replaced), keeping their
    window, last trip and marketing choice. The old item is then replaced by a forward (``leave_forward``)."""
    Contact(
        to_key,
        participant_id=participant_id,
        user_id=user_id,
        name=before.name,
        last_inbound_at=before.last_inbound_at,
        last_trip_id=before.last_trip_id,
        marketing_opt_out=before.marketing_opt_out,
    ).save()


def leave_forward(key: str, *, participant_id: str, user_id: str | None, moved_to: str) -> None:
    """Replace a moved contact by a forward to the user id that replaced it: chunks queued before the change
    still name the old id, and are sent to the new one."""
    Contact(key, participant_id=participant_id, user_id=user_id, moved_to=moved_to).save()


def set_marketing_opt_out(key: str, opted_out: bool, *, updated_at: datetime | None = None) -> bool:
    """Record a person's marketing choice; False if there is no such contact (nothing to record)."""
    actions: list[Action] = [Contact.marketing_opt_out.set(opted_out)]
    if updated_at is not None:
        actions.append(Contact.updated_at.set(updated_at))
    return written(lambda: Contact(key).update(actions=actions, condition=Contact.wa_key.exists()))

"""Who wrote to us: a phone, a business-scoped user id, or both (``Identity``), and what an inbound message
records about them: the contact's 24-hour window (``touch_contact``) and a user id that WhatsApp replaced
(``change_user_id``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from jastipin import audience_counts
from jastipin.audience_counts import hour_start
from jastipin.data import contacts, participants
from jastipin.data.models import Contact, utcnow
from jastipin.ids import stable_id
from jastipin.inbound.payload import (
    InboundMessage,
    WebhookContact,
)
from jastipin.phones import InvalidPhoneNumber, to_e164

logger = Logger(child=True)


@dataclass(frozen=True)
class Identity:
    """Who wrote: Meta gives a phone (wa_id), a business-scoped user id, or both."""

    phone: str | None
    user_id: str | None

    @property
    def wa_key(self) -> str:
        return contacts.wa_key(self.phone, self.user_id)

    @property
    def participant_id(self) -> str:
        return stable_id("p", self.wa_key)


def identify(message: InboundMessage, contacts: list[WebhookContact]) -> Identity | None:
    contact = next((c for c in contacts if c.wa_id and c.wa_id == message.from_), None) or (
        contacts[0] if len(contacts) == 1 else None
    )
    raw_phone = message.from_ or (contact.wa_id if contact else None)
    user_id = message.from_user_id or (contact.user_id if contact else None)
    phone = None
    if raw_phone:
        try:
            phone = to_e164("+" + raw_phone.lstrip("+"))
        except InvalidPhoneNumber:
            phone = None
    if not phone and not user_id:
        return None
    return Identity(phone=phone, user_id=user_id)


def message_time(message: InboundMessage, now: Callable[[], datetime] = utcnow) -> datetime:
    """When Meta says the message was sent (``now()`` when it says nothing readable)."""
    try:
        return datetime.fromtimestamp(int(message.timestamp or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return now()


def touch_contact(identity: Identity, name: str | None, at: datetime) -> tuple[Contact, bool]:
    """Record an inbound message: opens (or extends) the 24-hour window. Returns the contact as stored and
    whether its last activity moved into a later hour (its trips' audience counts move then)."""
    return contacts.touch(
        identity.wa_key,
        participant_id=identity.participant_id,
        phone=identity.phone,
        user_id=identity.user_id,
        name=name,
        at=at,
        hour_start=hour_start(at),
    )


USER_ID_CHANGES = frozenset({"user_changed_user_id", "user_id_update"})  # Meta's system message type


def change_user_id(old: Identity, new_user_id: str) -> int:
    """A user's business-scoped user id changed (a ``system`` message): they keep their trips, their
    24-hour window and their marketing choice. With a phone known the phone stays the key and only the
    stored user id changes; a user known only by the id is moved to the new one: each membership is written
    under the new participant id and the old one removed (counts synced for both), the contact likewise.
    Safe to repeat after a crash: what was moved already is found under the new id. Returns the memberships
    moved (or updated)."""
    if old.user_id == new_user_id:
        return 0
    new = Identity(phone=old.phone, user_id=new_user_id)
    if old.phone:  # the key stays: record the new id where it is kept
        memberships = participants.memberships(old.participant_id)
        for m in memberships:
            participants.set_user_id(m.trip_id, m.participant_id, new_user_id)
        contacts.set_user_id(old.wa_key, new_user_id)
        logger.info("user id changed", extra={"participant_id": old.participant_id, "moved": 0})
        return len(memberships)
    moved = participants.memberships(old.participant_id)
    for m in moved:
        participants.move(m, participant_id=new.participant_id, wa_key=new.wa_key, user_id=new_user_id)
    before = contacts.get(old.wa_key)
    if before is not None and before.moved_to is None:  # (moved_to: this change was made before)
        contacts.move(before, to_key=new.wa_key, participant_id=new.participant_id, user_id=new_user_id)
    trips = {m.trip_id for m in moved} | {m.trip_id for m in participants.memberships(new.participant_id)}
    for m in moved:
        participants.delete(m.trip_id, m.participant_id)
    # The old record stays as a forward: chunks queued before the change still name the old id, and are
    # sent to the new one (its window, consent and memberships now live under the new key).
    contacts.leave_forward(
        old.wa_key, participant_id=old.participant_id, user_id=old.user_id, moved_to=new_user_id
    )
    for trip_id in sorted(trips):  # the new membership counted, the old one no more
        audience_counts.sync_member(trip_id, new.participant_id)
        audience_counts.sync_member(trip_id, old.participant_id)
    logger.info("user id changed", extra={"participant_id": new.participant_id, "moved": len(moved)})
    return len(moved)

"""Running a participant's command (JOIN / INFO / STOP): the membership changes, and the Indonesian reply
queued on the notifications queue (nothing here calls the WhatsApp API)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from jastipin import audience_counts, texts
from jastipin.data import contacts, participants
from jastipin.data import trips as trip_records
from jastipin.data.models import Contact, Trip
from jastipin.ids import stable_id
from jastipin.inbound.commands import Command, CommandKind, parse_command
from jastipin.inbound.identity import (
    USER_ID_CHANGES,
    Identity,
    change_user_id,
    identify,
    message_time,
    touch_contact,
)
from jastipin.inbound.payload import (
    InboundMessage,
    WebhookContact,
)
from jastipin.outbound.jobs import AutoReplyJob, Recipient
from jastipin.outbound.queues import JobQueues

logger = Logger(child=True)


class CommandHandler:
    def __init__(self, queues: JobQueues) -> None:
        self._queues = queues

    def handle_message(self, message: InboundMessage, contacts: list[WebhookContact]) -> str | None:
        """Apply one inbound message; returns the reply text that was queued (None: nothing to say)."""
        identity = identify(message, contacts)
        if identity is None:
            logger.warning("inbound message without a usable sender", extra={"message_type": message.type})
            return None
        if message.type == "system":  # from WhatsApp, not the user: no window opens, nothing to answer
            if message.system and message.system.type in USER_ID_CHANGES and message.system.user_id:
                change_user_id(identity, message.system.user_id)
            else:
                logger.info(
                    "system message ignored", extra={"change": message.system and message.system.type}
                )
            return None
        name = next((c.profile.name for c in contacts if c.profile and c.profile.name), None)
        contact, new_hour = touch_contact(identity, name, message_time(message))
        if new_hour:
            audience_counts.sync_person(identity.wa_key)  # last activity moved in every trip they are in
        if message.type != "text":
            # Images, stickers, reactions, locations...: the window opens, nothing to answer.
            logger.info("non-text inbound message ignored", extra={"message_type": message.type})
            return None
        command = parse_command(message.text_body)
        reply = self._run(command, identity, contact, name)
        self._queue_reply(message.id, identity, contact, name, reply)
        logger.info(
            "command handled",
            extra={"command": command.kind.value, "participant_id": identity.participant_id},
        )
        return reply

    def _run(self, command: Command, identity: Identity, contact: Contact, name: str | None) -> str:
        if command.kind is CommandKind.JOIN:
            return (
                self._join(command.slug, identity, contact, name) if command.slug else texts.join_needs_slug()
            )
        if command.kind is CommandKind.INFO:
            trip = self._trip_for(command.slug, contact)
            if trip is None:
                return texts.not_joined() if not command.slug else texts.trip_not_found(command.slug)
            return texts.latest_products(trip.title, trip_records.latest_products(trip.trip_id))
        if command.kind is CommandKind.STOP:
            return self._stop(command.slug, identity, contact)
        return texts.help_text()

    def _trip_for(self, slug: str | None, contact: Contact) -> Trip | None:
        trip_id = slug or contact.last_trip_id
        return trip_records.get(trip_id) if trip_id else None

    def _join(self, slug: str, identity: Identity, contact: Contact, name: str | None) -> str:
        trip = trip_records.get(slug)
        if trip is None:
            return texts.trip_not_found(slug)
        participants.join(
            trip.trip_id,
            identity.participant_id,
            wa_key=identity.wa_key,
            phone=identity.phone,
            user_id=identity.user_id,
            name=name,
        )
        audience_counts.sync_member(trip.trip_id, identity.participant_id)
        contacts.set_last_trip(contact, trip.trip_id)
        return texts.joined(trip.title)

    def _stop(self, slug: str | None, identity: Identity, contact: Contact) -> str:
        trip = self._trip_for(slug, contact)
        if trip is None:
            return texts.not_joined() if not slug else texts.trip_not_found(slug)
        # A table failure raises: the message comes back from the queue and STOP is applied then.
        if not participants.unsubscribe(trip.trip_id, identity.participant_id):
            return texts.not_joined()
        audience_counts.sync_member(trip.trip_id, identity.participant_id)
        return texts.stopped(trip.title, trip.trip_id)

    def _queue_reply(
        self, inbound_id: str, identity: Identity, contact: Contact, name: str | None, reply: str
    ) -> None:
        job = AutoReplyJob(
            job_id=stable_id("rpl", inbound_id),  # one reply per inbound message, whatever happens
            trip_id=contact.last_trip_id or "-",
            participants=[
                Recipient(
                    id=identity.participant_id, phone=identity.phone, user_id=identity.user_id, name=name
                )
            ],
            template="auto_reply",
            message=reply,
        )
        self._queues.send(job)

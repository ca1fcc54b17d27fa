"""What participants say to us over WhatsApp: commands (JOIN / INFO / STOP), delivery statuses and marketing
preferences. The webhook applies preferences and queues messages and statuses (``WebhookIntake``); the inbound
function runs the commands (``InboundProcessor``) and applies the statuses. Replies are queued on the
notifications queue; nothing here calls the WhatsApp API."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field

from jastipin import audience_counts, texts
from jastipin.audience_counts import hour_start
from jastipin.commands import Command, CommandKind, parse_command
from jastipin.data import contacts, notifications_log, participants
from jastipin.data import trips as trip_records
from jastipin.data.models import (
    Contact,
    LogStatus,
    Trip,
    parse_log_key,
    utcnow,
)
from jastipin.ids import stable_id
from jastipin.jobs import Job, JobKind, Recipient, sqs_safe_json
from jastipin.phones import InvalidPhoneNumber, to_e164
from jastipin.queues import JobQueues, QueueError
from jastipin.webhook_payload import (
    InboundMessage,
    StatusUpdate,
    UserPreference,
    WebhookContact,
    WebhookPayload,
)

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


def _message_time(message: InboundMessage) -> datetime:
    try:
        return datetime.fromtimestamp(int(message.timestamp or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return utcnow()


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
        contact, new_hour = touch_contact(identity, name, _message_time(message))
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
        job = Job(
            job_id=stable_id("rpl", inbound_id),  # one reply per inbound message, whatever happens
            kind=JobKind.AUTO_REPLY,
            trip_id=contact.last_trip_id or "-",
            participants=[
                Recipient(
                    id=identity.participant_id, phone=identity.phone, user_id=identity.user_id, name=name
                )
            ],
            template="auto_reply",
            message=reply,
            always_in_window=True,
        )
        self._queues.send(job)


def apply_status(status: StatusUpdate, log_ttl_days: float = 3) -> bool:
    """Apply one of Meta's statuses to the notifications log (``data.notifications_log``: kept even when
    it arrives before the sender's outcome); returns False when nothing changed (a duplicate or an older
    status). A status the log cannot place is kept until it expires, and counted."""
    if not status_worth_keeping(status):
        return False
    new = LogStatus(status.status)
    change = notifications_log.StatusChange(
        wamid=status.id,
        status=new,
        key=parse_log_key(status.biz_opaque_callback_data),
        error_code=status.errors[0].code if new is LogStatus.FAILED and status.errors else None,
        pricing_category=status.pricing.category if status.pricing else None,
        pricing_type=status.pricing.type if status.pricing else None,
        billable=status.pricing.billable if status.pricing else None,
    )
    result = notifications_log.apply_status(change, utcnow() + timedelta(days=log_ttl_days))
    if result in ("kept", "unknown"):
        name = "StatusBeforeOutcome" if result == "kept" else "StatusForUnknownMessage"
        with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="service", value="jastipin")
        logger.info(
            "status kept before its outcome" if result == "kept" else "status for unknown message",
            extra={"status": new.value},
        )
    return result in ("applied", "kept")


def apply_preference(preference: UserPreference) -> None:
    """``user_preferences`` (marketing stop/resume) updates the contact's marketing consent."""
    if preference.category != "marketing_messages" or preference.value not in {"stop", "resume"}:
        return
    keys = []
    if preference.wa_id:
        with contextlib.suppress(InvalidPhoneNumber):
            keys.append(to_e164("+" + preference.wa_id.lstrip("+")))
    if preference.user_id:
        keys.append(f"bsuid:{preference.user_id}")
    for key in keys:
        # A table failure raises: the webhook answers 500, Meta delivers it again.
        if not contacts.set_marketing_opt_out(key, preference.value == "stop", updated_at=utcnow()):
            continue  # no such contact
        audience_counts.sync_person(key)  # a failure answers 500 too: Meta retries, the sync runs again


def _count_malformed(dropped: int) -> int:
    """Messages, statuses or preferences of a signed payload that could not be read: logged and counted
    (metric ``WebhookItemMalformed``); the valid ones of the same payload still take effect."""
    if dropped:
        logger.warning("malformed webhook items dropped", extra={"items": dropped})
        with single_metric(name="WebhookItemMalformed", unit=MetricUnit.Count, value=dropped) as metric:
            metric.add_dimension(name="service", value="jastipin")
    return dropped


DEDUP_SECONDS = 7 * 24 * 3600  # Meta retries a webhook for up to 7 days
SQS_BATCH = 10


class InboundWork(BaseModel):
    """One inbound message and the contacts Meta sent with it: the body of an inbound-queue message."""

    model_config = ConfigDict(extra="ignore")

    message: InboundMessage
    contacts: list[WebhookContact] = Field(default_factory=list)

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))


class QueuedStatus(BaseModel):
    """One of Meta's delivery statuses on its way to the notifications log: the other body of an inbound-queue
    message."""

    model_config = ConfigDict(extra="ignore")

    status: StatusUpdate

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))


def read_queued(body: str) -> InboundWork | QueuedStatus:
    """An inbound-queue body: a message (``{"message": ...}``) or a status (``{"status": ...}``). Raises
    ``ValueError`` (pydantic's ``ValidationError`` among them) for anything else."""
    data = json.loads(body)
    if isinstance(data, dict) and "status" in data and "message" not in data:
        return QueuedStatus.model_validate(data)
    return InboundWork.model_validate(data)


def status_worth_keeping(status: StatusUpdate) -> bool:
    """Whether a status can change the log: ``delivered``, ``read`` and ``failed``. ``sent`` adds nothing
    (only the sender gives an entry its wamid, and records "sent" with it; Meta repeats the pricing with
    ``delivered``): skipping it saves a queued message and a write on every message (README, Cost). Nor
    does a status name we do not know. Neither is queued nor applied."""
    try:
        return LogStatus(status.status) is not LogStatus.SENT
    except ValueError:
        return False


class WebhookIntake:
    """What the webhook does with a verified payload, fast: marketing preferences are applied at once (one
    conditional update each, rare); inbound messages and statuses are queued (one SQS message each, sent in
    batches of 10) for the inbound function, which runs the commands (~6 calls each) and applies the statuses
    (one conditional update each) away from Meta's latency budget, so the answer never waits on the busy
    notifications log.

    Raises if anything cannot be queued: the webhook answers 500 and Meta delivers it again (statuses are
    forward-only and messages are handled once, so the repeat is harmless)."""

    def __init__(self, sqs_client: Any, inbound_queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = inbound_queue_url

    def accept(self, payload: WebhookPayload) -> dict[str, int]:
        summary = {"queued": 0, "statuses": 0, "preferences": 0, "malformed": 0}
        bodies: list[str] = []
        for entry in payload.entry:
            for change in entry.changes:
                value = change.value
                summary["malformed"] += _count_malformed(value.malformed)
                for m in value.messages:
                    bodies.append(InboundWork(message=m, contacts=value.contacts).to_body())
                    summary["queued"] += 1
                for status in value.statuses:
                    if status_worth_keeping(status):
                        bodies.append(QueuedStatus(status=status).to_body())
                        summary["statuses"] += 1
                for preference in value.user_preferences:
                    apply_preference(preference)
                    summary["preferences"] += 1
        for start in range(0, len(bodies), SQS_BATCH):
            batch = bodies[start : start + SQS_BATCH]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
            )
            if response.get("Failed"):
                raise QueueError(f"inbound queue refused {len(response['Failed'])} message(s)")
        return summary


class InboundProcessor:
    """Runs what the webhook queued: inbound messages, each handled once across instances and redeliveries
    (Powertools idempotency on the message id, DynamoDB-backed, with TTL), and statuses, which need no such
    guard (each is applied only forward, so a repeat changes nothing)."""

    def __init__(
        self, queues: JobQueues, idempotency_table: str, dynamodb_client: Any = None, log_ttl_days: float = 3
    ) -> None:
        self._log_ttl_days = log_ttl_days  # a status kept before its outcome lives as long as the log
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        self._commands = CommandHandler(queues)
        persistence = DynamoDBPersistenceLayer(table_name=idempotency_table, boto3_client=dynamodb_client)
        self._config = config = IdempotencyConfig(
            event_key_jmespath="message_id",
            expires_after_seconds=DEDUP_SECONDS,
            raise_on_no_idempotency_key=True,
        )
        self._handle_once = idempotent_function(
            data_keyword_argument="key", persistence_store=persistence, config=config
        )(self._handle)

    def apply(self, queued: QueuedStatus) -> bool:
        """Apply a queued status to the notifications log; False if it changed nothing. Raises if the table
        fails: the record goes back to the queue."""
        return apply_status(queued.status, self._log_ttl_days)

    def register_context(self, context: Any) -> None:
        """Lets idempotency records of a crashed invocation expire when the invocation would have ended."""
        self._config.register_lambda_context(context)

    def _handle(
        self, key: dict[str, Any], message: InboundMessage, contacts: list[WebhookContact]
    ) -> dict[str, Any]:
        reply = self._commands.handle_message(message, contacts)
        return {"replied": reply is not None}

    def handle(self, work: InboundWork) -> bool:
        """Handle one queued message; False if it was already handled (or is a replay). Raises
        ``IdempotencyAlreadyInProgressError`` while another instance handles it (the queue retries later).

        A message older than the dedup window is ignored: Meta retries for at most 7 days, so only a replay of
        a captured, validly signed webhook can be that old — and its idempotency record may have expired
        (a replayed JOIN would otherwise undo a later STOP)."""
        age = utcnow() - _message_time(work.message)
        if age > timedelta(seconds=DEDUP_SECONDS):
            logger.warning(
                "inbound message older than the dedup window ignored",
                extra={"message_id": work.message.id, "age_days": round(age.total_seconds() / 86400, 1)},
            )
            return False
        result = self._handle_once(
            key={"message_id": work.message.id}, message=work.message, contacts=work.contacts
        )
        return bool(result and result.get("replied"))

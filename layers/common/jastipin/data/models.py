"""DynamoDB tables (PynamoDB models). Table names come from settings via ``bind_tables``.

Access patterns (all GetItem/Query/BatchGet, no Scan on a hot path):
- trip by slug: ``Trip.get(slug)`` (the slug is the trip id, as in the spec's job payload ``tripId: "jpn25"``)
- active participants of a trip, paged: ``Participant.query(trip_id, filter status == active)``
- trips of a person: ``Participant.by_participant.query(participant_id)``
- a person by phone or business-scoped user id: ``Contact.get(wa_key)``
- 3 latest products: ``Product.query(trip_id, scan_index_forward=False, limit=3)``
- log entry by provider message id: ``NotificationLog.by_provider_msg_id.query(wamid)``
- log entries of a job: ``NotificationLog.query(job_id)``; of a trip, in time order:
  ``notifications_log.trip_log(trip)`` (the keys-only ``by_trip_keys`` index gives the keys, the table the
  entries)
- broadcasts of a trip (the ledger): ``Broadcast.query(trip_id)``
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from jastipin.settings import Common, LogRetention


def utcnow() -> datetime:
    return datetime.now(UTC)


class ParticipantStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


class WindowPolicy(StrEnum):
    """What a product update does for a participant whose 24-hour window is closed (seed: cost rule)."""

    SKIP = "skip"
    TEMPLATE = "template"


class LogStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    SKIPPED = "skipped"


# A status never moves backwards: callbacks arrive out of order and duplicated.
STATUS_RANK = {
    LogStatus.QUEUED: 0,
    LogStatus.SENT: 1,
    LogStatus.DELIVERED: 2,
    LogStatus.READ: 3,
    LogStatus.FAILED: 4,
    LogStatus.SKIPPED: 4,
}
FINAL_STATUSES = frozenset(
    {LogStatus.SENT, LogStatus.DELIVERED, LogStatus.READ, LogStatus.FAILED, LogStatus.SKIPPED}
)


class Trip(Model):
    class Meta:
        table_name = "trips"

    trip_id = UnicodeAttribute(hash_key=True)
    title = UnicodeAttribute()
    owner_phone = UnicodeAttribute()
    window_policy = UnicodeAttribute(default=WindowPolicy.SKIP.value)
    window_template = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute(default_for_new=utcnow)
    # The broadcast audience of this trip is counted as it changes (jastipin.audience_counts); unset for a
    # trip written around that (bulk import, older data) until its counts are rebuilt.
    audience_counted = BooleanAttribute(null=True)


class ByParticipant(GlobalSecondaryIndex["Participant"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by_participant"
        projection = AllProjection()

    participant_id = UnicodeAttribute(hash_key=True)
    trip_id = UnicodeAttribute(range_key=True)


class Participant(Model):
    """A person's membership of one trip (a phone may join several trips)."""

    class Meta:
        table_name = "participants"

    trip_id = UnicodeAttribute(hash_key=True)
    participant_id = UnicodeAttribute(range_key=True)
    wa_key = UnicodeAttribute()
    phone = UnicodeAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    status = UnicodeAttribute(default=ParticipantStatus.ACTIVE.value)
    joined_at = UTCDateTimeAttribute(default_for_new=utcnow)
    unsubscribed_at = UTCDateTimeAttribute(null=True)
    last_active_at = UTCDateTimeAttribute(default_for_new=utcnow)

    by_participant = ByParticipant()


class Contact(Model):
    """A WhatsApp user as the business number knows them: the 24-hour window and consent live here."""

    class Meta:
        table_name = "contacts"

    wa_key = UnicodeAttribute(hash_key=True)
    participant_id = UnicodeAttribute()
    phone = UnicodeAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    last_inbound_at = UTCDateTimeAttribute(null=True)
    last_trip_id = UnicodeAttribute(null=True)
    marketing_opt_out = BooleanAttribute(default=False)
    updated_at = UTCDateTimeAttribute(default=utcnow)
    # Set on a user id's record once WhatsApp replaced it (a user known only by it): the new user id, which
    # messages already queued for the old one follow (``Sender``).
    moved_to = UnicodeAttribute(null=True)


class Product(Model):
    class Meta:
        table_name = "products"

    trip_id = UnicodeAttribute(hash_key=True)
    product_id = UnicodeAttribute(range_key=True)  # time-sortable: newest last
    name = UnicodeAttribute()
    price = NumberAttribute()
    description = UnicodeAttribute(null=True)
    image_url = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute(default_for_new=utcnow)


class ByProviderMsgId(GlobalSecondaryIndex["NotificationLog"]):  # type: ignore[no-untyped-call]
    # Keys only: a status callback needs just the entry's key, and a projection without ``status`` means the
    # delivered/read updates do not also write this index (one write unit each instead of two).
    class Meta:
        index_name = "by_provider_msg_id"
        projection = KeysOnlyProjection()

    provider_msg_id = UnicodeAttribute(hash_key=True)


class ByTripKeys(GlobalSecondaryIndex["NotificationLog"]):  # type: ignore[no-untyped-call]
    # Keys only (job_id, participant_id, trip_id, created_at), none of which a status update changes: the
    # delivered/read updates write the table alone. Readers get the entries from the table
    # (``notifications_log.trip_log``).
    class Meta:
        index_name = "by_trip_keys"
        projection = KeysOnlyProjection()

    trip_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class NotificationLog(Model):
    """One entry per recipient of a job. No phone numbers and no message text (participant id only)."""

    class Meta:
        table_name = "notifications_log"

    job_id = UnicodeAttribute(hash_key=True)
    participant_id = UnicodeAttribute(range_key=True)
    # None on a stub: a status that arrived before the sender recorded the outcome (data.notifications_log)
    trip_id = UnicodeAttribute(null=True)
    message_type = UnicodeAttribute(null=True)
    status = UnicodeAttribute()
    provider_msg_id = UnicodeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    reason = UnicodeAttribute(null=True)
    error_code = NumberAttribute(null=True)
    pricing_category = UnicodeAttribute(null=True)
    pricing_type = UnicodeAttribute(null=True)  # regular, free_customer_service, free_entry_point (Meta's)
    billable = BooleanAttribute(null=True)
    created_at = UnicodeAttribute(null=True)  # ISO-8601, sorts as text (range key of by_trip_keys)
    updated_at = UnicodeAttribute(null=True)
    expires_at = TTLAttribute()

    by_provider_msg_id = ByProviderMsgId()
    by_trip_keys = ByTripKeys()


class BroadcastStatus(StrEnum):
    PENDING = "pending"  # recorded, job not yet on the queue
    QUEUED = "queued"


class Broadcast(Model):
    """A paid template broadcast of a trip: the request and its estimate, kept for good (no TTL) as the
    ledger's durable part. ``broadcast_id`` is also the job id of its log entries. What the log says about
    it (counts, what Meta billed) is copied into ``observed`` when the ledger is read: the log expires."""

    class Meta:
        table_name = "broadcasts"

    trip_id = UnicodeAttribute(hash_key=True)
    broadcast_id = UnicodeAttribute(range_key=True)
    template = UnicodeAttribute()
    language = UnicodeAttribute()
    category = UnicodeAttribute()
    parameters = ListAttribute(of=UnicodeAttribute)
    active_within_days = NumberAttribute()
    active_since = UTCDateTimeAttribute()
    estimated_count = NumberAttribute()
    rate_rupiah = NumberAttribute()
    estimated_rupiah = NumberAttribute()
    idempotency_key = UnicodeAttribute(null=True)
    fingerprint = UnicodeAttribute()  # of the request: a reused idempotency key must mean the same broadcast
    status = UnicodeAttribute(default=BroadcastStatus.PENDING.value)
    requested_at = UTCDateTimeAttribute(default_for_new=utcnow)
    observed = JSONAttribute(null=True)  # {"entries", "statuses": {...}, "billed": {category: n}}
    observed_entries = NumberAttribute(null=True)  # log entries seen then: a later, smaller view never wins
    observed_at = UTCDateTimeAttribute(null=True)


class FanOutProgress(Model):
    """How far the fan-out of one job got: the participants up to ``cursor`` (participant id order) are in
    the chunk jobs ``0 .. next_chunk - 1`` already queued. A fan-out that runs short of time queues a
    continuation carrying the same cursor; a redelivered or redriven fan-out message resumes from here, never
    from the beginning. Written after each batch of chunks is queued (see ``jastipin.outbound.fanout``)."""

    class Meta:
        table_name = "jobs"

    job_id = UnicodeAttribute(hash_key=True)
    trip_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    cursor = UnicodeAttribute(null=True)  # the last participant id dealt with; None: from the start
    next_chunk = NumberAttribute(default=0)
    recipients = NumberAttribute(default=0)  # queued in chunks so far
    continuations = NumberAttribute(default=0)  # hand-overs to a new invocation
    done = BooleanAttribute(default=False)
    started_at = UTCDateTimeAttribute(default_for_new=utcnow)
    updated_at = UTCDateTimeAttribute(default=utcnow)
    expires_at = TTLAttribute()


class AudienceShard(Model):
    """The items holding a trip's kept audience counts (``jastipin.audience_counts``): per shard, a members
    item (one attribute per member, named by its participant id) and a histogram item. Member attributes
    have no fixed names, so the items are read and written through the low-level client; the model names
    the table."""

    class Meta:
        table_name = "audience"

    trip_id = UnicodeAttribute(hash_key=True)
    part = UnicodeAttribute(range_key=True)  # m00 .. m63 (members), h00 .. h63 (histograms)
    hist: MapAttribute[str, Any] = MapAttribute(null=True)  # type: ignore[no-untyped-call]


ALL_MODELS: dict[str, type[Model]] = {
    "trips_table": Trip,
    "participants_table": Participant,
    "contacts_table": Contact,
    "products_table": Product,
    "notifications_log_table": NotificationLog,
    "broadcasts_table": Broadcast,
    "jobs_table": FanOutProgress,
    "audience_table": AudienceShard,
}


def bind_tables(settings: Common) -> None:
    """Point the models of the tables a function reads at this deployment's names (idempotent); a function's
    settings name only its own tables (``jastipin.settings``), the others stay unbound."""
    for field, model in ALL_MODELS.items():
        name = getattr(settings, field, None)
        if name is None:
            continue
        model.Meta.table_name = name
        # PynamoDB caches the connection with the table name inside; drop it so the new name takes effect.
        model._connection = None


LOG_KEY_SEPARATOR = "|"


def log_key(job_id: str, participant_id: str) -> str:
    """A log entry's key as one string: sent with each message as ``biz_opaque_callback_data``."""
    return f"{job_id}{LOG_KEY_SEPARATOR}{participant_id}"


def parse_log_key(value: str | None) -> tuple[str, str] | None:
    job_id, separator, participant_id = (value or "").partition(LOG_KEY_SEPARATOR)
    if not separator or not job_id or not participant_id or len(value or "") > 200:
        return None
    return job_id, participant_id


def log_expiry(settings: LogRetention, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(days=settings.log_ttl_days)

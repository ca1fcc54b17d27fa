"""Inbound commands, statuses and preferences against moto (mock_aws)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jastipin import texts
from jastipin.data.models import Contact, NotificationLog, Participant, Product, Trip, utcnow
from jastipin.inbound.handler import CommandHandler
from jastipin.inbound.payload import (
    InboundMessage,
    StatusUpdate,
    UserPreference,
    WebhookContact,
    WebhookPayload,
    signature_valid,
)
from jastipin.inbound.preferences import apply_preference
from jastipin.inbound.statuses import apply_status
from jastipin.outbound.jobs import AutoReplyJob, Job, parse_job

PHONE = "6281311112222"


class Queued:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def send(self, job: Job, **_: object) -> None:
        self.jobs.append(job)


def say(
    handler: CommandHandler,
    text: str,
    *,
    msg_id: str = "wamid.in1",
    phone: str | None = PHONE,
    user_id: str | None = None,
) -> str | None:
    message = InboundMessage.model_validate(
        {
            "id": msg_id,
            "from": phone,
            "from_user_id": user_id,
            "timestamp": str(int(utcnow().timestamp())),
            "type": "text",
            "text": {"body": text},
        }
    )
    contacts = [WebhookContact(wa_id=phone, user_id=user_id, profile={"name": "Ani"})]
    return handler.handle_message(message, contacts)


@pytest.fixture
def handler(settings):
    Trip("jpn25", title="Jastip Jepang", owner_phone="+6281234567890").save()
    Trip("kor26", title="Jastip Korea", owner_phone="+6281234567890").save()
    return CommandHandler(Queued())


def member(trip: str, phone: str = "+" + PHONE):
    return next(iter(Participant.query(trip)), None)


def test_join_registers_opens_window_and_queues_the_reply(handler):
    assert say(handler, "join JPN25!") == texts.joined("Jastip Jepang")
    participant = member("jpn25")
    assert participant.status == "active" and participant.phone == "+" + PHONE and participant.name == "Ani"
    contact = Contact.get("+" + PHONE)
    assert contact.last_trip_id == "jpn25" and utcnow() - contact.last_inbound_at < timedelta(minutes=1)
    (job,) = handler._queues.jobs
    assert (
        job.kind == "auto_reply"
        and job.always_in_window
        and job.message.startswith("Terima kasih sudah join!")
    )
    assert job.participants[0].phone == "+" + PHONE and job.participants[0].id == participant.participant_id


def test_info_lists_three_latest_products(handler):
    say(handler, "JOIN jpn25")
    for n, price in enumerate([1000, 2000, 3000, 450000]):
        Product("jpn25", f"prd_{n:04d}", name=f"Produk {n}", price=price).save()
    reply = say(handler, "info", msg_id="wamid.in2")
    assert reply == (
        "Berikut produk terbaru trip Jastip Jepang:\n1. Produk 3 - Rp450.000\n"
        "2. Produk 2 - Rp3.000\n3. Produk 1 - Rp2.000"
    )


def test_stop_then_rejoin(handler):
    say(handler, "JOIN jpn25")
    joined_at = member("jpn25").joined_at
    assert say(handler, "STOP", msg_id="wamid.in2").startswith("Anda berhenti menerima notifikasi.")
    stopped = member("jpn25")
    assert stopped.status == "unsubscribed" and stopped.unsubscribed_at is not None
    say(handler, "join jpn25", msg_id="wamid.in3")
    again = member("jpn25")
    assert again.status == "active" and again.unsubscribed_at is None and again.joined_at == joined_at


def _user_id_changed(handler: CommandHandler, old: str, new: str, phone: str | None = None) -> None:
    message = InboundMessage.model_validate(
        {
            "id": f"wamid.sys-{new}",
            "from": phone,
            "from_user_id": old,
            "timestamp": str(int(utcnow().timestamp())),
            "type": "system",
            "system": {"body": "User changed their user id", "type": "user_changed_user_id", "user_id": new},
        }
    )
    assert handler.handle_message(message, []) is None  # nothing to answer


def test_a_user_whose_user_id_changes_keeps_their_trips_window_and_counts(handler):
    """A username user (no phone) joins two trips and STOPs one; Meta then reports their business-scoped user
    id changed. Their memberships, window and marketing choice follow them to the new id; the trips' audience
    counts still count them once; messages from the new id act on the same memberships. Repeating the change
    (a redelivered webhook) changes nothing more."""
    from jastipin import audience_counts
    from jastipin.audience import broadcast_filter, count

    for trip in ("jpn25", "kor26"):
        audience_counts.rebuild(trip)  # counted from the start (a new trip is)
    say(handler, "JOIN jpn25", phone=None, user_id="ID.old")
    say(handler, "JOIN kor26", phone=None, user_id="ID.old", msg_id="wamid.in2")
    say(handler, "STOP kor26", phone=None, user_id="ID.old", msg_id="wamid.in3")
    Contact("bsuid:ID.old").update(actions=[Contact.marketing_opt_out.set(True)])
    handler._queues.jobs.clear()
    everyone = broadcast_filter(30, marketing=False)
    before = {t: audience_counts.estimate(Trip.get(t), everyone) for t in ("jpn25", "kor26")}
    assert before == {"jpn25": 1, "kor26": 0}

    for _ in range(2):
        _user_id_changed(handler, "ID.old", "ID.new")
    assert handler._queues.jobs == []
    assert {(m.trip_id, m.user_id, m.wa_key, m.status) for m in Participant.scan()} == {
        ("jpn25", "ID.new", "bsuid:ID.new", "active"),
        ("kor26", "ID.new", "bsuid:ID.new", "unsubscribed"),
    }
    assert {(c.wa_key, c.moved_to) for c in Contact.scan()} == {
        ("bsuid:ID.new", None),
        ("bsuid:ID.old", "ID.new"),
    }
    contact = Contact.get("bsuid:ID.new")
    assert contact.marketing_opt_out and contact.last_trip_id == "kor26" and contact.last_inbound_at
    for trip in ("jpn25", "kor26"):
        assert audience_counts.estimate(Trip.get(trip), everyone) == before[trip] == count(trip, everyone)

    assert "Jastip Jepang" in say(handler, "INFO jpn25", phone=None, user_id="ID.new", msg_id="wamid.in4")
    say(handler, "STOP jpn25", phone=None, user_id="ID.new", msg_id="wamid.in5")
    assert {m.status for m in Participant.scan()} == {"unsubscribed"}  # the same membership, not a new one


def test_with_a_phone_known_a_user_id_change_only_updates_the_stored_id(handler):
    say(handler, "JOIN jpn25", user_id="ID.old")
    _user_id_changed(handler, "ID.old", "ID.new", phone=PHONE)
    (membership,) = Participant.scan()
    assert (membership.wa_key, membership.user_id) == ("+" + PHONE, "ID.new")
    assert Contact.get("+" + PHONE).user_id == "ID.new"


def test_phone_in_two_trips_acts_on_most_recent_unless_slug_given(handler):
    say(handler, "JOIN jpn25")
    say(handler, "JOIN kor26", msg_id="wamid.in2")
    assert "Jastip Korea" in say(handler, "INFO", msg_id="wamid.in3")
    say(handler, "STOP jpn25", msg_id="wamid.in4")
    assert member("jpn25").status == "unsubscribed" and member("kor26").status == "active"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("JOIN nope99", texts.trip_not_found("nope99")),
        ("halo kak", texts.help_text()),
        ("JOIN", texts.join_needs_slug()),
        ("INFO", texts.not_joined()),
        ("STOP", texts.not_joined()),
    ],
)
def test_helpful_replies(handler, text, expected):
    assert say(handler, text) == expected


def test_business_scoped_user_without_phone(handler):
    assert say(handler, "JOIN jpn25", phone=None, user_id="ID.987") == texts.joined("Jastip Jepang")
    participant = member("jpn25")
    assert (
        participant.phone is None and participant.user_id == "ID.987" and participant.wa_key == "bsuid:ID.987"
    )


def _log(status: str = "sent") -> NotificationLog:
    entry = NotificationLog(
        "job_1",
        "p_1",
        trip_id="jpn25",
        message_type="product_update",
        status=status,
        provider_msg_id="wamid.out1",
        attempts=1,
        created_at="x",
        updated_at="x",
        expires_at=utcnow() + timedelta(days=3),
    )
    entry.save()
    return entry


def test_only_statuses_that_can_change_the_log_are_queued():
    from jastipin.inbound.statuses import status_worth_keeping

    kept = [
        s
        for s in ("sent", "delivered", "read", "failed", "deleted", "")
        if status_worth_keeping(StatusUpdate(id="wamid.x", status=s))
    ]
    assert kept == ["delivered", "read", "failed"]


def test_an_inbound_queue_body_is_a_message_or_a_status():
    from pydantic import ValidationError

    from jastipin.inbound.queued import InboundWork, QueuedStatus, read_queued

    status = QueuedStatus(status=StatusUpdate(id="wamid.x", status="read", biz_opaque_callback_data="j|p"))
    assert read_queued(status.to_body()) == status
    message = InboundWork(message=InboundMessage.model_validate({"id": "wamid.in", "from": PHONE}))
    assert read_queued(message.to_body()) == message
    for unreadable in ('{"status": {"status": "read"}}', '{"jobId": 1}', "[]"):
        with pytest.raises(ValidationError):
            read_queued(unreadable)
    with pytest.raises(ValueError):
        read_queued("not json")


def test_statuses_move_forward_only_and_duplicates_are_harmless(settings):
    _log()
    assert apply_status(StatusUpdate(id="wamid.out1", status="read"))
    assert not apply_status(StatusUpdate(id="wamid.out1", status="delivered"))  # late, out of order
    assert not apply_status(StatusUpdate(id="wamid.out1", status="read"))  # duplicate
    assert NotificationLog.get("job_1", "p_1").status == "read"


def test_failed_status_carries_the_error_code_and_pricing(settings):
    _log()
    status = StatusUpdate.model_validate(
        {
            "id": "wamid.out1",
            "status": "failed",
            "errors": [{"code": 131026, "title": "undeliverable"}],
            "pricing": {"billable": False, "category": "utility"},
        }
    )
    assert apply_status(status)
    entry = NotificationLog.get("job_1", "p_1")
    assert (entry.status, entry.error_code, entry.billable, entry.pricing_category) == (
        "failed",
        131026,
        False,
        "utility",
    )


def test_marketing_preferences(settings):
    Contact("+" + PHONE, participant_id="p_1").save()
    apply_preference(UserPreference(wa_id=PHONE, category="marketing_messages", value="stop"))
    assert Contact.get("+" + PHONE).marketing_opt_out is True
    apply_preference(UserPreference(wa_id=PHONE, category="marketing_messages", value="resume"))
    assert Contact.get("+" + PHONE).marketing_opt_out is False


def test_signature():
    body = '{"pesan":"halo 😀 é"}'.encode()
    import hashlib
    import hmac

    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature_valid("s3cret", body, good)
    assert not signature_valid("s3cret", body + b" ", good)
    assert not signature_valid("other", body, good)
    assert not signature_valid("s3cret", body, None)
    assert not signature_valid("s3cret", body, good.replace("sha256=", "sha1="))


def test_payload_ignores_unknown_fields():
    payload = WebhookPayload.model_validate(
        {
            "object": "whatsapp_business_account",
            "new_thing": 1,
            "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"foo": "bar"}}]}],
        }
    )
    assert payload.entry[0].changes[0].value.messages == []


def test_status_with_our_log_key_updates_by_key_and_checks_the_wamid(settings):
    _log()
    keyed = {"id": "wamid.out1", "status": "delivered", "biz_opaque_callback_data": "job_1|p_1"}
    assert apply_status(StatusUpdate.model_validate(keyed))
    assert NotificationLog.get("job_1", "p_1").status == "delivered"
    forged = {"id": "wamid.other", "status": "read", "biz_opaque_callback_data": "job_1|p_1"}
    assert not apply_status(StatusUpdate.model_validate(forged))  # the key must belong to that wamid
    early = {"id": "wamid.out9", "status": "read", "biz_opaque_callback_data": "job_9|p_9"}
    assert apply_status(StatusUpdate.model_validate(early))  # before its outcome: kept, not lost
    stub = NotificationLog.get("job_9", "p_9")
    assert (stub.status, stub.provider_msg_id, stub.trip_id) == ("read", "wamid.out9", None)
    assert NotificationLog.get("job_1", "p_1").status == "delivered"


def test_a_late_older_message_never_moves_the_window_back(settings):
    from jastipin.inbound.identity import Identity, touch_contact

    who = Identity(phone="+" + PHONE, user_id=None)
    now = utcnow().replace(minute=10, second=0, microsecond=0)
    created, new_hour = touch_contact(who, "Ani", now)
    assert created.last_inbound_at == now and created.marketing_opt_out is False and new_hour
    assert created.participant_id == who.participant_id
    Contact("+" + PHONE).update(actions=[Contact.marketing_opt_out.set(True)])
    late, new_hour = touch_contact(who, "Ani S.", now - timedelta(hours=2))  # delivered late: older message
    assert late.last_inbound_at == now and late.name == "Ani S." and late.marketing_opt_out is True
    assert not new_hour
    newer, new_hour = touch_contact(
        Identity(phone="+" + PHONE, user_id="ID.77"), None, now + timedelta(minutes=5)
    )
    stored = Contact.get("+" + PHONE)
    assert newer.last_inbound_at == stored.last_inbound_at == now + timedelta(minutes=5)
    assert not new_hour  # the same hour of activity: the audience counts stay
    assert stored.user_id == "ID.77" and stored.name == "Ani S."
    assert stored.participant_id == who.participant_id
    _, new_hour = touch_contact(who, None, now + timedelta(hours=1))
    assert new_hour


@pytest.mark.parametrize("header", ["sha256=é", "sha256=" + "ａ" * 64, "sha256=\u0000"])
def test_a_non_ascii_signature_is_refused_not_a_crash(header):
    assert signature_valid("secret", b"{}", header) is False


def test_queue_bodies_escape_what_sqs_refuses_and_read_back_the_same():
    import json

    from jastipin.inbound.queued import InboundWork

    text = "JOIN jpn25 \ufffe\uffff ok 😀"
    work = InboundWork.model_validate(
        {"message": {"id": "wamid.x", "from": PHONE, "type": "text", "text": {"body": text}}}
    )
    body = work.to_body()
    assert "\ufffe" not in body and "\uffff" not in body and "😀" in body
    assert InboundWork.model_validate_json(body).message.text_body == text
    assert json.loads(body)["message"]["from"] == PHONE
    job = AutoReplyJob(
        job_id="j", kind="auto_reply", trip_id="t", message=text, participants=[], template="auto_reply"
    )
    assert "\uffff" not in job.to_body() and parse_job(job.to_body()).message == text


def test_a_malformed_message_in_a_batch_does_not_drop_the_valid_ones(handler, capsys):
    """One signed payload: a message without an id, a status with no wamid, a JOIN and a valid status. The
    JOIN and the status are queued (and the status, read back, applied); the two malformed items are logged
    and counted."""
    from jastipin.inbound.intake import WebhookIntake
    from jastipin.inbound.payload import WebhookPayload
    from jastipin.inbound.queued import InboundWork, QueuedStatus, read_queued

    _log()
    payload = WebhookPayload.model_validate(
        {
            "entry": [
                {
                    "changes": [
                        {
                            "value": {
                                "contacts": [{"wa_id": PHONE, "profile": {"name": "Ani"}}],
                                "messages": [
                                    {"from": PHONE, "type": "text", "text": {"body": "JOIN jpn25"}},
                                    {
                                        "id": "wamid.in-ok",
                                        "from": PHONE,
                                        "timestamp": str(int(utcnow().timestamp())),
                                        "type": "text",
                                        "text": {"body": "JOIN jpn25"},
                                    },
                                ],
                                "statuses": [
                                    {"status": "read"},
                                    {"id": "wamid.out1", "status": "delivered"},
                                ],
                            }
                        }
                    ]
                }
            ]
        }
    )
    queued: list[str] = []

    class Sqs:
        def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
            queued.extend(e["MessageBody"] for e in Entries)
            return {"Successful": Entries}

    summary = WebhookIntake(Sqs(), "queue-url").accept(payload)
    assert summary == {"queued": 1, "statuses": 1, "preferences": 0, "malformed": 2}
    message, status = (read_queued(body) for body in queued)
    assert isinstance(message, InboundWork) and message.message.id == "wamid.in-ok"
    assert isinstance(status, QueuedStatus) and status.status.id == "wamid.out1"
    assert NotificationLog.get("job_1", "p_1").status == "sent"  # nothing applied in the webhook
    assert apply_status(status.status)
    assert NotificationLog.get("job_1", "p_1").status == "delivered"
    assert "WebhookItemMalformed" in capsys.readouterr().out


def test_a_status_kept_before_its_outcome_lives_as_long_as_the_log(settings) -> None:
    """A status that comes before its send's outcome is kept as a stub; the stub expires with the log's
    configured TTL (LOG_TTL_DAYS), not a fixed three days."""
    from jastipin.inbound.payload import WebhookPayload
    from jastipin.inbound.processor import InboundProcessor
    from jastipin.inbound.queued import QueuedStatus

    payload = WebhookPayload.model_validate(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "waba",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "1", "phone_number_id": "123"},
                                "statuses": [
                                    {
                                        "id": "wamid.early",
                                        "status": "delivered",
                                        "timestamp": "1700000000",
                                        "recipient_id": "6281200000001",
                                        "biz_opaque_callback_data": "job_9|p_9",
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )
    (status,) = payload.entry[0].changes[0].value.statuses
    processor = InboundProcessor(Queued(), settings.idempotency_table, log_ttl_days=10)  # type: ignore[arg-type]
    assert processor.apply(QueuedStatus(status=status))
    stub = NotificationLog.get("job_9", "p_9")
    assert stub.status == "delivered" and stub.trip_id is None
    assert abs(stub.expires_at - (utcnow() + timedelta(days=10))) < timedelta(minutes=1)


def test_a_message_older_than_the_dedup_window_is_stale_by_the_processors_clock(settings) -> None:
    """The age of a message is measured on the processor's clock: the same message is handled six days after
    Meta's timestamp and ignored (a replay) just over seven days after it."""
    from datetime import UTC, datetime

    from jastipin.inbound.processor import InboundProcessor
    from jastipin.inbound.queued import InboundWork

    sent = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    now = [sent + timedelta(days=6)]
    processor = InboundProcessor(Queued(), settings.idempotency_table, clock=lambda: now[0])  # type: ignore[arg-type]
    handled: list[dict[str, str]] = []

    def handle_once(*, key: dict[str, str], **_: object) -> dict[str, bool]:
        handled.append(key)
        return {"replied": True}

    processor._handle_once = handle_once  # the idempotent handling itself is not what is tested here
    message = {"id": "wamid.old", "from": PHONE, "timestamp": str(int(sent.timestamp())), "type": "text"}
    work = InboundWork.model_validate({"message": {**message, "text": {"body": "JOIN jpn25"}}})
    assert processor.handle(work) is True and handled == [{"message_id": "wamid.old"}]
    now[0] = sent + timedelta(days=7, seconds=1)
    assert processor.handle(work) is False and len(handled) == 1
    unreadable = InboundWork.model_validate(
        {"message": {**message, "id": "wamid.when", "timestamp": "soon", "text": {"body": "JOIN jpn25"}}}
    )
    assert processor.handle(unreadable) is True  # no readable time: taken as sent now, by the same clock

"""Broadcasts, proofs, the template registry and the ledger against moto (mock_aws) and a scripted WhatsApp
API (httpx.MockTransport): the estimate counts exactly who the fan-out sends to; a broadcast is queued once
per idempotency key; proofs reach the jastiper as an image or, outside the window, as the image template."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws

from jastipin import audience, broadcasts, ledger, proofs, templates
from jastipin.data.models import (
    Broadcast,
    Contact,
    NotificationLog,
    Participant,
    ParticipantStatus,
    Trip,
    utcnow,
)
from jastipin.errors import Conflict, NotFound, Unprocessable
from jastipin.ids import stable_id
from jastipin.inbound.payload import StatusUpdate
from jastipin.inbound.statuses import apply_status
from jastipin.outbound.delivery import Deadline, Sender
from jastipin.outbound.jobs import BroadcastJob, JobKind, parse_job
from jastipin.outbound.queues import JobQueues
from localrun.cfn_yaml import load_template
from localrun.stack import LocalStack
from tests.conftest import EVENTS, REGION, ROOT
from tests.unit.conftest import RecordingQueues
from tests.unit.limiters import TokenBucket

TRIP = "jpn25"
OWNER = "+6281234567890"
TEMPLATE = load_template(ROOT / "template.yaml")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """conftest's ``aws``, with template.yaml parsed once for the module (most of each test's set-up)."""
    monkeypatch.setattr("localrun.stack.load_template", lambda _path: copy.deepcopy(TEMPLATE))
    with mock_aws():
        yield LocalStack(ROOT / "template.yaml", endpoint_url=None, region=REGION).create()  # type: ignore[arg-type]


def phone(n: int) -> str:
    return f"+62813000{n:05d}"


def pid(n: int) -> str:
    return stable_id("p", phone(n))


def member(
    n: int,
    *,
    joined_days_ago: float = 30,
    inbound_days_ago: float | None = 1,
    unsubscribed: bool = False,
    marketing_opt_out: bool = False,
    trip: str = TRIP,
) -> None:
    now = utcnow()
    Participant(
        trip,
        pid(n),
        wa_key=phone(n),
        phone=phone(n),
        name=f"P{n}",
        status=(ParticipantStatus.UNSUBSCRIBED if unsubscribed else ParticipantStatus.ACTIVE).value,
        joined_at=now - timedelta(days=joined_days_ago),
        last_active_at=now - timedelta(days=joined_days_ago),
    ).save()
    contact = Contact(phone(n), participant_id=pid(n), phone=phone(n), marketing_opt_out=marketing_opt_out)
    if inbound_days_ago is not None:
        contact.last_inbound_at = now - timedelta(days=inbound_days_ago)
    contact.save()


@pytest.fixture
def trip(settings) -> Trip:
    trip = Trip(TRIP, title="Jastip Jepang", owner_phone=OWNER)
    trip.save()
    return trip


@pytest.fixture
def mixed_audience(trip) -> dict[str, list[int]]:
    """0-2 active; 3 joined 2 days ago, never wrote; 4 opted out of marketing; 5 inactive; 6 stopped."""
    for n in range(3):
        member(n)
    member(3, joined_days_ago=2, inbound_days_ago=None)
    member(4, marketing_opt_out=True)
    member(5, joined_days_ago=40, inbound_days_ago=9)
    member(6, unsubscribed=True)
    member(7, trip="kor26")  # another trip's member
    return {"marketing": [0, 1, 2, 3], "utility": [0, 1, 2, 3, 4]}


@pytest.fixture
def queues(settings) -> JobQueues:
    return JobQueues(boto3.client("sqs", region_name=REGION), settings)


def queued(settings, url_attr: str = "broadcast_queue_url") -> list[dict]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(
        QueueUrl=getattr(settings, url_attr), MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", [])
    return messages


def request(**fields) -> broadcasts.BroadcastRequest:
    return broadcasts.BroadcastRequest.model_validate(
        {"template": "trip_reminder", "parameters": ["Jastip Jepang"], **fields}
    )


# ---------------------------------------------------------------- registry and rates


def test_registry_defaults_and_validation(settings):
    registry = templates.registry(settings)
    assert registry.names() == ["product_update", "proof_received", "trip_reminder"]
    assert registry.get("trip_reminder").category is templates.TemplateCategory.MARKETING
    with pytest.raises(Unprocessable) as unknown:
        registry.get("nope")
    assert unknown.value.field == "template" and "trip_reminder" in unknown.value.message
    with pytest.raises(Unprocessable) as missing:
        registry.ref("product_update", ["Jastip Jepang"])
    assert missing.value.field == "parameters"
    assert "takes 2 parameter(s), got 1" in missing.value.message
    ref = registry.ref("proof_received", ["Ani", "ORD-1"], header_image_url="https://x.test/a.jpg")
    assert ref.model_dump(exclude_none=True) == {
        "name": "proof_received",
        "language": "id",
        "parameters": ["Ani", "ORD-1"],
        "category": "utility",
        "header_image_url": "https://x.test/a.jpg",
    }


def test_registry_and_rates_come_from_configuration(settings, monkeypatch):
    from jastipin.settings import Settings

    monkeypatch.setenv(
        "TEMPLATES_JSON",
        json.dumps([{"name": "trip_reminder", "language": "en", "category": "utility", "parameters": 2}]),
    )
    monkeypatch.setenv("RATE_RUPIAH_JSON", '{"utility": 20}')
    configured = Settings()  # type: ignore[call-arg]
    spec = templates.registry(configured).get("trip_reminder")
    assert (spec.language, spec.category, spec.parameters) == ("en", "utility", 2)
    assert templates.rates(configured) == {"authentication": 35, "marketing": 35, "service": 0, "utility": 20}
    assert templates.rates(settings) == {"authentication": 35, "marketing": 35, "service": 0, "utility": 35}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_RUPIAH_JSON", '{"promo": 1}'),
        ("RATE_RUPIAH_JSON", "{oops"),
        ("TEMPLATES_JSON", '[{"name": "x"}]'),
    ],
)
def test_bad_configuration_fails_at_start_up_naming_the_variable(settings, monkeypatch, name, value):
    from pydantic import ValidationError

    from jastipin.settings import Settings

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        Settings()  # type: ignore[call-arg]
    assert name.lower() in str(error.value)


# ---------------------------------------------------------------- audience and estimate


@pytest.mark.parametrize(("template", "params"), [("trip_reminder", 1), ("product_update", 2)])
def test_estimate_counts_exactly_who_the_fan_out_queues(settings, mixed_audience, template, params):
    category = templates.registry(settings).get(template).category.value
    query = broadcasts.EstimateQuery(template=template)
    estimate = broadcasts.estimate(TRIP, query, settings)
    expected = sorted(pid(n) for n in mixed_audience[category])
    assert (estimate.participants, estimate.rate_rupiah) == (len(expected), 35)
    assert estimate.view()["text"] == f"Kirim pesan ke {len(expected)} peserta = Rp{len(expected) * 35}"

    job = BroadcastJob(
        job_id="bc_1",
        kind=JobKind.BROADCAST,
        trip_id=TRIP,
        template_ref=templates.registry(settings).ref(template, ["x"] * params),
        audience=audience.broadcast_filter(7, marketing=category == "marketing"),
    )
    sent = RecordingQueues()
    sender = Sender(settings.model_copy(update={"chunk_size": 2}), sent, None, TokenBucket(10_000))
    assert sender.fan_out(job) == len(expected)
    assert sorted(r.id for j, _, _ in sent.sent for r in j.participants) == expected
    assert [len(j.participants) for j, _, _ in sent.sent] == [2] * (len(expected) // 2) + [1] * (
        len(expected) % 2
    )


def test_active_within_days_widens_the_audience(settings, mixed_audience):
    week = broadcasts.estimate(TRIP, broadcasts.EstimateQuery(template="trip_reminder"), settings)
    month = broadcasts.estimate(
        TRIP, broadcasts.EstimateQuery(template="trip_reminder", active_within_days=10), settings
    )
    assert (week.participants, month.participants) == (4, 5)  # member 5 wrote 9 days ago


def test_the_spec_sentence(settings, trip):
    for n in range(100):
        member(n)
    estimate = broadcasts.estimate(TRIP, broadcasts.EstimateQuery(template="trip_reminder"), settings)
    assert estimate.view() == {
        "trip_id": TRIP,
        "template": "trip_reminder",
        "category": "marketing",
        "language": "id",
        "active_within_days": 7,
        "participants": 100,
        "rate_rupiah": 35,
        "total_rupiah": 3500,
        "currency": "IDR",
        "text": "Kirim pesan ke 100 peserta = Rp3.500",
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "template"),
        ({"template": "trip_reminder", "active_within_days": "0"}, "active_within_days"),
        ({"template": "trip_reminder", "active_within_days": "-3"}, "active_within_days"),
        ({"template": "trip_reminder", "active_within_days": "1000"}, "active_within_days"),
        ({"template": "trip_reminder", "active_within_days": "seminggu"}, "active_within_days"),
        ({"template": "trip_reminder", "days": "3"}, "days"),
    ],
)
def test_estimate_query_validation(payload, field):
    from jastipin.http import HttpError, validate

    with pytest.raises(HttpError) as error:
        validate(broadcasts.EstimateQuery, payload)
    assert (error.value.status_code, error.value.field) == (422, field)


def test_unknown_trip_is_not_found(settings, queues):
    with pytest.raises(NotFound) as error:
        broadcasts.estimate("nope", broadcasts.EstimateQuery(template="trip_reminder"), settings)
    assert error.value.field == "tripId"
    with pytest.raises(NotFound):
        broadcasts.submit("nope", request(), settings, queues)


# ---------------------------------------------------------------- submitting a broadcast


def test_dry_run_queues_nothing(settings, mixed_audience, queues):
    result = broadcasts.submit(TRIP, request(dry_run=True), settings, queues)
    assert result["dry_run"] is True and result["participants"] == 4 and result["total_rupiah"] == 140
    assert queued(settings) == [] and list(Broadcast.query(TRIP)) == []


def test_broadcast_records_the_estimate_and_queues_one_fan_out_job_per_key(settings, mixed_audience, queues):
    first = broadcasts.submit(TRIP, request(idempotency_key="promo-1"), settings, queues)
    again = broadcasts.submit(TRIP, request(idempotency_key="promo-1"), settings, queues)
    assert first["broadcast_id"] == again["broadcast_id"] == first["job_id"]
    assert (first["duplicate"], again["duplicate"], first["status"]) == (False, True, "queued")
    assert first["estimate"] == {
        "participants": 4,
        "rate_rupiah": 35,
        "total_rupiah": 140,
        "currency": "IDR",
        "text": "Kirim pesan ke 4 peserta = Rp140",
    }
    (message,) = queued(settings)
    assert message["Attributes"]["MessageGroupId"] == TRIP
    job = parse_job(message["Body"])
    assert job.is_fan_out and job.kind is JobKind.BROADCAST and job.job_id == first["broadcast_id"]
    assert job.template_ref.model_dump() == {
        "name": "trip_reminder",
        "language": "id",
        "parameters": ["Jastip Jepang"],
        "category": "marketing",
        "header_image_url": None,
        "header_image_id": None,
    }
    assert job.audience.marketing is True
    # 7 days back from the start of this hour: the cut-off the kept counts answer exactly
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    assert job.audience.active_since in {hour - timedelta(days=7), hour - timedelta(days=7, hours=1)}
    record = Broadcast.get(TRIP, first["broadcast_id"])
    assert (record.estimated_count, record.estimated_rupiah, record.status) == (4, 140, "queued")


def test_same_key_for_another_broadcast_is_a_conflict(settings, mixed_audience, queues):
    broadcasts.submit(TRIP, request(idempotency_key="promo-1"), settings, queues)
    with pytest.raises(Conflict) as error:
        broadcasts.submit(TRIP, request(idempotency_key="promo-1", parameters=["Lain"]), settings, queues)
    assert error.value.field == "idempotency_key"


def test_a_pending_broadcast_is_queued_again_by_the_retry(settings, mixed_audience, queues, monkeypatch):
    def boom(job, **_):
        raise RuntimeError("SQS down")

    monkeypatch.setattr(queues, "send", boom)
    with pytest.raises(RuntimeError):
        broadcasts.submit(TRIP, request(idempotency_key="promo-1"), settings, queues)
    assert [b.status for b in Broadcast.query(TRIP)] == ["pending"]
    monkeypatch.undo()
    result = broadcasts.submit(TRIP, request(idempotency_key="promo-1"), settings, queues)
    assert result["duplicate"] is True and result["status"] == "queued"
    assert len(queued(settings)) == 1


def test_without_a_key_each_request_is_a_new_broadcast(settings, mixed_audience, queues):
    one = broadcasts.submit(TRIP, request(), settings, queues)
    two = broadcasts.submit(TRIP, request(), settings, queues)
    assert one["broadcast_id"] != two["broadcast_id"]


def test_bad_template_requests_are_rejected_before_anything_is_queued(settings, trip, queues):
    for body, field in [
        ({"template": "nope", "parameters": []}, "template"),
        ({"template": "trip_reminder", "parameters": []}, "parameters"),
        ({"template": "product_update", "parameters": ["a", "b", "c"]}, "parameters"),
    ]:
        with pytest.raises(Unprocessable) as error:
            broadcasts.submit(TRIP, broadcasts.BroadcastRequest.model_validate(body), settings, queues)
        assert error.value.field == field
    assert queued(settings) == [] and list(Broadcast.query(TRIP)) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "trip_reminder", "parameters": ["a\nb"]}, "parameters.0"),
        ({"template": "trip_reminder", "parameters": [""]}, "parameters.0"),
        ({"template": "trip_reminder", "parameters": ["Jastip \u202eJepang"]}, "parameters.0"),
        ({"template": "trip_reminder", "parameters": ["Jastip\x1bJepang"]}, "parameters.0"),
        ({"template": "trip_reminder", "active_within_days": -1}, "active_within_days"),
        ({"template": "trip_reminder", "active_within_days": 31}, "active_within_days"),
        ({"template": "trip_reminder", "idempotency_key": "a b"}, "idempotency_key"),
        ({"template": "trip_reminder", "dry_run": "perhaps"}, "dry_run"),
    ],
)
def test_broadcast_body_validation_names_the_field(body, field):
    from jastipin.http import HttpError, validate

    with pytest.raises(HttpError) as error:
        validate(broadcasts.BroadcastRequest, body)
    assert error.value.field == field


# ---------------------------------------------------------------- sending a broadcast


def test_broadcast_sends_the_template_to_its_audience_once(settings, mixed_audience, queues, sender, graph):
    result = broadcasts.submit(TRIP, request(idempotency_key="k"), settings, queues)
    job = parse_job(queued(settings)[0]["Body"])
    sender.fan_out(job)
    (chunk,) = [j for j, _, _ in sender.queues.sent]
    sender.send_chunk(chunk, Deadline(None))
    sender.send_chunk(chunk, Deadline(None))  # SQS redelivers: nobody gets it twice
    assert sorted(graph.sent_to()) == sorted(phone(n).lstrip("+") for n in mixed_audience["marketing"])
    first = dict(graph.requests[0]["json"])
    assert first.pop("biz_opaque_callback_data") == f"{result['job_id']}|{stable_id('p', '+' + first['to'])}"
    assert first == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": graph.requests[0]["json"]["to"],
        "type": "template",
        "template": {
            "name": "trip_reminder",
            "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Jastip Jepang"}]}],
        },
    }
    log = {e.participant_id: e for e in NotificationLog.query(result["job_id"])}
    assert {e.status for e in log.values()} == {"sent"} and len(log) == 4
    assert {e.message_type for e in log.values()} == {"trip_reminder"}


def test_opt_out_and_stop_after_queueing_are_honoured_at_send_time(settings, mixed_audience, sender, graph):
    job = BroadcastJob(
        job_id="bc_1",
        kind=JobKind.BROADCAST,
        trip_id=TRIP,
        template="trip_reminder",
        template_ref=templates.registry(settings).ref("trip_reminder", ["Jastip Jepang"]),
        audience=audience.broadcast_filter(7, marketing=True),
    )
    sender.fan_out(job)
    (chunk,) = [j for j, _, _ in sender.queues.sent]
    Contact(phone(0)).update(actions=[Contact.marketing_opt_out.set(True)])
    Participant(TRIP, pid(1)).update(actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED.value)])
    sender.send_chunk(chunk, Deadline(None))
    log = {e.participant_id: (e.status, e.reason) for e in NotificationLog.query("bc_1")}
    assert log[pid(0)] == ("skipped", "marketing_opt_out")
    assert log[pid(1)] == ("skipped", "unsubscribed")
    assert sorted(graph.sent_to()) == sorted(phone(n).lstrip("+") for n in (2, 3))


def test_a_utility_broadcast_still_reaches_who_opted_out_of_marketing(
    settings, mixed_audience, sender, graph
):
    job = BroadcastJob(
        job_id="bc_2",
        kind=JobKind.BROADCAST,
        trip_id=TRIP,
        template_ref=templates.registry(settings).ref("product_update", ["Jastip Jepang", "Gundam"]),
        audience=audience.broadcast_filter(7, marketing=False),
    )
    sender.fan_out(job)
    for chunk, _, _ in sender.queues.sent:
        sender.send_chunk(chunk, Deadline(None))
    assert phone(4).lstrip("+") in graph.sent_to() and len(graph.sent_to()) == 5


# ---------------------------------------------------------------- proofs


def proof(**fields) -> proofs.ProofRequest:
    return proofs.ProofRequest.model_validate(
        {"participant_id": pid(0), "order_ref": "ORD-001", "image_url": "https://img.test/p.jpg", **fields}
    )


def owner_window(hours_ago: float | None) -> None:
    contact = Contact(OWNER, participant_id=stable_id("p", OWNER), phone=OWNER)
    if hours_ago is not None:
        contact.last_inbound_at = utcnow() - timedelta(hours=hours_ago)
    contact.save()


def test_proof_job_goes_to_the_owner_on_proof_notify(settings, mixed_audience, queues):
    job = proofs.submit(TRIP, proof(caption="Transfer Rp450.000"), settings, queues)
    (message,) = queued(settings, "proof_notify_queue_url")
    assert parse_job(message["Body"]) == job
    assert job.kind is JobKind.PROOF and job.job_id.startswith("prf_")
    assert [(r.id, r.phone) for r in job.participants] == [(stable_id("p", OWNER), OWNER)]
    assert job.caption == "Bukti dari P0 untuk pesanan ORD-001: Transfer Rp450.000"
    assert proofs.submit(TRIP, proof(caption="Transfer Rp450.000"), settings, queues).job_id == job.job_id


def test_proof_in_the_owner_window_is_an_image_with_caption(settings, mixed_audience, queues, sender, graph):
    owner_window(hours_ago=2)
    job = proofs.submit(TRIP, proof(caption="Transfer Rp450.000"), settings, queues)
    sender.send_chunk(job, Deadline(None))
    assert [r["json"] for r in graph.requests] == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": OWNER.lstrip("+"),
            "biz_opaque_callback_data": f"{job.job_id}|{stable_id('p', OWNER)}",
            "type": "image",
            "image": {
                "link": "https://img.test/p.jpg",
                "caption": "Bukti dari P0 untuk pesanan ORD-001: Transfer Rp450.000",
            },
        }
    ]
    (entry,) = NotificationLog.query(job.job_id)
    assert (entry.participant_id, entry.status, entry.message_type) == (
        stable_id("p", OWNER),
        "sent",
        "proof",
    )


@pytest.mark.parametrize("hours_ago", [None, 30])
def test_proof_outside_the_owner_window_is_the_image_template(
    settings, mixed_audience, queues, sender, graph, hours_ago
):
    owner_window(hours_ago)
    job = proofs.submit(TRIP, proof(image_url=None, media_id="1234567890"), settings, queues)
    sender.send_chunk(job, Deadline(None))
    assert [r["json"]["template"] for r in graph.requests] == [
        {
            "name": "proof_received",
            "language": {"code": "id"},
            "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"id": "1234567890"}}]},
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": "P0"}, {"type": "text", "text": "ORD-001"}],
                },
            ],
        }
    ]


def test_a_burst_of_proofs_survives_the_pair_rate_limit(
    settings, mixed_audience, queues, sender, graph, no_sleep
):
    owner_window(hours_ago=1)
    graph.fail(OWNER.lstrip("+"), (400, 131056), (400, 131056))
    jobs = [proofs.submit(TRIP, proof(order_ref=f"ORD-{n}"), settings, queues) for n in range(3)]
    for job in jobs:
        sender.send_chunk(job, Deadline(None))
    assert [next(iter(NotificationLog.query(j.job_id))).status for j in jobs] == ["sent"] * 3
    assert [r["json"]["image"]["caption"] for r in graph.requests][-3:] == [
        f"Bukti dari P0 untuk pesanan ORD-{n}" for n in range(3)
    ]
    assert no_sleep.waits == [2.0, 4.0]  # the first proof waited out the pair limit; the others went at once


def test_proof_errors_name_the_field(settings, mixed_audience, queues):
    for fields, field in [
        ({"participant_id": "p_0000000000000000"}, "participant_id"),
        ({"participant_id": stable_id("p", phone(7))}, "participant_id"),  # another trip's member
        ({"image_url": None}, "image_url"),  # neither image_url nor media_id
        ({"media_id": "123"}, "image_url"),  # both
    ]:
        with pytest.raises(Unprocessable) as error:
            proofs.submit(TRIP, proof(**fields), settings, queues)
        assert error.value.field == field
    with pytest.raises(NotFound) as unknown_trip:
        proofs.submit("nope", proof(), settings, queues)
    assert unknown_trip.value.field == "tripId"
    assert queued(settings, "proof_notify_queue_url") == []
    # A participant who stopped notifications still has orders: their proofs go through.
    assert proofs.submit(TRIP, proof(participant_id=pid(6)), settings, queues).kind is JobKind.PROOF


# ---------------------------------------------------------------- statuses and the ledger


def log_entry(
    job_id: str,
    n: int,
    status: str,
    *,
    billable: bool | None = None,
    category: str | None = None,
    pricing_type: str | None = None,
):
    now = utcnow()
    NotificationLog(
        job_id,
        pid(n),
        trip_id=TRIP,
        message_type="trip_reminder",
        status=status,
        provider_msg_id=f"wamid.{job_id}.{n}",
        attempts=1,
        billable=billable,
        pricing_category=category,
        pricing_type=pricing_type,
        created_at=now.isoformat(),
        updated_at=now.isoformat(),
        expires_at=now + timedelta(days=3),
    ).save()


def test_sent_status_is_a_no_op_and_delivered_carries_the_pricing(settings):
    log_entry("bc_1", 0, "sent")
    assert apply_status(StatusUpdate(id="wamid.bc_1.0", status="sent")) is False
    delivered = StatusUpdate.model_validate(
        {"id": "wamid.bc_1.0", "status": "delivered", "pricing": {"billable": True, "category": "marketing"}}
    )
    assert apply_status(delivered) is True
    entry = NotificationLog.get("bc_1", pid(0))
    assert (entry.status, entry.billable, entry.pricing_category) == ("delivered", True, "marketing")


def test_ledger_has_estimates_outcomes_and_billing_and_keeps_them_after_the_log(
    settings, mixed_audience, queues
):
    result = broadcasts.submit(TRIP, request(idempotency_key="k"), settings, queues)
    job_id = result["broadcast_id"]
    log_entry(job_id, 0, "read", billable=True, category="marketing")
    log_entry(job_id, 1, "delivered", billable=True, category="marketing")
    log_entry(job_id, 2, "sent")
    log_entry(job_id, 3, "failed")
    log_entry("job_product", 0, "delivered", billable=False, category="service")

    view = ledger.trip_ledger(TRIP, settings)
    (b,) = view["broadcasts"]
    assert b["estimate"]["total_rupiah"] == 140 and b["outcome"]["source"] == "log"
    assert b["outcome"]["statuses"] == {
        "queued": 0,
        "sent": 1,
        "delivered": 1,
        "read": 1,
        "failed": 1,
        "skipped": 0,
    }
    assert b["outcome"]["sent"] == 3
    assert b["outcome"]["billed"] == {"marketing": {"messages": 2, "rupiah": 70}}
    assert [j["job_id"] for j in view["jobs"]] == [job_id, "job_product"]
    assert view["jobs"][1]["billed_rupiah"] == 0
    assert view["totals"] == {"estimated_rupiah": 140, "billed_messages": 2, "billed_rupiah": 70}
    assert view["rates_rupiah"]["marketing"] == 35 and view["log_retention_days"] == 3

    # The log expires (TTL); the ledger keeps the last full view in the broadcast record.
    for n in range(2):
        NotificationLog(job_id, pid(n)).delete()
    ledger.trip_ledger(TRIP, settings)  # a partial log never overwrites the fuller view
    for entry in NotificationLog.query(job_id):
        entry.delete()
    NotificationLog("job_product", pid(0)).delete()
    later = ledger.trip_ledger(TRIP, settings)
    (b,) = later["broadcasts"]
    assert b["outcome"]["source"] == "snapshot" and b["outcome"]["entries"] == 4
    assert b["outcome"]["billed_rupiah"] == 70 and later["jobs"] == []
    assert later["totals"] == {"estimated_rupiah": 140, "billed_messages": 2, "billed_rupiah": 70}


# ---------------------------------------------------------------- sample events


@pytest.mark.parametrize("name", ["sqs_broadcast.json", "sqs_proof_notify.json"])
def test_sample_queue_events_hold_real_jobs(name):
    event = json.loads((EVENTS / name).read_text())
    for record in event["Records"]:
        assert parse_job(record["body"]).to_body() == record["body"]  # exactly what the enqueuer writes


def test_sample_api_events_parse(settings):
    for name, model in (("broadcast.json", broadcasts.BroadcastRequest), ("proof.json", proofs.ProofRequest)):
        model.model_validate_json(json.loads((EVENTS / name).read_text())["body"])
    query = json.loads((EVENTS / "broadcast_estimate.json").read_text())["queryStringParameters"]
    assert broadcasts.EstimateQuery.model_validate(query).template == "trip_reminder"


def test_the_ledger_bills_what_meta_prices_as_regular_whatever_billable_says(
    settings, mixed_audience, queues
):
    """Meta's pricing ``type`` decides: regular is billed, free_customer_service and free_entry_point are not
    (even inside or outside the 24-hour window, and even if an older ``billable`` says otherwise); an entry
    without a type falls back to ``billable``; each entry counts once."""
    job_id = broadcasts.submit(TRIP, request(idempotency_key="types"), settings, queues)["broadcast_id"]
    log_entry(job_id, 0, "read", billable=True, category="marketing", pricing_type="regular")
    log_entry(job_id, 1, "delivered", billable=True, category="utility", pricing_type="free_customer_service")
    log_entry(job_id, 2, "delivered", billable=False, category="marketing", pricing_type="free_entry_point")
    log_entry(job_id, 3, "delivered", billable=True, category="marketing")  # no type: billable decides
    log_entry(job_id, 4, "delivered", billable=False, category="utility", pricing_type="regular")
    (b,) = ledger.trip_ledger(TRIP, settings)["broadcasts"]
    assert b["outcome"]["billed"] == {
        "marketing": {"messages": 2, "rupiah": 70},
        "utility": {"messages": 1, "rupiah": 35},
    }
    assert b["outcome"]["free"] == {"free_customer_service": 1, "free_entry_point": 1}
    assert b["outcome"]["billed_messages"] == 3

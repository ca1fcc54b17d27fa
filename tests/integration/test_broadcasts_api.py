"""Broadcast, proof and ledger routes through the enqueue handler, their queues drained through the sender
handler, against a moto server over HTTP and the WhatsApp sandbox over HTTP."""

from __future__ import annotations

import copy
import json
import time
from urllib.parse import urlencode

import boto3
import pytest

from jastipin.ids import stable_id
from localrun.sandbox import webhook_envelope
from tests.conftest import REGION, load_event
from tests.harness import FakeContext
from tests.integration.test_api import create_trip
from tests.integration.test_webhook_and_sender import drain, inbound, post_webhook

TOKEN = "local-api-token"
PHONES = ["6281311112222", "6285712345678", "6287788889999"]
OWNER = "6281234567890"  # create_trip's owner_phone 081234567890


def api(
    ctx, method: str, route: str, body=None, *, query: dict | None = None, trip: str = "jpn25", token=TOKEN
):
    event = copy.deepcopy(load_event("broadcast.json"))
    path = route.replace("{tripId}", trip)
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"] = {"content-type": "application/json"}
    if token:
        event["headers"]["authorization"] = f"Bearer {token}"
    event["pathParameters"] = {"tripId": trip}
    event["rawQueryString"] = urlencode(query or {})
    if query:
        event["queryStringParameters"] = query
    event["body"] = json.dumps(body) if body is not None else None
    response = ctx.enqueue.handler(event, FakeContext())
    return response["statusCode"], json.loads(response["body"])


def estimate(ctx, **query):
    return api(ctx, "GET", "/api/trips/{tripId}/broadcasts/estimate", query=query)


def broadcast(ctx, body, **kw):
    return api(ctx, "POST", "/api/trips/{tripId}/broadcasts", body, **kw)


def proof(ctx, body, **kw):
    return api(ctx, "POST", "/api/trips/{tripId}/proofs", body, **kw)


@pytest.fixture
def joined(ctx):
    """Three participants join over WhatsApp; the third then stops marketing messages (Meta's
    ``user_preferences`` webhook)."""
    create_trip(ctx)
    for n, phone in enumerate(PHONES):
        assert post_webhook(ctx, inbound("JOIN jpn25", f"wamid.join{n}", phone=phone))[0] == 200
    drain(ctx)
    ctx.sandbox.clear()
    preference = {
        "wa_id": PHONES[2],
        "detail": "User requested to stop marketing messages",
        "category": "marketing_messages",
        "value": "stop",
        "timestamp": int(time.time()),
    }
    envelope = webhook_envelope({"user_preferences": [preference]}, phone_number_id="000000000000000")
    assert post_webhook(ctx, envelope)[0] == 200
    contact = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION).get_item(
        TableName=ctx.stack.tables["ContactsTable"], Key={"wa_key": {"S": "+" + PHONES[2]}}
    )["Item"]
    assert contact["marketing_opt_out"] == {"BOOL": True}
    return ctx


def test_estimate_broadcast_once_and_the_ledger(joined):
    ctx = joined
    status, body = estimate(ctx, template="trip_reminder")
    assert status == 200 and (body["participants"], body["text"]) == (2, "Kirim pesan ke 2 peserta = Rp70")
    assert estimate(ctx, template="product_update")[1]["participants"] == 3  # utility: consent not needed

    status, dry = broadcast(
        ctx, {"template": "trip_reminder", "parameters": ["Jastip Jepang"], "dry_run": True}
    )
    assert status == 200 and dry["dry_run"] is True and dry["participants"] == 2
    assert drain(ctx, "BroadcastQueue") == []

    body = {"template": "trip_reminder", "parameters": ["Jastip Jepang"], "idempotency_key": "promo-juni"}
    status, first = broadcast(ctx, body)
    assert status == 202 and first["status"] == "queued" and first["duplicate"] is False
    status, again = broadcast(ctx, body)
    assert status == 202 and again["broadcast_id"] == first["broadcast_id"] and again["duplicate"] is True
    assert broadcast(ctx, {**body, "parameters": ["Lain"]})[1]["error"]["field"] == "idempotency_key"

    responses = drain(ctx, "BroadcastQueue")
    assert all(r == {"batchItemFailures": []} for r in responses)
    sent = ctx.sandbox.messages()
    assert sorted(m["to"] for m in sent) == sorted(PHONES[:2])
    for m in sent:  # the log key, echoed by Meta in the statuses
        assert m["body"].pop("biz_opaque_callback_data").split("|")[1].startswith("p_")
    assert {json.dumps(m["body"], sort_keys=True) for m in sent} == {
        json.dumps(
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": phone,
                "type": "template",
                "template": {
                    "name": "trip_reminder",
                    "language": {"code": "id"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "Jastip Jepang"}]}
                    ],
                },
            },
            sort_keys=True,
        )
        for phone in PHONES[:2]
    }

    status, ledger = api(ctx, "GET", "/api/trips/{tripId}/ledger")
    assert status == 200
    (entry,) = ledger["broadcasts"]
    assert entry["broadcast_id"] == first["broadcast_id"] and entry["estimate"]["total_rupiah"] == 70
    assert entry["outcome"]["sent"] == 2 and entry["outcome"]["statuses"]["sent"] == 2
    assert ledger["totals"]["estimated_rupiah"] == 70


def test_proof_reaches_the_jastiper(joined):
    ctx = joined
    participant = stable_id("p", "+" + PHONES[0])
    status, body = proof(
        ctx,
        {"participant_id": participant, "order_ref": "ORD-7", "image_url": "https://img.test/7.jpg"},
    )
    assert status == 202 and body["status"] == "queued"
    assert drain(ctx, "ProofNotifyQueue") == [{"batchItemFailures": []}]
    (message,) = ctx.sandbox.messages()
    assert message["to"] == OWNER and message["type"] == "template"  # the jastiper never wrote to us
    assert message["body"]["template"]["components"] == [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://img.test/7.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ani"}, {"type": "text", "text": "ORD-7"}]},
    ]


ESTIMATE, BROADCASTS, PROOFS, LEDGER = (
    "GET /api/trips/{tripId}/broadcasts/estimate",
    "POST /api/trips/{tripId}/broadcasts",
    "POST /api/trips/{tripId}/proofs",
    "GET /api/trips/{tripId}/ledger",
)
NOBODY = "p_0000000000000000"
# fmt: off
BAD_INPUT = [
    # route, query or body, trip, token -> status, the field named
    (ESTIMATE, {}, "jpn25", TOKEN, 422, "template"),
    (ESTIMATE, {"template": "nope"}, "jpn25", TOKEN, 422, "template"),
    (ESTIMATE, {"template": "trip_reminder", "active_within_days": "-1"}, "jpn25", TOKEN,
     422, "active_within_days"),
    (ESTIMATE, {"template": "trip_reminder", "active_within_days": "99999"}, "jpn25", TOKEN,
     422, "active_within_days"),
    (ESTIMATE, {"template": "trip_reminder"}, "nope", TOKEN, 404, "tripId"),
    (BROADCASTS, {"template": "trip_reminder"}, "jpn25", TOKEN, 422, "parameters"),
    (BROADCASTS, {"template": "nope", "parameters": []}, "jpn25", TOKEN, 422, "template"),
    (BROADCASTS, {"template": "trip_reminder", "parameters": ["x"], "active_within_days": 0}, "jpn25", TOKEN,
     422, "active_within_days"),
    (BROADCASTS, {"template": "trip_reminder", "parameters": ["x"]}, "nope", TOKEN, 404, "tripId"),
    (BROADCASTS, {"template": "trip_reminder", "parameters": ["x"], "dry_run": "true"}, "jpn25", TOKEN,
     422, "dry_run"),
    (BROADCASTS, {"template": "trip_reminder", "parameters": ["x"], "dry_run": 0}, "jpn25", TOKEN,
     422, "dry_run"),
    (PROOFS, {"participant_id": NOBODY, "order_ref": "A", "media_id": "1"}, "jpn25", TOKEN,
     422, "participant_id"),
    (PROOFS, {"participant_id": NOBODY, "order_ref": "A"}, "jpn25", TOKEN, 422, "image_url"),
    (PROOFS, {"order_ref": "A", "media_id": "1"}, "jpn25", TOKEN, 422, "participant_id"),
    (LEDGER, {}, "nope", TOKEN, 404, "tripId"),
    (LEDGER, {}, "jpn25", None, 401, "Authorization"),
]
# fmt: on


@pytest.mark.parametrize(("route", "payload", "trip", "token", "status", "field"), BAD_INPUT)
def test_bad_input_gets_a_clear_4xx_naming_the_field(ctx, route, payload, trip, token, status, field):
    create_trip(ctx)
    method, path = route.split(" ")
    if method == "GET":
        got, body = api(ctx, method, path, query=payload, trip=trip, token=token)
    else:
        got, body = api(ctx, method, path, payload, trip=trip, token=token)
    assert (got, body["error"]["field"]) == (status, field), body
    assert drain(ctx, "BroadcastQueue") == [] and drain(ctx, "ProofNotifyQueue") == []

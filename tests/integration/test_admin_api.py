"""The admin API handler against a moto server: its own token (and only its own), counts, the DLQ listing
without personal data, redrive one / all (FIFO keeps the trip's group), purge only with confirmation, and the
recent outcomes of a trip."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tests.conftest import REGION, load_event
from tests.harness import FakeContext

ADMIN = "local-admin-token"
BACKEND = "local-api-token"
PHONES = ("+6281311112222", "+6285712345678")
SECRET_TEXT = "Ada produk baru di trip Jastip Jepang"

ADMIN_API_ROUTES = [
    ("GET", "/admin/api/queues", "/admin/api/queues", {}, None),
    (
        "GET",
        "/admin/api/queues/notifications/dlq",
        "/admin/api/queues/{queue}/dlq",
        {"queue": "notifications"},
        None,
    ),
    (
        "POST",
        "/admin/api/queues/notifications/dlq/redrive",
        "/admin/api/queues/{queue}/dlq/redrive",
        {"queue": "notifications"},
        {"all": True},
    ),
    (
        "POST",
        "/admin/api/queues/notifications/dlq/purge",
        "/admin/api/queues/{queue}/dlq/purge",
        {"queue": "notifications"},
        {"confirm": "notifications"},
    ),
    (
        "POST",
        "/admin/api/queues/notifications/purge",
        "/admin/api/queues/{queue}/purge",
        {"queue": "notifications"},
        {"confirm": "notifications"},
    ),
    (
        "GET",
        "/admin/api/trips/jpn25/outcomes",
        "/admin/api/trips/{tripId}/outcomes",
        {"tripId": "jpn25"},
        None,
    ),
]


def request_event(method, path, route, params, body, token, query=None):
    event = copy.deepcopy(load_event("admin_queues.json"))
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"] = {"content-type": "application/json"}
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    event["pathParameters"] = params
    if body is not None:
        event["body"] = json.dumps(body)
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return event


@pytest.fixture
def admin(ctx, handlers):
    module = handlers[1]["admin"]

    def call(method, path, route=None, params=None, body=None, *, token=ADMIN, query=None):
        event = request_event(method, path, route or path, params or {}, body, token, query)
        response = module.handler(event, FakeContext())
        text = response.get("body") or ""
        is_json = response["headers"].get("Content-Type", "").startswith("application/json")
        return response["statusCode"], (json.loads(text) if is_json and text else text), response

    return call


@pytest.fixture
def sqs(ctx):
    return boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)


def job_body(job_id="job_1", trip="jpn25", kind="product_update", participants=2, **extra):
    body = {
        "jobId": job_id,
        "kind": kind,
        "tripId": trip,
        "template": kind,
        "message": f"{SECRET_TEXT}: Action Figure A",
        **extra,
    }
    if participants is not None:
        body["participants"] = [
            {"id": f"p_{n:016d}", "phone": PHONES[n % 2], "name": f"Ani {n}"} for n in range(participants)
        ]
    return json.dumps(body)


def url(ctx, logical_id):
    return ctx.stack.queues[logical_id].url


def bodies(sqs, queue_url, **kw):
    found = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], **kw
        ).get("Messages", [])
        if not messages:
            return found
        found += messages


def depth(sqs, queue_url):
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


# ---------------------------------------------------------------- auth, both directions


@pytest.mark.parametrize(("method", "path", "route", "params", "body"), ADMIN_API_ROUTES)
def test_admin_routes_need_the_admin_token(admin, method, path, route, params, body):
    status, payload, _ = admin(method, path, route, params, body, token=None)
    assert status == 401 and set(payload) == {"error"}
    status, payload, _ = admin(method, path, route, params, body, token="wrong")
    assert status == 403 and set(payload) == {"error"}
    # The backend's token is a different secret: it does not open admin routes.
    status, payload, _ = admin(method, path, route, params, body, token=BACKEND)
    assert status == 403 and payload["error"]["code"] == "forbidden" and set(payload) == {"error"}


def test_admin_token_does_not_open_backend_routes(ctx):
    event = copy.deepcopy(load_event("create_trip.json"))
    event["headers"]["authorization"] = f"Bearer {ADMIN}"
    response = ctx.enqueue.handler(event, FakeContext())
    assert response["statusCode"] == 403
    assert json.loads(response["body"])["error"]["code"] == "forbidden"
    event["headers"]["authorization"] = f"Bearer {BACKEND}"
    assert ctx.enqueue.handler(event, FakeContext())["statusCode"] == 201


def test_page_is_served_without_data_and_with_a_strict_csp(admin):
    status, html, response = admin("GET", "/admin/queues", token=None)
    assert status == 200 and response["headers"]["Content-Type"].startswith("text/html")
    assert "<title>Jastipin · Queues</title>" in html and 'id="token"' in html
    csp = response["headers"]["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert "http://" not in html and "https://" not in html  # self-contained: no CDN


# ---------------------------------------------------------------- counts and the DLQ listing


def test_counts_per_queue_and_dlq(admin, ctx, sqs):
    sqs.send_message(QueueUrl=url(ctx, "NotificationsQueue"), MessageBody=job_body("job_a"))
    sqs.send_message(QueueUrl=url(ctx, "NotificationsQueue"), MessageBody=job_body("job_b"), DelaySeconds=60)
    sqs.send_message(QueueUrl=url(ctx, "ProofNotifyQueue"), MessageBody=job_body("job_c", kind="proof"))
    sqs.receive_message(QueueUrl=url(ctx, "ProofNotifyQueue"), VisibilityTimeout=60)  # in flight
    for n in range(2):
        sqs.send_message(QueueUrl=url(ctx, "NotificationsDLQ"), MessageBody=job_body(f"job_d{n}"))

    status, payload, _ = admin("GET", "/admin/api/queues")
    assert status == 200
    queues = {q["name"]: q for q in payload["queues"]}
    assert list(queues) == ["notifications", "broadcast", "proof_notify", "inbound"]
    notifications = queues["notifications"]
    assert notifications["queue"] == {"visible": 1, "in_flight": 0, "delayed": 1, "oldest_age_seconds": None}
    assert notifications["dlq"]["visible"] == 2 and notifications["dlq"]["in_flight"] == 0
    assert 0 <= notifications["dlq"]["oldest_age_seconds"] < 60
    assert queues["proof_notify"]["queue"]["in_flight"] == 1
    assert queues["broadcast"]["fifo"] is True and queues["broadcast"]["dlq"]["oldest_age_seconds"] is None
    # Looking at the DLQ left its messages visible.
    assert depth(sqs, url(ctx, "NotificationsDLQ")) == 2


def test_dlq_listing_shows_the_job_not_the_people(admin, ctx, sqs):
    dlq = url(ctx, "NotificationsDLQ")
    sqs.send_message(QueueUrl=dlq, MessageBody=job_body("job_chunk", participants=3))
    sqs.send_message(QueueUrl=dlq, MessageBody=job_body("job_fanout", participants=None))
    sqs.send_message(QueueUrl=dlq, MessageBody=f'{{"not a job": "{PHONES[0]}"}}')

    status, payload, _ = admin(
        "GET",
        "/admin/api/queues/notifications/dlq",
        "/admin/api/queues/{queue}/dlq",
        {"queue": "notifications"},
    )
    assert status == 200 and payload["queue"] == "notifications" and payload["complete"] is True
    by_job = {m["job_id"]: m for m in payload["messages"]}
    assert by_job["job_chunk"]["recipients"] == 3 and by_job["job_chunk"]["fan_out"] is False
    assert by_job["job_chunk"]["kind"] == "product_update" and by_job["job_chunk"]["trip_id"] == "jpn25"
    assert by_job["job_chunk"]["receive_count"] >= 1 and by_job["job_chunk"]["sent_at"]
    assert by_job["job_fanout"]["fan_out"] is True and by_job["job_fanout"]["recipients"] is None
    assert by_job[None]["readable"] is False
    dumped = json.dumps(payload)
    for secret in (*PHONES, "6281311112222", "Ani ", SECRET_TEXT, "not a job"):
        assert secret not in dumped
    assert depth(sqs, dlq) == 3  # still there, visible again


def test_a_dead_lettered_fan_out_shows_how_far_it_got(admin, ctx, sqs):
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    ddb.put_item(
        TableName=ctx.stack.tables["JobsTable"],
        Item={
            "job_id": {"S": "job_big"},
            "trip_id": {"S": "jpn25"},
            "kind": {"S": "product_update"},
            "cursor": {"S": "p_00000000000041ff"},
            "next_chunk": {"N": "42"},
            "recipients": {"N": "4200"},
            "continuations": {"N": "3"},
            "done": {"BOOL": False},
            "started_at": {"S": "2026-12-07T03:00:00.000000+0000"},
            "updated_at": {"S": "2026-12-07T03:01:00.000000+0000"},
            "expires_at": {"N": "1896000000"},
        },
    )
    dlq = url(ctx, "NotificationsDLQ")
    sqs.send_message(QueueUrl=dlq, MessageBody=job_body("job_big", participants=None))
    sqs.send_message(QueueUrl=dlq, MessageBody=job_body("job_new", participants=None))  # never got going
    status, payload, _ = admin(
        "GET",
        "/admin/api/queues/notifications/dlq",
        "/admin/api/queues/{queue}/dlq",
        {"queue": "notifications"},
    )
    assert status == 200
    by_job = {m["job_id"]: m for m in payload["messages"]}
    assert by_job["job_big"]["progress"] == {
        "chunks_queued": 42,
        "recipients_queued": 4200,
        "continuations": 3,
        "done": False,
        "updated_at": "2026-12-07T03:01:00Z",
    }
    assert by_job["job_new"]["progress"] is None and by_job["job_new"]["continuation"] is False
    assert "p_00000000000041ff" not in json.dumps(payload)  # the cursor is a participant: not shown


def test_unknown_queue_is_404(admin):
    status, payload, _ = admin(
        "GET", "/admin/api/queues/nope/dlq", "/admin/api/queues/{queue}/dlq", {"queue": "nope"}
    )
    assert status == 404 and payload["error"]["field"] == "queue"


# ---------------------------------------------------------------- redrive


def redrive(admin, queue, body):
    return admin(
        "POST",
        f"/admin/api/queues/{queue}/dlq/redrive",
        "/admin/api/queues/{queue}/dlq/redrive",
        {"queue": queue},
        body,
    )


def test_redrive_one_message_leaves_the_others(admin, ctx, sqs):
    dlq = url(ctx, "NotificationsDLQ")
    ids = [sqs.send_message(QueueUrl=dlq, MessageBody=job_body(f"job_{n}"))["MessageId"] for n in range(3)]
    status, result, _ = redrive(admin, "notifications", {"message_ids": [ids[1]]})
    assert status == 200
    assert result["moved"] == 1 and result["moved_ids"] == [ids[1]] and result["not_found"] == []
    assert result["done"] is True and result["remaining"] == 2
    moved = bodies(sqs, url(ctx, "NotificationsQueue"))
    assert [json.loads(m["Body"])["jobId"] for m in moved] == ["job_1"]
    assert sorted(json.loads(m["Body"])["jobId"] for m in bodies(sqs, dlq)) == ["job_0", "job_2"]


def test_redrive_of_an_unknown_id_moves_nothing(admin, ctx, sqs):
    sqs.send_message(QueueUrl=url(ctx, "NotificationsDLQ"), MessageBody=job_body())
    status, result, _ = redrive(admin, "notifications", {"message_ids": ["no-such-id"]})
    assert status == 200 and result["moved"] == 0 and result["not_found"] == ["no-such-id"]
    assert result["done"] is False and depth(sqs, url(ctx, "NotificationsDLQ")) == 1


def test_redrive_all(admin, ctx, sqs):
    dlq = url(ctx, "ProofNotifyDLQ")
    for n in range(12):
        sqs.send_message(QueueUrl=dlq, MessageBody=job_body(f"job_{n:02d}", kind="proof", participants=1))
    status, result, _ = redrive(admin, "proof_notify", {"all": True})
    assert status == 200 and result["moved"] == 12 and result["done"] is True and result["remaining"] == 0
    assert depth(sqs, dlq) == 0
    assert len(bodies(sqs, url(ctx, "ProofNotifyQueue"))) == 12


def test_redrive_to_the_fifo_broadcast_queue_keeps_the_trip_group(admin, ctx, sqs):
    dlq = url(ctx, "BroadcastDLQ")
    for n, trip in enumerate(["jpn25", "jpn25", "kor26"]):
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=job_body(f"job_{n}", trip=trip, kind="broadcast"),
            MessageGroupId=trip,
            MessageDeduplicationId=f"job_{n}-c0",
        )
    status, result, _ = redrive(admin, "broadcast", {"all": True})
    assert status == 200 and result["moved"] == 3 and result["done"] is True
    moved = bodies(sqs, url(ctx, "BroadcastQueue"), VisibilityTimeout=0)
    groups = {json.loads(m["Body"])["jobId"]: m["Attributes"]["MessageGroupId"] for m in moved}
    assert groups == {"job_0": "jpn25", "job_1": "jpn25", "job_2": "kor26"}
    assert all(m["Attributes"]["MessageDeduplicationId"].startswith("redrive-") for m in moved)


@pytest.mark.parametrize(
    "body", [{}, {"all": True, "message_ids": ["x"]}, {"message_ids": []}, {"all": "yes"}]
)
def test_redrive_needs_ids_or_all(admin, body):
    status, payload, _ = redrive(admin, "notifications", body)
    assert status == 422 and payload["error"]["code"] == "validation_error"


# ---------------------------------------------------------------- purge


@pytest.mark.parametrize(
    ("suffix", "logical_id"), [("/dlq/purge", "NotificationsDLQ"), ("/purge", "NotificationsQueue")]
)
def test_purge_needs_the_queue_name_as_confirmation(admin, ctx, sqs, suffix, logical_id):
    queue_url = url(ctx, logical_id)
    for n in range(3):
        sqs.send_message(QueueUrl=queue_url, MessageBody=job_body(f"job_{n}"))
    path, route = f"/admin/api/queues/notifications{suffix}", f"/admin/api/queues/{{queue}}{suffix}"
    for body in ({}, {"confirm": ""}, {"confirm": "broadcast"}, {"confirm": "NOTIFICATIONS"}):
        status, payload, _ = admin("POST", path, route, {"queue": "notifications"}, body)
        assert status == 422 and payload["error"]["code"] == "confirmation_required", body
        assert payload["error"]["field"] == "confirm"
    assert depth(sqs, queue_url) == 3
    status, result, _ = admin("POST", path, route, {"queue": "notifications"}, {"confirm": "notifications"})
    assert status == 200
    assert result == {
        "queue": "notifications",
        "target": "dlq" if "dlq" in suffix else "queue",
        "deleted": 3,
        "remaining": 0,
        "in_flight": 0,
        "done": True,
    }
    assert depth(sqs, queue_url) == 0


# ---------------------------------------------------------------- outcomes of a trip


def test_recent_outcomes_of_a_trip_newest_first_without_pii(admin, ctx):
    from jastipin.data.models import NotificationLog

    start = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    for n, status in enumerate(["sent", "failed", "skipped", "failed", "delivered"]):
        at = (start + timedelta(minutes=n)).isoformat()
        NotificationLog(
            f"job_{n}",
            f"p_{n:016d}",
            trip_id="jpn25",
            message_type="product_update",
            status=status,
            provider_msg_id=f"wamid.HBgNNjI4MTMxMTExMjIyMhUCABEYEjA{n}",
            attempts=3 if status == "failed" else 1,
            reason="whatsapp_error_131026" if status == "failed" else None,
            error_code=131026 if status == "failed" else None,
            created_at=at,
            updated_at=at,
            expires_at=start + timedelta(days=3),
        ).save()
    other = {"created_at": start.isoformat(), "updated_at": start.isoformat(), "expires_at": start}
    NotificationLog("job_x", "p_x", trip_id="x", message_type="auto_reply", status="failed", **other).save()
    path, route = "/admin/api/trips/JPN25/outcomes", "/admin/api/trips/{tripId}/outcomes"

    status, payload, _ = admin("GET", path, route, {"tripId": "JPN25"})
    assert status == 200 and payload["trip_id"] == "jpn25"
    assert [o["job_id"] for o in payload["outcomes"]] == ["job_4", "job_3", "job_2", "job_1", "job_0"]
    assert "provider_msg_id" not in payload["outcomes"][0] and "wamid" not in json.dumps(payload)

    status, payload, _ = admin(
        "GET", path, route, {"tripId": "JPN25"}, query={"status": "failed", "limit": "1"}
    )
    assert status == 200 and [o["job_id"] for o in payload["outcomes"]] == ["job_3"]
    assert payload["outcomes"][0] == {
        "job_id": "job_3",
        "participant_id": "p_0000000000000003",
        "message_type": "product_update",
        "status": "failed",
        "reason": "whatsapp_error_131026",
        "error_code": 131026,
        "attempts": 3,
        "created_at": "2026-06-01T03:03:00+00:00",
        "updated_at": "2026-06-01T03:03:00+00:00",
    }

    status, payload, _ = admin("GET", path, route, {"tripId": "JPN25"}, query={"status": "lost"})
    assert status == 422 and payload["error"]["field"] == "status"
    status, payload, _ = admin("GET", path, route, {"tripId": "JPN25"}, query={"limit": "many"})
    assert status == 422 and payload["error"]["field"] == "limit"


def test_the_inbound_dlq_is_listed_without_the_participant_and_redriven_to_the_inbound_queue(ctx, admin, sqs):
    from tests.integration.test_api import create_trip
    from tests.integration.test_webhook_and_sender import drain, inbound

    assert create_trip(ctx)[0] == 201
    payload = inbound("JOIN jpn25", "wamid.dlq1")
    value = payload["entry"][0]["changes"][0]["value"]
    body = json.dumps({"message": value["messages"][0], "contacts": value["contacts"]})
    sqs.send_message(QueueUrl=url(ctx, "InboundDLQ"), MessageBody=body)  # failed 3 times earlier
    status, listing, _ = admin(
        "GET", "/admin/api/queues/inbound/dlq", "/admin/api/queues/{queue}/dlq", {"queue": "inbound"}
    )
    assert status == 200
    (shown,) = listing["messages"]
    assert shown["readable"] and shown["kind"] == "inbound" and shown["message_type"] == "text"
    # A delivery status that failed 3 times shows as one, without its wamid or recipient.
    delivered = {"id": "wamid.st1", "status": "delivered", "recipient_id": "6281311112222"}
    sqs.send_message(QueueUrl=url(ctx, "InboundDLQ"), MessageBody=json.dumps({"status": delivered}))
    status, listing, _ = admin(
        "GET", "/admin/api/queues/inbound/dlq", "/admin/api/queues/{queue}/dlq", {"queue": "inbound"}
    )
    assert sorted(m["message_type"] for m in listing["messages"]) == ["status:delivered", "text"]
    assert all(m["readable"] for m in listing["messages"])
    text = json.dumps(listing)
    assert "6281311112222" not in text and "JOIN" not in text and "wamid" not in text
    status, result, _ = redrive(admin, "inbound", {"all": True})
    assert status == 200 and result["moved"] == 2 and depth(sqs, url(ctx, "InboundDLQ")) == 0
    drain(ctx, "InboundQueue")  # the status names no log entry: kept until it expires
    drain(ctx)
    (reply,) = ctx.sandbox.messages()
    assert reply["body"]["text"]["body"].startswith("Terima kasih sudah join!")


def test_the_admin_api_serves_its_part_of_the_openapi_document(admin, handlers):
    from jastipin.openapi import part

    status, served, _ = admin("GET", "/admin/api/openapi.json")
    assert status == 200 and served == part(handlers[1]["admin"].app)
    assert set(served["paths"]) >= {"/admin/api/queues", "/admin/api/queues/{queue}/dlq/redrive"}
    assert not any(path.startswith("/api/") for path in served["paths"])
    assert admin("GET", "/admin/api/openapi.json", token=None)[0] == 401
    assert admin("GET", "/admin/api/openapi.json", token="local-api-token")[0] == 403

"""Security of the HTTP edge, against the moto server: where tokens are accepted (and how they are compared),
hostile ids in paths and bodies, oversized bodies, forged webhook signatures, and secrets or phone numbers in
the logs.

Each attack is followed by a look at what it left behind: every table scanned, every queue counted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import boto3
import pytest

from jastipin.ids import stable_id
from localrun.project import LOCAL_SECRETS
from localrun.sandbox import webhook_envelope
from tests.conftest import REGION
from tests.harness import FakeContext, sqs_event
from tests.unit.test_request_properties import api_event

TOKEN = LOCAL_SECRETS["API_TOKEN"]
ADMIN = LOCAL_SECRETS["ADMIN_TOKEN"]
APP_SECRET = LOCAL_SECRETS["WA_APP_SECRET"]
OWNER = "+6281234567890"
MEMBERS = ("+6281311112222", "+6285712345678")
TRIPS = ("jpn25", "kor26")
WEBHOOK = "/api/webhooks/whatsapp"


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def admin(handlers) -> ModuleType:
    return handlers[1]["admin"]


def invoke(module: ModuleType, method: str, path: str, route: str | None = None, body: Any = None, **kw):
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    response = module.handler(api_event(method, path, route=route, body=raw, **kw), FakeContext())
    assert response["headers"]["Content-Type"] == "application/json", response
    return response["statusCode"], json.loads(response["body"])


def create_trip(ctx, slug: str) -> None:
    body = {"slug": slug, "title": f"Jastip {slug}", "owner_phone": "081234567890"}
    assert invoke(ctx.enqueue, "POST", "/api/trips", body=body)[0] == 201


def add_member(trip: str, phone: str, name: str = "Ani") -> str:
    """A participant as a JOIN leaves one: membership plus a contact whose 24-hour window is open."""
    from jastipin.data.models import Contact, Participant, utcnow
    from jastipin.runtime import services

    services()  # binds the models to this deployment's tables
    participant_id = stable_id("p", phone)
    Participant(trip, participant_id, wa_key=phone, phone=phone, name=name).save()
    Contact(phone, participant_id=participant_id, phone=phone, name=name, last_inbound_at=utcnow()).save()
    return participant_id


def table_items(ctx) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table of the deployment, keys only, as plain strings."""
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    found = {}
    for name in ddb.list_tables()["TableNames"]:
        keys = [k["AttributeName"] for k in ddb.describe_table(TableName=name)["Table"]["KeySchema"]]
        items = ddb.scan(TableName=name)["Items"]
        found[name] = [{k: next(iter(item[k].values())) for k in keys} for item in items]
    return found


def queue_depths(ctx) -> dict[str, int]:
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    depths = {}
    for logical_id, queue in ctx.stack.queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        depths[logical_id] = sum(int(v) for v in attributes.values())
    return depths


def queued_bodies(ctx) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    bodies = []
    for queue in ctx.stack.queues.values():
        messages = sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        bodies += [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    return bodies


SAFE_KEY = re.compile(r"[A-Za-z0-9_+#|.:-]{1,128}")


def weird_keys(ctx) -> list[tuple[str, dict[str, Any]]]:
    return [
        (table, key)
        for table, keys in table_items(ctx).items()
        for key in keys
        if not all(isinstance(v, str) and SAFE_KEY.fullmatch(v) for v in key.values())
    ]


def drain(ctx, logical_id: str, rounds: int = 5) -> None:
    """Feed a queue's messages to the sender handler as the event source mapping would."""
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    queue = ctx.stack.queues[logical_id]
    for _ in range(rounds):
        messages = sqs.receive_message(
            QueueUrl=queue.url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return
        response = ctx.sender.handler(sqs_event(messages, queue.arn), FakeContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])


# -------------------------------------------------------------------------------- (a) tokens
TRIP_BODY = {"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"}

# The right token, anywhere but "Authorization: Bearer <token>".
ELSEWHERE = [
    pytest.param({"query": {"token": "{t}"}}, id="query-token"),
    pytest.param({"query": {"access_token": "{t}"}}, id="query-access_token"),
    pytest.param({"query": {"api_key": "{t}"}}, id="query-api_key"),
    pytest.param({"headers": {"x-api-key": "{t}"}}, id="x-api-key"),
    pytest.param({"headers": {"x-auth-token": "{t}"}}, id="x-auth-token"),
    pytest.param({"headers": {"cookie": "token={t}; session={t}"}}, id="cookie"),
    pytest.param({"headers": {"proxy-authorization": "Bearer {t}"}}, id="proxy-authorization"),
    pytest.param({"headers": {"authorization": "{t}"}}, id="authorization-without-scheme"),
    pytest.param({"headers": {"authorization": "Token {t}"}}, id="authorization-token-scheme"),
    pytest.param({"headers": {"authorization": "Basic {b}"}}, id="authorization-basic"),
    pytest.param(
        {"headers": {"authorization": "Bearer"}, "query": {"token": "{t}"}}, id="empty-bearer+query"
    ),
    pytest.param({"headers": {"authorization": "Bearer    "}}, id="blank-bearer"),
]


def placed(where: dict[str, dict[str, str]], token: str) -> dict[str, Any]:
    basic = base64.b64encode(f"{token}:".encode()).decode()
    return {
        kind: {k: v.format(t=token, b=basic) for k, v in values.items()} for kind, values in where.items()
    }


@pytest.mark.parametrize("where", ELSEWHERE)
def test_the_api_token_counts_only_in_the_authorization_bearer_header(ctx, where):
    status, body = invoke(
        ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY, token=None, **placed(where, TOKEN)
    )
    assert status == 401 and body["error"] == {
        "code": "unauthorized",
        "message": "missing bearer token",
        "field": "Authorization",
    }
    assert table_items(ctx)[ctx.stack.tables["TripsTable"]] == []
    # the control: the same request with the token where it belongs
    assert invoke(ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY)[0] == 201


@pytest.mark.parametrize("where", ELSEWHERE)
def test_the_admin_token_counts_only_in_the_authorization_bearer_header(ctx, admin, where):
    status, body = invoke(admin, "GET", "/admin/api/queues", token=None, **placed(where, ADMIN))
    assert status == 401 and body["error"]["field"] == "Authorization"
    assert invoke(admin, "GET", "/admin/api/queues", token=ADMIN)[0] == 200


WRONG_TOKENS = [
    "wrong",
    TOKEN + "x",
    TOKEN[:-1],
    TOKEN.upper(),
    TOKEN + "\x00",
    f"{TOKEN},Bearer {TOKEN}",  # two Authorization headers, joined by the gateway
    "é" + TOKEN,
    *(value for name, value in LOCAL_SECRETS.items() if name != "API_TOKEN"),  # admin token included
]


@pytest.mark.parametrize("token", WRONG_TOKENS)
def test_a_wrong_api_token_is_403(ctx, token):
    status, body = invoke(ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY, token=token)
    assert status == 403 and body["error"] == {
        "code": "forbidden",
        "message": "invalid token",
        "field": "Authorization",
    }
    assert table_items(ctx)[ctx.stack.tables["TripsTable"]] == []


@pytest.mark.parametrize(
    "token",
    [
        "wrong",
        ADMIN + "x",
        ADMIN[:-1],
        ADMIN.upper(),
        ADMIN + "\x00",
        f"{ADMIN},Bearer {ADMIN}",
        *(value for name, value in LOCAL_SECRETS.items() if name != "ADMIN_TOKEN"),  # the API token included
    ],
)
def test_a_wrong_admin_token_and_the_api_token_are_403_on_admin_routes(ctx, admin, token):
    status, body = invoke(admin, "GET", "/admin/api/queues", token=token)
    assert status == 403 and body["error"]["field"] == "Authorization"


def test_the_bearer_scheme_is_case_insensitive_and_the_token_is_not(ctx):
    mixed_case_scheme = {"authorization": f"bEaReR {TOKEN}"}
    assert (
        invoke(ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY, token=None, headers=mixed_case_scheme)[0]
        == 201
    )
    assert invoke(ctx.enqueue, "GET", "/api/trips/jpn25/ledger", token=TOKEN.swapcase())[0] == 403


def test_tokens_and_signatures_are_compared_in_constant_time(ctx, admin, monkeypatch):
    """Every token and signature check goes through hmac.compare_digest, never ``==``."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert invoke(ctx.enqueue, "GET", "/api/trips/jpn25/ledger", token="guess")[0] == 403
    assert calls == [(b"guess", TOKEN.encode())]
    calls.clear()
    assert invoke(admin, "GET", "/admin/api/queues", token="guess")[0] == 403
    assert calls == [(b"guess", ADMIN.encode())]
    calls.clear()
    body = json.dumps(inbound_join()).encode()
    forged = "sha256=" + "0" * 64
    assert post_webhook(ctx, body, forged)[0] == 403
    expected = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert [tuple(x.encode() if isinstance(x, str) else x for x in call) for call in calls] == [
        (b"0" * 64, expected.encode())
    ]


# -------------------------------------------------------------------------------- (b) hostile ids
# Reach the function as {tripId} / {queue} (the router's path pattern takes them).
ROUTED_IDS = [
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%2e%2e%2f",
    "%00",
    "jpn25%00",
    "ｊｐｎ２５",  # full-width
    "јрn25",  # Cyrillic j and p
    "\u212aor26",  # Kelvin sign: lower-cases to an existing trip's "k"
    "' OR 1=1 --",
    "jpn25' OR '1'='1",
    "$ne",
    "[$ne]",
    "{$gt:''}",
    "*",
    "jpn25;DROP TABLE trips",
    "<script>",
    "a" * 1000,
]
# Do not match any route (a slash, a null byte, a quote or a format character ends the path parameter).
UNROUTED_IDS = [
    "../",
    "../../etc/passwd",
    "a/b",
    "jpn25/../kor26",
    "\x00",
    "jpn25\x00",
    '{"$ne": null}',
    "jpn25\u200b",
    "<script>alert(1)</script>",
]

TRIP_ROUTES = [
    ("POST", "/api/trips/{}/products", {"name": "A", "price": 1}),
    ("GET", "/api/trips/{}/broadcasts/estimate", None),
    ("POST", "/api/trips/{}/broadcasts", {"template": "trip_reminder", "parameters": ["Jastip"]}),
    ("POST", "/api/trips/{}/proofs", {"participant_id": "@member", "order_ref": "A", "media_id": "1"}),
    ("GET", "/api/trips/{}/ledger", None),
]
ADMIN_ROUTES = [
    ("GET", "/admin/api/trips/{}/outcomes", None, "tripId"),
    ("GET", "/admin/api/queues/{}/dlq", None, "queue"),
    ("POST", "/admin/api/queues/{}/dlq/redrive", {"all": True}, "queue"),
    ("POST", "/admin/api/queues/{}/dlq/purge", {"confirm": "notifications"}, "queue"),
    ("POST", "/admin/api/queues/{}/purge", {"confirm": "notifications"}, "queue"),
]


@pytest.fixture
def two_trips(ctx) -> str:
    for slug in TRIPS:
        create_trip(ctx, slug)
    return add_member("jpn25", MEMBERS[0])


def assert_nothing_weird_was_kept(ctx) -> None:
    assert weird_keys(ctx) == []
    trips = {key["trip_id"] for key in table_items(ctx)[ctx.stack.tables["TripsTable"]]}
    assert trips == set(TRIPS)
    assert all(job["tripId"] in TRIPS for job in queued_bodies(ctx))


def check_id(status: int, body: dict, raw_id: str, field: str) -> str | None:
    """None when the answer is right for a hostile id; else what was wrong."""
    error = body.get("error") or {}
    if raw_id in UNROUTED_IDS:
        ok = status == 404 and error.get("code") == "route_not_found"
    else:
        ok = status == 404 and error.get("field") == field and len(error.get("message", "")) <= 200
    return None if ok else f"{raw_id[:40]!r}: {status} {body}"[:300]


@pytest.mark.parametrize(("method", "template", "body"), TRIP_ROUTES, ids=[r[1] for r in TRIP_ROUTES])
def test_hostile_trip_ids_in_the_path_are_404_naming_the_trip(ctx, two_trips, method, template, body):
    if body and body.get("participant_id") == "@member":
        body = {**body, "participant_id": two_trips}
    query = {"template": "trip_reminder"} if "estimate" in template else None
    wrong = []
    for raw_id in ROUTED_IDS + UNROUTED_IDS:
        status, answer = invoke(ctx.enqueue, method, template.format(raw_id), body=body, query=query)
        wrong.append(check_id(status, answer, raw_id, "tripId"))
    assert [w for w in wrong if w] == []
    assert_nothing_weird_was_kept(ctx)
    assert all(depth == 0 for depth in queue_depths(ctx).values())


@pytest.mark.parametrize(
    ("method", "template", "body", "field"), ADMIN_ROUTES, ids=[r[1] for r in ADMIN_ROUTES]
)
def test_hostile_ids_in_admin_paths_are_404_naming_the_field(
    ctx, admin, two_trips, method, template, body, field
):
    wrong = []
    for raw_id in ROUTED_IDS + UNROUTED_IDS:
        status, answer = invoke(admin, method, template.format(raw_id), body=body, token=ADMIN)
        wrong.append(check_id(status, answer, raw_id, field))
    assert [w for w in wrong if w] == []
    assert_nothing_weird_was_kept(ctx)


HOSTILE_VALUES = [*ROUTED_IDS, *UNROUTED_IDS, {"$ne": None}, {"$gt": ""}, ["jpn25"], None, 1]


def test_hostile_values_in_body_fields_are_422_naming_the_field(ctx, two_trips):
    member = two_trips
    cases = [
        ("/api/trips", {"title": "T", "owner_phone": "081234567890"}, "slug"),
        ("/api/trips", {"slug": "abc", "title": "T"}, "owner_phone"),
        ("/api/trips/jpn25/proofs", {"order_ref": "A", "media_id": "1"}, "participant_id"),
        ("/api/trips/jpn25/proofs", {"participant_id": member, "order_ref": "A"}, "media_id"),
        ("/api/trips/jpn25/broadcasts", {"parameters": ["Jastip"]}, "template"),
    ]
    wrong = []
    for path, body, field in cases:
        for value in HOSTILE_VALUES:
            if value is None and field == "media_id":
                continue  # no media_id at all: "exactly one of image_url or media_id" names image_url
            status, answer = invoke(ctx.enqueue, "POST", path, body={**body, field: value})
            named = (answer.get("error") or {}).get("field", "")
            if status != 422 or named.split(".")[0] != field:
                wrong.append(f"{field}={str(value)[:40]!r}: {status} {str(answer)[:200]}")
    assert wrong == []
    assert_nothing_weird_was_kept(ctx)
    assert all(depth == 0 for depth in queue_depths(ctx).values())


def test_hostile_idempotency_keys_never_become_keys(ctx, two_trips):
    for value in HOSTILE_VALUES:
        body = {"template": "trip_reminder", "parameters": ["Jastip"], "idempotency_key": value}
        status, answer = invoke(ctx.enqueue, "POST", "/api/trips/jpn25/broadcasts", body=body)
        if status == 202:  # "..", or none: the id is a hash of the key (or a new id), never the key itself
            assert re.fullmatch(r"bc_[0-9a-f]{16,20}", answer["broadcast_id"])
        else:
            assert status == 422 and answer["error"]["field"] == "idempotency_key", (value, answer)
    assert_nothing_weird_was_kept(ctx)


def test_hostile_query_values_are_422_naming_the_parameter(ctx, admin, two_trips):
    for value in [*ROUTED_IDS, *UNROUTED_IDS]:
        status, answer = invoke(
            ctx.enqueue, "GET", "/api/trips/jpn25/broadcasts/estimate", query={"template": value}
        )
        assert status == 422 and answer["error"]["field"] == "template", (value, answer)
        for name in ("status", "limit"):
            status, answer = invoke(
                admin, "GET", "/admin/api/trips/jpn25/outcomes", token=ADMIN, query={name: value}
            )
            assert status == 422 and answer["error"]["field"] == name, (name, value, answer)


def test_hostile_message_ids_redrive_nothing(ctx, admin):
    ids = ROUTED_IDS + UNROUTED_IDS
    status, answer = invoke(
        admin, "POST", "/admin/api/queues/notifications/dlq/redrive", body={"message_ids": ids}, token=ADMIN
    )
    assert status == 200 and answer["moved"] == 0 and sorted(answer["not_found"]) == sorted(set(ids))
    assert all(depth == 0 for depth in queue_depths(ctx).values())


# -------------------------------------------------------------------------------- (c) body size
BODY_ROUTES = [
    ("enqueue", "/api/trips", {"slug": "big", "title": "T", "owner_phone": "081234567890"}, "title"),
    ("enqueue", "/api/trips/jpn25/products", {"name": "A", "price": 1}, "description"),
    (
        "enqueue",
        "/api/trips/jpn25/broadcasts",
        {"template": "trip_reminder", "parameters": ["J"]},
        "template",
    ),
    (
        "enqueue",
        "/api/trips/jpn25/proofs",
        {"participant_id": "p", "order_ref": "A", "media_id": "1"},
        "caption",
    ),
    ("admin", "/admin/api/queues/notifications/dlq/redrive", {"all": True}, "pad"),
    ("admin", "/admin/api/queues/notifications/dlq/purge", {"confirm": "notifications"}, "pad"),
    ("admin", "/admin/api/queues/notifications/purge", {"confirm": "notifications"}, "pad"),
]


def padded(body: dict, field: str, size: int, char: str = "x") -> str:
    """``body`` with ``field`` padded so the JSON is exactly ``size`` UTF-8 bytes (or just over, for a
    multi-byte ``char``)."""
    base = len(json.dumps({**body, field: ""}).encode())
    count = -(-(size - base) // len(char.encode()))
    return json.dumps({**body, field: char * count}, ensure_ascii=False)


def max_body_bytes() -> int:
    from jastipin.runtime import services

    return services().settings.max_body_bytes


@pytest.mark.parametrize(("function", "path", "body", "pad"), BODY_ROUTES, ids=[r[1] for r in BODY_ROUTES])
def test_a_body_over_the_limit_is_413_and_nothing_is_queued(ctx, admin, two_trips, function, path, body, pad):
    module, token = (ctx.enqueue, TOKEN) if function == "enqueue" else (admin, ADMIN)
    limit = max_body_bytes()
    before = table_items(ctx)
    over = padded(body, pad, limit + 1)
    assert len(over.encode()) == limit + 1
    multibyte = padded(body, pad, limit + 1, "😀")  # fewer characters than the limit, more bytes
    assert len(multibyte) < limit < len(multibyte.encode())
    for raw, encoded in [
        (over, False),
        (base64.b64encode(over.encode()).decode(), True),
        (multibyte, False),
        (over + " " * limit, False),
    ]:
        status, answer = invoke(module, "POST", path, body=raw, base64_encoded=encoded, token=token)
        assert status == 413 and answer["error"] == {
            "code": "payload_too_large",
            "message": f"body is larger than {limit} bytes",
            "field": "body",
        }
    # without the token the body is never looked at
    assert invoke(module, "POST", path, body=over, token=None)[0] == 401
    assert all(depth == 0 for depth in queue_depths(ctx).values())
    assert table_items(ctx) == before


def test_a_body_of_exactly_the_limit_is_accepted(ctx):
    limit = max_body_bytes()
    body = json.dumps({"slug": "edge", "title": "T", "owner_phone": "081234567890"})
    exact = body + " " * (limit - len(body.encode()))
    status, answer = invoke(ctx.enqueue, "POST", "/api/trips", body=exact)
    assert status == 201 and answer["slug"] == "edge"


# -------------------------------------------------------------------------------- (d) webhook
def inbound_join(phone: str = "6281311112222") -> dict[str, Any]:
    message = {
        "from": phone,
        "id": "wamid.sec1",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": "JOIN jpn25"},
    }
    return webhook_envelope(
        {"contacts": [{"profile": {"name": "Ani"}, "wa_id": phone}], "messages": [message]},
        phone_number_id="000000000000000",
    )


def post_webhook(ctx, body: bytes, signature: str | None, *, base64_encoded: bool = False):
    headers = {"user-agent": "facebookexternalua"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    raw = base64.b64encode(body).decode() if base64_encoded else body.decode()
    event = api_event("POST", WEBHOOK, body=raw, base64_encoded=base64_encoded, headers=headers, token=None)
    response = ctx.webhook.handler(event, FakeContext())
    return response["statusCode"], json.loads(response["body"])


def hex_of(secret: str, body: bytes, digest=hashlib.sha256) -> str:
    return hmac.new(secret.encode(), body, digest).hexdigest()


BODY = json.dumps(inbound_join()).encode()
RIGHT = hex_of(APP_SECRET, BODY)
FORGED = [
    pytest.param("sha256=" + hex_of("another-secret", BODY), id="other-secret"),
    pytest.param("sha256=" + hex_of(APP_SECRET, BODY + b" "), id="other-body"),
    pytest.param(
        "sha256=" + hex_of(APP_SECRET, json.dumps(inbound_join("6285712345678")).encode()), id="other-msg"
    ),
    pytest.param("sha1=" + hex_of(APP_SECRET, BODY, hashlib.sha1), id="sha1"),
    pytest.param("sha1=" + RIGHT, id="sha1-prefix-right-hex"),
    pytest.param("SHA256=" + RIGHT, id="uppercase-prefix"),
    pytest.param(RIGHT, id="no-prefix"),
    pytest.param("sha256=" + RIGHT[:-1], id="truncated-by-one"),
    pytest.param("sha256=" + RIGHT[:32], id="truncated-half"),
    pytest.param("sha256=" + RIGHT + "0", id="one-extra"),
    pytest.param("sha256=", id="empty-hex"),
    pytest.param("sha256=" + base64.b64encode(bytes.fromhex(RIGHT)).decode(), id="base64-digest"),
    pytest.param(f"sha256={RIGHT},sha256={RIGHT}", id="twice"),
    pytest.param("sha256=" + hex_of(LOCAL_SECRETS["WA_VERIFY_TOKEN"], BODY), id="verify-token-as-key"),
    pytest.param("sha256=" + hex_of(LOCAL_SECRETS["WA_ACCESS_TOKEN"], BODY), id="access-token-as-key"),
]


def assert_nothing_written(ctx) -> None:
    assert {table: keys for table, keys in table_items(ctx).items() if keys} == {}
    assert {queue: depth for queue, depth in queue_depths(ctx).items() if depth} == {}


@pytest.mark.parametrize("signature", [None, ""], ids=["missing", "empty"])
def test_a_webhook_without_a_signature_is_401(ctx, signature):
    status, body = post_webhook(ctx, BODY, signature)
    assert status == 401 and body["error"]["field"] == "X-Hub-Signature-256"
    assert_nothing_written(ctx)


@pytest.mark.parametrize("signature", FORGED)
def test_a_forged_webhook_signature_is_403_and_nothing_is_written(ctx, signature):
    status, body = post_webhook(ctx, BODY, signature)
    assert status == 403 and body["error"] == {
        "code": "forbidden",
        "message": "invalid signature",
        "field": "X-Hub-Signature-256",
    }
    assert_nothing_written(ctx)


# A signed body that is no webhook shape the handler knows: acknowledged, nothing else happens. It shows
# which signatures pass without depending on how messages are processed.
UNKNOWN_SHAPE = b'{"object": "whatsapp_business_account", "entry": "not a list"}'


@pytest.mark.parametrize(
    ("signature", "base64_encoded"),
    [
        ("sha256=" + hex_of(APP_SECRET, UNKNOWN_SHAPE), False),
        ("sha256=" + hex_of(APP_SECRET, UNKNOWN_SHAPE).upper(), False),  # hex digits in either case
        ("sha256=" + hex_of(APP_SECRET, UNKNOWN_SHAPE) + " ", False),
        ("sha256=" + hex_of(APP_SECRET, UNKNOWN_SHAPE), True),  # signed bytes, delivered base64-encoded
    ],
    ids=["right", "uppercase-hex", "trailing-space", "base64-body"],
)
def test_the_right_signature_is_accepted(ctx, signature, base64_encoded):
    assert post_webhook(ctx, UNKNOWN_SHAPE, signature, base64_encoded=base64_encoded) == (
        200,
        {"status": "ignored"},
    )
    assert post_webhook(ctx, UNKNOWN_SHAPE + b" ", signature)[0] == 403  # the same signature, another body
    assert_nothing_written(ctx)


# -------------------------------------------------------------------------------- (e) logs
@contextmanager
def captured_logs(modules: list[ModuleType], caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """What the functions' JSON loggers write (to stdout in Lambda), plus every other logger via caplog."""
    buffer = io.StringIO()
    handlers = {id(h): h for m in modules for h in [m.logger.registered_handler]}.values()
    previous = [(h, h.setStream(buffer)) for h in handlers]
    caplog.set_level(logging.INFO)
    try:
        yield buffer
    finally:
        for handler, stream in previous:
            handler.setStream(stream)


def phone_forms(e164: str) -> list[str]:
    digits = e164.lstrip("+")
    return [e164, digits, "0" + digits[2:]]


def test_no_secret_or_phone_number_reaches_the_logs(ctx, admin, caplog, capsys):
    modules = [ctx.enqueue, ctx.webhook, ctx.sender, admin]
    with captured_logs(modules, caplog) as buffer:
        create_trip(ctx, "jpn25")
        members = [
            add_member("jpn25", phone, name) for phone, name in zip(MEMBERS, ("Ani", "Budi"), strict=True)
        ]
        product = {"name": "Action Figure A", "price": 450000, "description": "Edisi terbatas"}
        status, queued = invoke(ctx.enqueue, "POST", "/api/trips/jpn25/products", body=product)
        assert status == 202
        drain(ctx, "NotificationsQueue")  # fan-out, then the chunk: both members get it
        proof = {"participant_id": members[0], "order_ref": "ORD-1", "image_url": "https://img.test/1.jpg"}
        assert invoke(ctx.enqueue, "POST", "/api/trips/jpn25/proofs", body=proof)[0] == 202
        drain(ctx, "ProofNotifyQueue")  # to the owner's number
        bad_phone = {"slug": "x1", "title": "T", "owner_phone": MEMBERS[1] + "999"}
        assert invoke(ctx.enqueue, "POST", "/api/trips", body=bad_phone)[0] == 422
        assert invoke(ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY, token="not-the-token")[0] == 403
        assert invoke(ctx.enqueue, "POST", "/api/trips", body=TRIP_BODY, token=ADMIN)[0] == 403
        assert invoke(admin, "GET", "/admin/api/queues", token=ADMIN)[0] == 200
        assert invoke(admin, "GET", "/admin/api/queues", token=TOKEN)[0] == 403
        forged = "sha256=" + hex_of(LOCAL_SECRETS["WA_VERIFY_TOKEN"], BODY)
        assert post_webhook(ctx, BODY, forged)[0] == 403
    sent_to = {message["to"] for message in ctx.sandbox.messages()}
    assert sent_to == {p.lstrip("+") for p in (*MEMBERS, OWNER)}  # the phones did flow through the code
    printed = capsys.readouterr()
    logs = "\n".join([buffer.getvalue(), caplog.text, printed.out, printed.err])
    # the capture saw the functions' lines (so an empty capture cannot pass)
    assert '"message":"trip created"' in logs and queued["job_id"] in logs
    leaked = [name for name, value in LOCAL_SECRETS.items() if value in logs]
    leaked += [form for phone in (*MEMBERS, OWNER) for form in phone_forms(phone) if form in logs]
    assert leaked == []

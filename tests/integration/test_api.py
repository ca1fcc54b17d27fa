"""The backend API handler against a moto server: happy path and every documented error status."""

from __future__ import annotations

import copy
import json

import boto3
import pytest

from tests.conftest import REGION, load_event
from tests.harness import FakeContext

TOKEN = "local-api-token"


def call(
    ctx,
    method: str,
    path: str,
    body=None,
    *,
    token: str | None = TOKEN,
    raw: str | None = None,
    route: str | None = None,
    params: dict | None = None,
):
    event = copy.deepcopy(load_event("create_trip.json"))
    event["routeKey"] = f"{method} {route or path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["headers"] = {"content-type": "application/json"}
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    event["body"] = raw if raw is not None else (json.dumps(body) if body is not None else None)
    event["pathParameters"] = params or {}
    response = ctx.enqueue.handler(event, FakeContext())
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


def create_trip(ctx, slug="jpn25"):
    return call(
        ctx, "POST", "/api/trips", {"slug": slug, "title": "Jastip Jepang", "owner_phone": "081234567890"}
    )


def create_trip_with_window_template(ctx, template: str):
    body = {"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"}
    return call(ctx, "POST", "/api/trips", {**body, "window_policy": "template", "window_template": template})


def upload(ctx, body, trip="jpn25", **kw):
    return call(
        ctx,
        "POST",
        f"/api/trips/{trip}/products",
        body,
        route="/api/trips/{tripId}/products",
        params={"tripId": trip},
        **kw,
    )


def queued(ctx):
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    url = ctx.stack.queues["NotificationsQueue"].url
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])


def test_create_trip_then_upload_queues_one_fan_out_job(ctx):
    status, trip = create_trip(ctx)
    assert status == 201 and trip["slug"] == "jpn25" and trip["window_policy"] == "skip"
    status, body = upload(ctx, {"name": "Action Figure A", "price": 450000, "description": "Edisi terbatas"})
    assert status == 202 and body["status"] == "queued" and body["job_id"].startswith("job_")
    (message,) = queued(ctx)
    job = json.loads(message["Body"])
    assert job == {
        "jobId": body["job_id"],
        "kind": "product_update",
        "tripId": "jpn25",
        "productId": body["product_id"],
        "template": "product_update",
        "alwaysInWindow": False,
        "message": "Ada produk baru di trip Jastip Jepang: Action Figure A - Rp450.000\nEdisi terbatas\n\n"
        "Balas INFO untuk produk terbaru, STOP untuk berhenti.",
    }


def test_duplicate_slug_is_409(ctx):
    create_trip(ctx)
    status, body = create_trip(ctx)
    assert status == 409 and body["error"]["field"] == "slug"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "owner_phone": "081234567890"}, "slug"),
        ({"slug": "a b!", "title": "x", "owner_phone": "081234567890"}, "slug"),
        ({"slug": "jpn25", "title": "", "owner_phone": "081234567890"}, "title"),
        ({"slug": "jpn25", "title": "Jastip \u202eJepang", "owner_phone": "081234567890"}, "title"),
        ({"slug": "jpn25", "title": "x", "owner_phone": "12"}, "owner_phone"),
        ({"slug": "jpn25", "title": "x", "owner_phone": "081234567890", "extra": 1}, "extra"),
        ({"slug": "jpn25", "title": "x", "owner_phone": "081234567890", "window_policy": "template"}, "body"),
    ],
)
def test_schema_errors_are_422_naming_the_field(ctx, body, field):
    status, response = call(ctx, "POST", "/api/trips", body)
    assert status == 422 and response["error"]["code"] == "validation_error"
    assert response["error"]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A", "price": -1}, "price"),
        ({"price": 1}, "name"),
        ({"name": "A", "price": "mahal"}, "price"),
        # a price is a JSON integer: lax parsing read these as 1, 0, 450000 and 450000
        ({"name": "A", "price": True}, "price"),
        ({"name": "A", "price": False}, "price"),
        ({"name": "A", "price": "450000"}, "price"),
        ({"name": "A", "price": 450000.0}, "price"),
        # text that reaches WhatsApp: no control characters, no bidirectional overrides (jastipin.safe_text)
        ({"name": "Tumbler \u202egpj.exe", "price": 1}, "name"),
        ({"name": "Tumbler\x00", "price": 1}, "name"),
        ({"name": "Tumbler\nbaru", "price": 1}, "name"),  # a name is one line
        ({"name": "A", "price": 1, "description": "warna \u2066biru"}, "description"),
        ({"name": "A", "price": 1, "description": "bell\x07"}, "description"),
    ],
)
def test_product_schema_errors(ctx, body, field):
    create_trip(ctx)
    status, response = upload(ctx, body)
    assert status == 422 and response["error"]["field"] == field
    assert queued(ctx) == []


@pytest.mark.parametrize(
    ("template", "problem"),
    [("no_such_template", "unknown template"), ("trip_reminder", "takes 1 parameter")],
)
def test_a_window_template_must_be_an_approved_template_taking_title_and_product(ctx, template, problem):
    status, response = create_trip_with_window_template(ctx, template)
    assert status == 422 and response["error"]["field"] == "window_template"
    assert problem in response["error"]["message"]
    assert create_trip(ctx)[0] == 201  # nothing was stored: the slug is still free


def test_a_product_update_outside_the_window_carries_the_registry_s_template(ctx):
    assert create_trip_with_window_template(ctx, "product_update")[0] == 201
    assert upload(ctx, {"name": "Tumbler", "price": 450000})[0] == 202
    (message,) = queued(ctx)
    ref = json.loads(message["Body"])["templateRef"]
    assert ref["name"] == "product_update" and ref["parameters"] == ["Jastip Jepang", "Tumbler"]
    assert ref["category"] == "utility" and ref["language"] == "id"  # from the registry, not defaults


def test_a_window_template_removed_from_the_registry_refuses_the_upload_and_stores_nothing(ctx):
    from jastipin.data.models import Product, Trip

    assert create_trip_with_window_template(ctx, "product_update")[0] == 201
    Trip("jpn25").update(
        actions=[Trip.window_template.set("retired_template")]
    )  # TEMPLATES_JSON changed since
    status, response = upload(ctx, {"name": "Tumbler", "price": 450000})
    assert status == 422 and response["error"]["field"] == "window_template"
    assert queued(ctx) == [] and list(Product.query("jpn25")) == []


def test_malformed_json_is_400(ctx):
    for raw in ("{not json", "[1,2]", ""):
        status, body = call(ctx, "POST", "/api/trips", raw=raw)
        assert status == 400 and body["error"]["field"] == "body"


def test_auth(ctx):
    assert call(ctx, "POST", "/api/trips", {}, token=None)[0] == 401
    status, body = call(ctx, "POST", "/api/trips", {}, token="wrong")
    assert status == 403 and body["error"]["field"] == "Authorization"
    assert call(ctx, "POST", "/api/trips", {}, token="local-admin-token")[0] == 403


def test_unknown_trip_is_404(ctx):
    status, body = upload(ctx, {"name": "A", "price": 1}, trip="nope")
    assert status == 404 and body["error"]["field"] == "tripId"


def test_oversized_body_is_413(ctx):
    status, body = call(ctx, "POST", "/api/trips", raw=json.dumps({"slug": "x" * 70_000}))
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_the_api_serves_its_part_of_the_openapi_document(ctx):
    from jastipin.openapi import part

    status, served = call(ctx, "GET", "/api/openapi.json")
    assert status == 200 and served == part(ctx.enqueue.app)
    assert set(served["paths"]) >= {"/api/trips", "/api/trips/{tripId}/products"}
    assert not any(path.startswith("/admin/") for path in served["paths"])
    assert call(ctx, "GET", "/api/openapi.json", token=None)[0] == 401


def test_a_request_without_a_token_is_401_before_its_body_is_looked_at(ctx):
    for raw in ("{not json", '{"slug": 1}', "x" * 70_000):
        status, body = call(ctx, "POST", "/api/trips", raw=raw, token=None)
        assert status == 401 and body["error"] == {
            "code": "unauthorized",
            "message": "missing bearer token",
            "field": "Authorization",
        }


def test_every_body_is_read_as_json_whatever_its_content_type(ctx):
    event = copy.deepcopy(load_event("create_trip.json"))
    event["headers"] = {"authorization": f"Bearer {TOKEN}", "content-type": "multipart/form-data"}
    event["body"] = json.dumps({"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"})
    assert ctx.enqueue.handler(event, FakeContext())["statusCode"] == 201
    event["headers"]["content-type"] = "application/x-www-form-urlencoded"
    event["body"] = "slug=kor26&title=Korea&owner_phone=081234567890"
    response = ctx.enqueue.handler(event, FakeContext())
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"]["field"] == "body"


def test_a_base64_body_is_decoded_before_it_is_validated(ctx):
    import base64

    event = copy.deepcopy(load_event("create_trip.json"))
    event["headers"] = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    body = {"slug": "jpn25", "title": "Jastip Jepang 日本", "owner_phone": "081234567890"}
    event["body"] = base64.b64encode(json.dumps(body, ensure_ascii=False).encode()).decode()
    event["isBase64Encoded"] = True
    response = ctx.enqueue.handler(event, FakeContext())
    assert response["statusCode"] == 201 and json.loads(response["body"])["title"] == "Jastip Jepang 日本"
    event["body"] = base64.b64encode(b"\xff\xfe{}").decode()
    response = ctx.enqueue.handler(event, FakeContext())
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"]["field"] == "body"

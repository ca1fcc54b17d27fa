"""Property tests for the HTTP API's request handling: every request model of the backend and admin APIs,
and the backend handler itself (API Gateway HTTP API v2 events, under ``mock_aws``), fed arbitrary input.

What must hold whatever arrives: nothing raises, nothing answers 5xx, every 4xx is a JSON ``{"error": ...}``
naming a field, every answer can be sent as UTF-8, and a request that validates builds a job the queues
accept."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import BaseModel

from jastipin import texts
from jastipin.broadcasts import BroadcastRequest, EstimateQuery
from jastipin.http import HttpError, error_body, validate
from jastipin.ids import SLUG_RE, stable_id
from jastipin.operations.views import PurgeRequest, RedriveRequest
from jastipin.outbound.jobs import JobKind, ProductUpdateJob, ProofJob, Recipient, TemplateRef
from jastipin.proofs import ProofRequest
from jastipin.trips import MAX_PRICE, CreateTripRequest, NewProductRequest
from tests.harness import FakeContext, load_function

TOKEN = "local-api-token"
TRIP = "jpn25"
K_TRIP = "kor26"  # "\u212aor26" (Kelvin sign) lower-cases to it
OWNER_PHONE = "+6281234567890"
MEMBER_PHONE = "+6281311112222"
MEMBER_ID = stable_id("p", MEMBER_PHONE)

EXAMPLES = hypothesis.settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# ---------------------------------------------------------------------------------------------- strategies
# Any code point, lone surrogates included (json.dumps escapes them, json.loads gives them back).
any_text = st.text(st.characters(codec=None, categories=None), max_size=40)
emoji_and_controls = st.lists(
    st.sampled_from(
        [
            "😀",
            "👩‍👩‍👧",
            "🇮🇩",
            "\u200b",
            "\u202e",
            "\x00",
            "\x1b",
            "\r",
            "\n",
            "\t",
            "\ufeff",
            "\uffff",
            "a",
            " ",
        ]
    ),
    max_size=20,
).map("".join)
huge_text = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "é", "😀", "\x00", " ", "\\"]), st.integers(1000, 40_000)
)
strings = any_text | emoji_and_controls | huge_text
numbers = (
    st.integers()
    | st.integers(min_value=10**18, max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, MAX_PRICE, MAX_PRICE + 1, 1.5, 1e308, -0.0])
)
scalars = st.none() | st.booleans() | numbers | strings
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


def urls() -> st.SearchStrategy[str]:
    tail = any_text | huge_text | st.builds(lambda n: "é" * n, st.integers(300, 2100))
    return st.builds(
        lambda scheme, rest: scheme + rest, st.sampled_from(["https://example.com/", "http://", ""]), tail
    )


def near(base: dict[str, Any], **field_values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with some fields dropped, some replaced (by arbitrary JSON or a field-specific value) and
    maybe unknown fields added: reaches the domain code, not only the schema."""
    keys = list(base)
    replacement = st.sampled_from(keys).flatmap(
        lambda key: st.tuples(
            st.just(key), field_values[key] | json_values if key in field_values else json_values
        )
    )
    return st.builds(
        lambda drop, replace, extra: {
            **{k: v for k, v in base.items() if k not in drop},
            **dict(replace),
            **extra,
        },
        st.sets(st.sampled_from(keys), max_size=2),
        st.lists(replacement, max_size=2),
        st.one_of(st.just({}), st.just({}), st.just({}), st.dictionaries(any_text, json_values, max_size=1)),
    )


VALID: dict[str, dict[str, Any]] = {
    "trips": {"slug": "abc", "title": "Jastip", "owner_phone": "081234567890", "window_policy": "skip"},
    "products": {
        "name": "Action Figure",
        "price": 450000,
        "description": "Edisi",
        "image_url": "https://e.co/a",
    },
    "broadcasts": {
        "template": "trip_reminder",
        "parameters": ["Jastip Jepang"],
        "dry_run": True,
        "idempotency_key": "promo-1",
        "active_within_days": 7,
    },
    "proofs": {
        "participant_id": MEMBER_ID,
        "order_ref": "ORD-1",
        "image_url": "https://e.co/p.jpg",
        "caption": "ok",
    },
    "estimate": {"template": "trip_reminder", "active_within_days": "7"},
    "redrive": {"message_ids": ["m1"], "all": False},
    "purge": {"confirm": "notifications"},
}
FIELD_VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "trips": {
        "slug": st.sampled_from(["\u212apn25", "jpn25\n", "../x", "a/b", "ＡＢ", "' OR 1=1", "a" * 41])
        | any_text,
        "owner_phone": st.sampled_from(["+62 812 3456 7890", "٠٨١٢٣٤٥٦٧٨٩٠", "0812\x00345678"]) | any_text,
        "window_policy": st.sampled_from(["template", "skip", "SKIP"]),
    },
    "products": {"price": numbers, "image_url": urls()},
    "broadcasts": {
        "template": st.sampled_from(["trip_reminder", "product_update", "proof_received"]),
        "parameters": st.lists(strings, max_size=3),
        "dry_run": st.booleans(),
        "idempotency_key": st.sampled_from(["k", "a" * 128, "a" * 129, "k\n", "../k"]) | any_text,
        "active_within_days": st.integers(-2, 40),
    },
    "proofs": {
        "participant_id": st.sampled_from([MEMBER_ID, "p_0", "../p", '{"$ne": null}']) | any_text,
        "order_ref": st.sampled_from(["A     B", "A\x0bB\x0c", "A\rB", "A\u2028B"]) | strings,
        "image_url": urls(),
        "media_id": st.sampled_from(["123", "1" * 64, "1" * 65, "12a"]),
        "caption": strings,
    },
    "estimate": {"active_within_days": st.integers(-2, 40).map(str) | any_text},
    "redrive": {"message_ids": st.lists(any_text, max_size=3), "all": st.booleans()},
    "purge": {"confirm": any_text},
}


def bodies_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return near(VALID[kind], **FIELD_VALUES[kind])


# ---------------------------------------------------------------------------------------------- checks
def assert_error_names_a_field(error: HttpError) -> None:
    assert 400 <= error.status_code < 500
    assert isinstance(error.field, str) and error.field
    body = json.dumps(error_body(error.code, error.message, error.field, error.details), ensure_ascii=False)
    body.encode("utf-8")  # an answer that cannot be sent is no answer


def assert_answered(response: dict[str, Any]) -> dict[str, Any]:
    """A well-formed answer: below 500, JSON, sendable as UTF-8; a 4xx is an error naming a field."""
    status = response["statusCode"]
    assert 200 <= status < 500, response
    assert response["headers"]["Content-Type"] == "application/json"
    response["body"].encode("utf-8")
    body = json.loads(response["body"])
    if status >= 400:
        assert set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error.get("field"), str) and error["field"], body
    return body


def proof_job(request: ProofRequest) -> ProofJob:
    """The job ``proofs.submit`` builds for a request (participant and owner fixed)."""
    image_url = str(request.image_url) if request.image_url else None
    return ProofJob(
        job_id="prf_0000000000000000",
        kind=JobKind.PROOF,
        trip_id=TRIP,
        participants=[Recipient(id=stable_id("p", OWNER_PHONE), phone=OWNER_PHONE)],
        template="proof",
        image_url=image_url,
        media_id=request.media_id,
        caption=f"Bukti dari Ani untuk pesanan {request.order_ref}: {request.caption or ''}",
        template_ref=TemplateRef(
            name="proof_received",
            parameters=["Ani", request.order_ref],
            header_image_url=image_url,
            header_image_id=request.media_id,
        ),
    )


def meta_accepts(parameter: str) -> bool:
    """What Meta accepts as a template body parameter (error 132018 otherwise)."""
    return bool(parameter) and "\n" not in parameter and "\t" not in parameter and " " * 5 not in parameter


def check_valid(model: type[BaseModel], parsed: Any) -> None:
    """What a request that passed validation guarantees to the code behind it."""
    if isinstance(parsed, CreateTripRequest):
        assert parsed.slug.isascii() and SLUG_RE.fullmatch(parsed.slug)
        assert re.fullmatch(r"\+[1-9][0-9]{6,14}", parsed.owner_phone)
        assert parsed.window_policy != "template" or parsed.window_template
    elif isinstance(parsed, NewProductRequest):
        assert type(parsed.price) is int and 0 <= parsed.price <= MAX_PRICE
        assert parsed.image_url is None or parsed.image_url.scheme in {"http", "https"}
        ProductUpdateJob(
            job_id="job_0",
            kind=JobKind.PRODUCT_UPDATE,
            trip_id=TRIP,
            message=texts.product_update("T" * 120, parsed.name, parsed.price, parsed.description),
        )
    elif isinstance(parsed, BroadcastRequest):
        assert all(meta_accepts(p) for p in parsed.parameters)
        assert parsed.idempotency_key is None or re.fullmatch(
            r"[A-Za-z0-9._:-]{1,128}", parsed.idempotency_key
        )
        assert 1 <= parsed.active_within_days <= 30
    elif isinstance(parsed, EstimateQuery):
        assert 1 <= parsed.active_within_days <= 30
    elif isinstance(parsed, ProofRequest):
        assert meta_accepts(parsed.order_ref)
        if (parsed.image_url is None) != (parsed.media_id is None):
            proof_job(parsed)  # raises if the request can build a job the queue would refuse
    elif isinstance(parsed, RedriveRequest):
        assert parsed.all != bool(parsed.message_ids)
    elif isinstance(parsed, PurgeRequest):
        assert len(parsed.confirm) <= 64
    else:  # pragma: no cover - a model added to MODELS without its guarantees
        raise AssertionError(model)


MODELS: list[tuple[type[BaseModel], str]] = [
    (CreateTripRequest, "trips"),
    (NewProductRequest, "products"),
    (BroadcastRequest, "broadcasts"),
    (ProofRequest, "proofs"),
    (EstimateQuery, "estimate"),
    (RedriveRequest, "redrive"),
    (PurgeRequest, "purge"),
]


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize(("model", "kind"), MODELS, ids=[m.__name__ for m, _ in MODELS])
@EXAMPLES
@given(data=st.data())
def test_models_validate_or_name_the_field(model, kind, data):
    payload = data.draw(json_values | bodies_for(kind), label="payload")
    try:
        parsed = validate(model, payload)
    except HttpError as error:
        assert error.status_code == 422 and error.code == "validation_error"
        assert_error_names_a_field(error)
        assert error.details and all(d["field"] for d in error.details)
    else:
        check_valid(model, parsed)


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=[m.__name__ for m, _ in MODELS])
@EXAMPLES
@given(data=st.data())
def test_one_hostile_field_in_a_valid_body(model, kind, data):
    key = data.draw(st.sampled_from(sorted(FIELD_VALUES[kind])), label="field")
    value = data.draw(FIELD_VALUES[kind][key], label="value")
    try:
        parsed = validate(model, {**VALID[kind], key: value})
    except HttpError as error:
        assert_error_names_a_field(error)
        named = error.field.split(".")[0]  # parameters.0: the first parameter
        # a rule across fields (exactly one of "all" / "message_ids", a template policy) names the body
        assert named == key or (named == "body" and key in ("window_policy", "all", "message_ids"))
    else:
        check_valid(model, parsed)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/" + "é" * 400,
        "https://example.com/" + "a" * 2050,
        "https://例え.jp/" + "😀" * 200,
    ],
)
def test_a_proof_image_url_that_validates_fits_the_job(url):
    try:
        parsed = validate(ProofRequest, {"participant_id": "p_1", "order_ref": "A", "image_url": url})
    except HttpError as error:
        assert error.field == "image_url"
    else:
        proof_job(parsed)


@pytest.mark.parametrize("order_ref", ["ORD     1", "ORD\x0b\n1", "ORD\t1"])
def test_an_order_ref_meta_would_refuse_is_a_422(order_ref):
    with pytest.raises(HttpError) as caught:
        validate(ProofRequest, {"participant_id": "p_1", "order_ref": order_ref, "media_id": "1"})
    assert caught.value.status_code == 422 and caught.value.field == "order_ref"


@pytest.mark.parametrize("slug", ["\u212apn25", "ｊｐｎ２５", "јрn25", "jpn25\u200b"])
def test_look_alike_slugs_are_refused(slug):
    with pytest.raises(HttpError) as caught:
        validate(CreateTripRequest, {"slug": slug, "title": "T", "owner_phone": "081234567890"})
    assert caught.value.field == "slug"


# ---------------------------------------------------------------------------------------------- the handler
def api_event(
    method: str,
    path: str,
    *,
    route: str | None = None,
    body: str | None = None,
    base64_encoded: bool = False,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event as the gateway sends it to the function."""
    all_headers = {"content-type": "application/json", "host": "api.example.com", **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    route_key = f"{method} {route or path}"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": urlencode(query or {}, errors="backslashreplace"),
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "jastipin-backend/1.0",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jun/2026:03:00:00 +0000",
            "timeEpoch": 1780282800001,
        },
        "isBase64Encoded": base64_encoded,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


@pytest.fixture
def enqueue(settings, monkeypatch) -> Iterator[ModuleType]:
    from jastipin.data.models import Participant, Trip
    from jastipin.runtime import services
    from jastipin.settings import get_settings

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # mock_aws, whatever ran before
    get_settings.cache_clear()
    services.cache_clear()
    Trip(TRIP, title="Jastip Jepang", owner_phone=OWNER_PHONE).save()
    Trip(K_TRIP, title="Jastip Korea", owner_phone=OWNER_PHONE).save()
    Participant(TRIP, MEMBER_ID, wa_key=MEMBER_PHONE, phone=MEMBER_PHONE, name="Ani").save()
    yield load_function("enqueue", alias="enqueue_app_props")
    get_settings.cache_clear()
    services.cache_clear()


def invoke(module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    return module.handler(event, FakeContext(function_name="enqueue"))


POST_ROUTES = {
    "trips": ("/api/trips", "/api/trips"),
    "products": ("/api/trips/{}/products", "/api/trips/{tripId}/products"),
    "broadcasts": ("/api/trips/{}/broadcasts", "/api/trips/{tripId}/broadcasts"),
    "proofs": ("/api/trips/{}/proofs", "/api/trips/{tripId}/proofs"),
}

# What the router passes on as {tripId} (Powertools' path pattern), so every generated path reaches a route.
routable_ids = st.text(
    st.characters(categories=["L", "Nd"], include_characters="-._~()'!*:@,;=+&$%<> []{}|^"),
    min_size=1,
    max_size=60,
)
trip_ids = (
    st.sampled_from([TRIP, "JPN25", " jpn25", K_TRIP, "\u212aor26", "ｊｐｎ２５", "nope"]) | routable_ids
)


def raw_bodies(kind: str) -> st.SearchStrategy[tuple[str | None, bool]]:
    """(event body, isBase64Encoded): JSON of any shape, garbage, deep nesting, bodies over the limit, invalid
    UTF-8, invalid base64, and the same JSON base64-encoded."""
    as_json = (json_values | bodies_for(kind)).map(lambda v: json.dumps(v, ensure_ascii=False))
    deep = st.builds(
        lambda n, array: "[" * n + "]" * n if array else '{"a":' * n + "1" + "}" * n,
        st.integers(1, 70_000),
        st.booleans(),
    )
    garbage = st.text(st.characters(codec="utf-8"), max_size=200)
    plain = (as_json | deep | garbage | st.just("")).map(lambda s: (s, False))
    encoded = as_json.map(lambda s: (base64.b64encode(s.encode("utf-8", "surrogatepass")).decode(), True))
    invalid_utf8 = st.binary(min_size=1, max_size=64).map(
        lambda b: (base64.b64encode(b"\xff" + b).decode(), True)
    )
    invalid_base64 = st.sampled_from(["!!!", "abc", "=", "eyJ", "{}", "é"]).map(lambda s: (s, True))
    return plain | encoded | invalid_utf8 | invalid_base64 | st.just((None, False))


def post(enqueue: ModuleType, kind: str, trip_id: str, body: str | None, encoded: bool = False) -> dict:
    path, route = POST_ROUTES[kind]
    response = invoke(
        enqueue, api_event("POST", path.format(trip_id), route=route, body=body, base64_encoded=encoded)
    )
    assert_answered(response)
    hypothesis.event(f"{kind} {response['statusCode']}")  # --hypothesis-show-statistics: what was reached
    return response


@EXAMPLES
@given(data=st.data())
def test_post_routes_answer_any_body_without_a_5xx(enqueue, data):
    kind = data.draw(st.sampled_from(sorted(POST_ROUTES)), label="route")
    trip_id = data.draw(trip_ids, label="tripId")
    body, encoded = data.draw(raw_bodies(kind), label="body")
    post(enqueue, kind, trip_id, body, encoded)


@EXAMPLES
@given(data=st.data())
def test_post_routes_answer_near_valid_bodies_without_a_5xx(enqueue, data):
    """Valid bodies with a field or two changed: these get past the schema into the domain code."""
    kind = data.draw(st.sampled_from(sorted(POST_ROUTES)), label="route")
    value = data.draw(bodies_for(kind), label="body")
    ascii_only = data.draw(st.booleans(), label="ensure_ascii")
    post(enqueue, kind, TRIP, json.dumps(value, ensure_ascii=ascii_only))


@pytest.mark.parametrize("kind", sorted(POST_ROUTES))
def test_the_valid_bodies_are_accepted(enqueue, kind):
    """The control for the properties above: their starting bodies get through."""
    path, route = POST_ROUTES[kind]
    response = invoke(
        enqueue, api_event("POST", path.format(TRIP), route=route, body=json.dumps(VALID[kind]))
    )
    assert response["statusCode"] in (200, 201, 202), response


@EXAMPLES
@given(
    query=st.dictionaries(any_text | st.sampled_from(["template", "active_within_days"]), strings, max_size=3)
)
def test_the_estimate_answers_any_query_without_a_5xx(enqueue, query):
    event = api_event(
        "GET",
        f"/api/trips/{TRIP}/broadcasts/estimate",
        route="/api/trips/{tripId}/broadcasts/estimate",
        query=query,
    )
    assert_answered(invoke(enqueue, event))


@EXAMPLES
@given(trip_id=trip_ids)
def test_a_trip_id_finds_only_its_own_trip(enqueue, trip_id):
    event = api_event("GET", f"/api/trips/{trip_id}/ledger", route="/api/trips/{tripId}/ledger")
    response = invoke(enqueue, event)
    body = assert_answered(response)
    if trip_id.isascii() and trip_id.strip().lower() in (TRIP, K_TRIP):
        assert response["statusCode"] == 200 and body["trip_id"] == trip_id.strip().lower()
    else:
        assert response["statusCode"] == 404 and body["error"]["field"] == "tripId"


@pytest.mark.parametrize(
    ("body", "encoded"),
    [
        ("!!!not base64", True),  # invalid base64
        (base64.b64encode(b'{"slug": "\xff\xfe"}').decode(), True),  # invalid UTF-8
        ("[" * 30_000 + "]" * 30_000, False),  # nesting deeper than the parser's recursion limit
        ('{"slug": "\ud800"}', False),  # a lone surrogate in the event's body string
        ('{"\\ud800": 1}', False),  # an escaped lone surrogate as a field's name: 422
    ],
    ids=["bad-base64", "bad-utf8", "deep-nesting", "raw-surrogate", "escaped-surrogate-key"],
)
def test_undecodable_bodies_are_a_4xx_naming_the_body(enqueue, body, encoded):
    response = invoke(enqueue, api_event("POST", "/api/trips", body=body, base64_encoded=encoded))
    payload = assert_answered(response)
    assert response["statusCode"] in (400, 422)
    assert payload["error"]["field"] == "body"


def test_a_proof_with_a_long_image_url_is_a_422_not_a_crash(enqueue):
    body = json.dumps(
        {"participant_id": MEMBER_ID, "order_ref": "A", "image_url": "https://e.co/" + "é" * 400}
    )
    response = invoke(
        enqueue, api_event("POST", f"/api/trips/{TRIP}/proofs", route="/api/trips/{tripId}/proofs", body=body)
    )
    payload = assert_answered(response)
    assert response["statusCode"] == 422 and payload["error"]["field"] == "image_url"

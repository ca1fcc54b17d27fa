"""The OpenAPI document, generated from the routes of the API functions (Powertools builds each function's
part from its routes' models; ``document`` merges them), and what the routes declare with it: the one
error body (``Error``) and each route's documented answers (``answers``). Each function serves its own
part; the merged document is committed as ``docs/openapi.yaml`` (``python -m localrun.openapi --write``),
and ``tests/unit/test_openapi.py`` checks that the committed one is what the code generates."""

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from pydantic import BaseModel, ConfigDict, RootModel

ErrorCode = Literal[
    "invalid_json",
    "unauthorized",
    "forbidden",
    "not_found",
    "route_not_found",
    "conflict",
    "payload_too_large",
    "validation_error",
    "confirmation_required",
]


# ------------------------------------------------------------------------------------------ the error body
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use, not at import


class ErrorDetail(_Strict):
    field: str
    message: str


class ErrorInfo(_Strict):
    code: ErrorCode
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = None


class Error(_Strict):
    """Every refusal of the API functions: ``field`` names the input at fault (a body field such as
    ``price``, ``body`` for the body as a whole, a path parameter such as ``tripId``, ``Authorization``);
    validation errors list every problem in ``details``."""

    error: ErrorInfo


class GatewayError(_Strict):
    """API Gateway's own answer (no route matched the path; a body over its 10 MB)."""

    message: str


class ErrorOrGateway(RootModel[Error | GatewayError]):
    """Our error, or API Gateway's own answer when the request did not reach the function."""


# ------------------------------------------------------------------------- documented answers, per status
_ERRORS: dict[int, tuple[str, type[BaseModel]]] = {
    400: (
        "the body is not JSON, not a JSON object, or not UTF-8 (code `invalid_json`, `field` `body`)",
        Error,
    ),
    401: ("no `Authorization` header, or not `Bearer <token>` (code `unauthorized`)", Error),
    403: ("the token is not this API's (code `forbidden`, `field` `Authorization`)", Error),
    404: (
        "no such resource (code `not_found`, `field` naming the path parameter), or no route matched the "
        'path (API Gateway\'s `{"message": "Not Found"}`)',
        ErrorOrGateway,
    ),
    409: ("the request conflicts with an earlier one (code `conflict`, `field` names the input)", Error),
    413: (
        "the body is larger than `MAX_BODY_BYTES` (code `payload_too_large`), or larger than API Gateway's "
        '10 MB (its own `{"message"}` answer)',
        ErrorOrGateway,
    ),
    422: (
        "the body or a query parameter is not valid (code `validation_error`, with `details`), or a domain "
        "rule refused it (e.g. an unknown template, the wrong number of template parameters)",
        Error,
    ),
}
BODY_ERRORS = (400, 413, 422)  # a route that reads a JSON body
AUTH_ERRORS = (401, 403)


def answers(
    ok: Mapping[int, tuple[str, type[BaseModel]]] | None = None,
    errors: Iterable[int] = (),
    *,
    described: Mapping[int, str] | None = None,
    headers: Mapping[str, dict[str, Any]] | None = None,
) -> dict[int, Any]:
    """A route's documented answers: its successes (status → description, model; ``headers`` on them) and
    the errors it can give (the 401 and 403 of the token always), ``described`` overriding a description."""
    found: dict[int, Any] = {}
    for status, (description, model) in (ok or {}).items():
        found[status] = {"description": description, "content": {"application/json": {"model": model}}}
        if headers:
            found[status]["headers"] = dict(headers)
    for status in sorted({*AUTH_ERRORS, *errors}):
        description, model = _ERRORS[status]
        description = (described or {}).get(status, description)
        found[status] = {"description": description, "content": {"application/json": {"model": model}}}
    return found


NO_STORE_HEADER = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}

TRIP_ID = "jpn25"  # the trip of the examples (and of the README)

DESCRIPTION = """\
Served by `functions/enqueue` (`/api/...`, the backend's bearer token `API_TOKEN`) and `functions/admin`
(`/admin/api/...`, the operators' bearer token `ADMIN_TOKEN`) behind one API Gateway HTTP API
(`template.yaml`). Each token opens only its own routes: the other one is answered with 403. Each function
serves its part of this document (`GET /api/openapi.json`, `GET /admin/api/openapi.json`, with its token).

Request bodies are JSON objects and unknown fields are rejected. In the backend's bodies (not the admin
API's) string fields are stripped of leading and trailing white space before their limits are checked. A
body larger than `MAX_BODY_BYTES` (64 KiB by default) is answered with 413.

Every error the functions return has the same shape, `{"error": {"code", "message", "field"}}`: `field`
names the input at fault (a body field such as `price`, `body` for the body as a whole, a path parameter
such as `tripId`, `Authorization`); validation errors (422, code `validation_error`) list every problem in
`details`. A request that matches no route is answered by API Gateway itself: 404 `{"message": "Not Found"}`.

The Meta webhook (`/api/webhooks/whatsapp`, signed by Meta, no bearer token) and the admin HTML page
(`GET /admin/queues`) are not part of this description.

Generated from the code (`python -m localrun.openapi --write`): do not edit `docs/openapi.yaml` by hand.
"""

OPENAPI: dict[str, Any] = {
    "title": "Jastipin messaging API",
    "version": "0.1.0",
    "summary": "The jastiper-facing HTTP API (trips, products, broadcasts, proofs, ledger) and the "
    "operators' admin API.",
    "description": DESCRIPTION,
    "servers": [
        {
            "url": "http://127.0.0.1:3000",
            "description": "the local runtime (`make run`; tokens `local-api-token` and `local-admin-token`)",
        },
        {
            "url": "https://{apiId}.execute-api.{region}.amazonaws.com",
            "description": "the deployed stack (stack output `ApiUrl`)",
            "variables": {"apiId": {"default": "a1b2c3d4e5"}, "region": {"default": "ap-southeast-3"}},
        },
    ],
    "tags": [
        {
            "name": "trips",
            "description": "trips and product uploads (product updates fan out behind the notifications "
            "queue)",
        },
        {
            "name": "broadcasts",
            "description": "paid template broadcasts and their cost estimate (the broadcast queue, FIFO per "
            "trip)",
        },
        {
            "name": "proofs",
            "description": "order and transfer proofs sent to the jastiper (the proof_notify queue)",
        },
        {"name": "ledger", "description": "per trip, what was estimated, sent and billed"},
        {
            "name": "admin",
            "description": "operators' view of the queues and dead-letter queues, and the recent outcomes "
            "of a trip",
        },
    ],
    "security_schemes": {
        "apiToken": {"type": "http", "scheme": "bearer"},
        "adminToken": {"type": "http", "scheme": "bearer"},
    },
}

# Powertools' own validation-error schemas: our handlers answer those errors with ``Error``.
_UNUSED = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def part(app: APIGatewayHttpResolver) -> dict[str, Any]:
    """One function's routes as an OpenAPI document."""
    doc: dict[str, Any] = json.loads(app.get_openapi_json_schema(**OPENAPI))
    for item in doc["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {})
            if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # a route without a 422 of its own: validation cannot fail there
            operation["responses"] = dict(sorted(responses.items()))
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _UNUSED:
        schemas.pop(name, None)
    return doc


def document(*apps: APIGatewayHttpResolver) -> dict[str, Any]:
    """The functions' parts in one document: the info of the first, every path and component."""
    merged: dict[str, Any] | None = None
    for app in apps:
        doc = part(app)
        if merged is None:
            merged = doc
            continue
        for path, item in doc["paths"].items():
            if path in merged["paths"]:
                raise ValueError(f"{path} is routed by two functions")
            merged["paths"][path] = item
        for section, entries in doc.get("components", {}).items():
            target = merged.setdefault("components", {}).setdefault(section, {})
            for name, entry in entries.items():
                if name in target and target[name] != entry:
                    raise ValueError(f"components.{section}.{name} differs between the functions")
                target[name] = entry
    if merged is None:
        raise ValueError("no function to describe")
    merged["paths"] = dict(sorted(merged["paths"].items()))
    for entries in merged.get("components", {}).values():
        entries_sorted = dict(sorted(entries.items()))
        entries.clear()
        entries.update(entries_sorted)
    return merged


@lru_cache(maxsize=4)
def _served(app: APIGatewayHttpResolver) -> str:
    return json.dumps(part(app), ensure_ascii=False, indent=1)


def openapi_json(app: APIGatewayHttpResolver) -> Response[str]:
    """The function's part, generated once per container."""
    return Response(
        status_code=200,
        content_type="application/json",
        body=_served(app),
        headers={"Cache-Control": "no-cache"},
    )

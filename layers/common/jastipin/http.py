"""HTTP edge helpers shared by the API functions: bearer auth, body parsing into pydantic models, and the
one place that maps errors (``jastipin.errors``) to status codes and JSON bodies (never a 500 for bad
input)."""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from pydantic import BaseModel, ValidationError

from jastipin.errors import JastipinError

M = TypeVar("M", bound=BaseModel)


class HttpError(JastipinError):
    """A request refused at the edge (auth, body, size): a ``JastipinError`` with its own status and code."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, field=field, details=details, status_code=status_code, code=code)


def json_response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type="application/json",
        body=json.dumps(body, ensure_ascii=False, default=str),
        headers=headers,
    )


def error_body(
    code: str, message: str, field: str | None = None, details: list[Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    if details:
        error["details"] = details
    return {"error": error}


def require_bearer(app: APIGatewayHttpResolver, expected: str) -> None:
    """401 when the Authorization header is missing or not a bearer token, 403 when the token is wrong."""
    header = app.current_event.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(401, "unauthorized", "missing bearer token", field="Authorization")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HttpError(403, "forbidden", "invalid token", field="Authorization")


def raw_body(app: APIGatewayHttpResolver, max_bytes: int) -> bytes:
    event = app.current_event
    body = event.body or ""
    try:
        data = base64.b64decode(body) if event.is_base64_encoded else body.encode("utf-8")
    except ValueError:  # binascii.Error (not base64), UnicodeEncodeError (lone surrogates: not UTF-8)
        raise HttpError(400, "invalid_json", "body is not valid base64 or UTF-8", field="body") from None
    if len(data) > max_bytes:
        raise HttpError(413, "payload_too_large", f"body is larger than {max_bytes} bytes", field="body")
    return data


def parse_body(app: APIGatewayHttpResolver, model: type[M], max_bytes: int) -> M:
    data = raw_body(app, max_bytes)
    if not data.strip():
        raise HttpError(400, "invalid_json", "request body must be a JSON object", field="body")
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "invalid_json", f"malformed JSON: {exc}", field="body") from None
    except RecursionError:
        raise HttpError(400, "invalid_json", "malformed JSON: nested too deeply", field="body") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "invalid_json", "request body must be a JSON object", field="body")
    return validate(model, payload)


def validate(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> HttpError:
    details = [
        {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return HttpError(422, "validation_error", message, field=details[0]["field"], details=details)


def install_error_handlers(app: APIGatewayHttpResolver) -> None:
    """The single status-code mapping for every API function."""

    @app.exception_handler(JastipinError)  # type: ignore[untyped-decorator]  # Powertools leaves it untyped
    def _error(exc: JastipinError) -> Response[str]:
        return json_response(exc.status_code, error_body(exc.code, exc.message, exc.field, exc.details))

    @app.not_found
    def _not_found(_exc: Exception) -> Response[str]:
        return json_response(404, error_body("route_not_found", "no such route"))

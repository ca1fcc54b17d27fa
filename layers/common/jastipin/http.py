"""The HTTP edge shared by the API functions (enqueue, admin; the webhook uses the body and error parts).

- ``api_resolver()``: Powertools' HTTP resolver with request and response validation on. Routes declare
  their body, query and answer as pydantic models; the OpenAPI document is generated from them
  (``openapi_document``) and served by each function.
- ``Guarded``: the bearer-token check and the body's size and encoding, before the resolver. Powertools
  validates a request before any of its middlewares run, so a check there would answer a request without a
  token with 422 and the schema's field names; the guard answers it with 401 first.
- One error body, ``{"error": {"code", "message", "field"?, "details"?}}``, for every refusal: our own
  errors (``jastipin.errors``), the resolver's validation errors, an unknown route. Never a 500 for bad input.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
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


def error_body(
    code: str, message: str, field: str | None = None, details: list[Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    if details:
        error["details"] = details
    return {"error": error}


def json_response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type="application/json",
        body=json.dumps(body, ensure_ascii=False, default=str),
        headers=headers,
    )


def error_response(exc: JastipinError) -> Response[str]:
    return json_response(exc.status_code, error_body(exc.code, exc.message, exc.field, exc.details))


NO_STORE = {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------------------- the resolver
def api_resolver() -> APIGatewayHttpResolver:
    """An HTTP API resolver validating requests and answers against the routes' models, answering every
    refusal with the one error body. Not found routes answer 404 ``route_not_found``."""
    from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

    app = APIGatewayHttpResolver(
        enable_validation=True,
        serializer=partial(json.dumps, ensure_ascii=False, separators=(",", ":"), default=str),
    )
    install_error_handlers(app)

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]  # Powertools: untyped
    def _invalid(exc: RequestValidationError) -> Response[str]:
        return error_response(request_error(exc.errors()))

    @app.exception_handler(RecursionError)  # type: ignore[untyped-decorator]
    def _too_deep(_exc: RecursionError) -> Response[str]:
        return error_response(
            HttpError(400, "invalid_json", "malformed JSON: nested too deeply", field="body")
        )

    return app


def install_error_handlers(app: APIGatewayHttpResolver) -> None:
    """The single status-code mapping for every API function."""

    @app.exception_handler(JastipinError)  # type: ignore[untyped-decorator]  # Powertools leaves it untyped
    def _error(exc: JastipinError) -> Response[str]:
        return error_response(exc)

    @app.not_found
    def _not_found(_exc: Exception) -> Response[str]:
        return json_response(404, error_body("route_not_found", "no such route"))


_NOT_AN_OBJECT = {"missing", "model_attributes_type", "model_type", "dict_type"}
_LOCATIONS = ("body", "query", "path", "header")


def request_error(errors: Iterable[Any]) -> HttpError:
    """Powertools' validation errors as our body: a body that is missing, not JSON or not an object is 400
    ``invalid_json`` naming ``body``; anything else is 422 naming the field (without its location)."""
    errors = list(errors)
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("body",) and err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            return HttpError(400, "invalid_json", f"malformed JSON: {reason}".rstrip(": "), field="body")
        if loc == ("body",) and err.get("type") in _NOT_AN_OBJECT:
            return HttpError(400, "invalid_json", "request body must be a JSON object", field="body")
    return _unprocessable([{**err, "loc": _field_of(tuple(err.get("loc", ())))} for err in errors])


def _field_of(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The input's own path: ``("body", "items", 0)`` is ``items.0``; a parameter is its name, also when
    pydantic names the branch of a union that failed (``("query", "limit", "int")`` is ``limit``)."""
    if not loc or loc[0] not in _LOCATIONS:
        return loc
    if loc[0] != "body":
        return loc[1:2]
    return loc[1:]


def _unprocessable(errors: list[Mapping[str, Any]]) -> HttpError:
    details = [
        {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"]}
        for err in errors
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return HttpError(422, "validation_error", message, field=details[0]["field"], details=details)


def validate(model: type[M], payload: Any) -> M:
    """A payload validated by a model outside a route (a query built by hand, a test): the same 422."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> HttpError:
    return _unprocessable(list(exc.errors(include_url=False, include_input=False)))


# -------------------------------------------------------------------------------------------- the guard
def raw_body(event: Mapping[str, Any], max_bytes: int) -> bytes:
    """The request body's bytes: 400 when it is not base64 (as flagged) or not UTF-8, 413 over
    ``max_bytes``."""
    body = event.get("body") or ""
    try:
        data = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    except ValueError:  # binascii.Error (not base64), UnicodeEncodeError (lone surrogates: not UTF-8)
        raise HttpError(400, "invalid_json", "body is not valid base64 or UTF-8", field="body") from None
    if len(data) > max_bytes:
        raise HttpError(413, "payload_too_large", f"body is larger than {max_bytes} bytes", field="body")
    return data


def require_bearer(headers: Mapping[str, str], expected: str) -> None:
    """401 when the Authorization header is missing or not a bearer token, 403 when the token is wrong."""
    header = next((v for k, v in headers.items() if k.lower() == "authorization"), "") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(401, "unauthorized", "missing bearer token", field="Authorization")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HttpError(403, "forbidden", "invalid token", field="Authorization")


class Guarded:
    """A resolver behind the bearer token and the body checks. Routes in ``open_routes`` (``"GET /path"``)
    need no token; every other request must carry ``token()``. A body that passes reaches the resolver as
    UTF-8 text (a base64 body decoded), so the resolver's JSON parsing sees what was checked."""

    def __init__(
        self,
        app: APIGatewayHttpResolver,
        *,
        token: Callable[[], str],
        max_body_bytes: Callable[[], int],
        open_routes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._token = token
        self._max_body_bytes = max_body_bytes
        self._open = frozenset(open_routes)

    def resolve(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            event = self.admit(event)
        except HttpError as exc:  # answered as the resolver answers (an HTTP API payload 2.0 response)
            return {
                "statusCode": exc.status_code,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(
                    error_body(exc.code, exc.message, exc.field, exc.details), ensure_ascii=False
                ),
                "isBase64Encoded": False,
                "cookies": [],
            }
        return self.app.resolve(event, context)

    def admit(self, event: dict[str, Any]) -> dict[str, Any]:
        http = (event.get("requestContext") or {}).get("http") or {}
        route = f"{str(http.get('method', '')).upper()} {event.get('rawPath', '')}"
        if route not in self._open:
            require_bearer(event.get("headers") or {}, self._token())
        data = raw_body(event, self._max_body_bytes())
        if event.get("isBase64Encoded"):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, "invalid_json", "body is not UTF-8", field="body") from None
            event = {**event, "body": text, "isBase64Encoded": False}
        if data:
            # Every body is read as JSON, whatever Content-Type says (the resolver would otherwise parse a
            # form, or fail on a multipart type without a boundary).
            headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-type"}
            event = {**event, "headers": {**headers, "content-type": "application/json"}}
        return event

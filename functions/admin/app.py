"""Admin API and page for operators (the spec's Bull Board at ``/admin/queues``), behind its own bearer token
(``ADMIN_TOKEN``; the backend's ``API_TOKEN`` does not open it, nor does this token open the backend's).

| route | does |
|---|---|
| ``GET /admin/queues`` | the admin page (static HTML, no data: it asks for the token and calls the API) |
| ``GET /admin/api/queues`` | per queue and DLQ: visible, in flight, delayed; the DLQ's oldest age |
| ``GET /admin/api/queues/{queue}/dlq?limit=50`` | the DLQ's messages, without personal data |
| ``POST /admin/api/queues/{queue}/dlq/redrive`` | ``{"message_ids": [...]}`` or ``{"all": true}`` |
| ``POST /admin/api/queues/{queue}/dlq/purge`` | ``{"confirm": "<queue>"}``: delete the DLQ's messages |
| ``POST /admin/api/queues/{queue}/purge`` | ``{"confirm": "<queue>"}``: delete the queue's waiting messages |
| ``GET /admin/api/trips/{tripId}/outcomes?limit=50&status=failed`` | the trip's newest log entries |

``{queue}`` is ``notifications``, ``broadcast``, ``proof_notify`` or ``inbound`` (participants' messages
waiting for the inbound function)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin.http import HttpError, install_error_handlers, json_response, parse_body, require_bearer
from jastipin.operations import observability
from jastipin.operations.outcomes import recent_outcomes
from jastipin.operations.views import PurgeRequest, RedriveRequest
from jastipin.runtime import services

logger = Logger()
tracer = Tracer()
app = APIGatewayHttpResolver()
install_error_handlers(app)
observability.init_sentry()  # only when SENTRY_DSN is set

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")


def _csp_hashes(tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", PAGE, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
    )


# The page's inline script and style are allowed by hash; nothing else loads, nothing frames it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hashes('script')}; style-src {_csp_hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {"Cache-Control": "no-store"}


def authorize() -> None:
    require_bearer(app, services().settings.secret("admin_token"))


def time_left() -> float:
    return app.lambda_context.get_remaining_time_in_millis() / 1000


def int_param(name: str, default: int) -> int:
    raw = app.current_event.get_query_string_value(name, None)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HttpError(422, "validation_error", f"{name}: must be a whole number", field=name) from None


@app.get("/admin/queues")
def page():
    return Response(
        status_code=200, content_type="text/html; charset=utf-8", body=PAGE, headers={**PAGE_HEADERS}
    )


@app.get("/admin/api/queues")
@tracer.capture_method(capture_response=False)
def queues():
    authorize()
    stats = services().queue_admin.stats()
    return json_response(200, {"queues": [s.model_dump(mode="json") for s in stats]}, {**NO_STORE})


@app.get("/admin/api/queues/<queue>/dlq")
@tracer.capture_method(capture_response=False)
def dlq_messages(queue: str):
    authorize()
    listing = services().queue_admin.list_dlq(queue, int_param("limit", 50))
    return json_response(200, listing.model_dump(mode="json"), {**NO_STORE})


@app.post("/admin/api/queues/<queue>/dlq/redrive")
@tracer.capture_method(capture_response=False)
def redrive(queue: str):
    authorize()
    svc = services()
    request = parse_body(app, RedriveRequest, svc.settings.max_body_bytes)
    result = svc.queue_admin.redrive(queue, request, time_left)
    logger.info(
        "DLQ redriven",
        extra={"queue": result.queue, "all": request.all, "moved": result.moved, "done": result.done},
    )
    return json_response(200, result.model_dump(mode="json"))


@app.post("/admin/api/queues/<queue>/dlq/purge")
@tracer.capture_method(capture_response=False)
def purge_dlq(queue: str):
    return _purge(queue, "dlq")


@app.post("/admin/api/queues/<queue>/purge")
@tracer.capture_method(capture_response=False)
def purge_queue(queue: str):
    return _purge(queue, "queue")


def _purge(queue: str, target: str) -> Response:
    authorize()
    svc = services()
    request = parse_body(app, PurgeRequest, svc.settings.max_body_bytes)
    result = svc.queue_admin.purge(queue, target, request, time_left)  # type: ignore[arg-type]
    logger.warning(
        "queue purged",
        extra={"queue": result.queue, "target": target, "deleted": result.deleted, "done": result.done},
    )
    return json_response(200, result.model_dump(mode="json"))


@app.get("/admin/api/trips/<tripId>/outcomes")
@tracer.capture_method(capture_response=False)
def trip_outcomes(tripId: str):  # noqa: N803 - the path parameter's name in template.yaml
    authorize()
    services()  # binds the tables
    status = app.current_event.get_query_string_value("status", None) or None
    result = recent_outcomes(tripId, limit=int_param("limit", 50), status=status, time_left=time_left)
    return json_response(200, result.model_dump(mode="json"), {**NO_STORE})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)

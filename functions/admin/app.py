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

import base64
import hashlib
import re
from pathlib import Path as FilePath
from typing import Annotated, Literal

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin.http import NO_STORE, Guarded, api_resolver
from jastipin.openapi import BODY_ERRORS, NO_STORE_HEADER, OPENAPI, TRIP_ID, answers, openapi_json
from jastipin.operations import observability
from jastipin.operations.outcomes import recent_outcomes
from jastipin.operations.views import (
    DlqListing,
    OutcomeStatus,
    PurgeRequest,
    PurgeResult,
    QueuesView,
    RedriveRequest,
    RedriveResult,
    TripOutcomes,
)
from jastipin.runtime import Services, services
from jastipin.settings import AdminSettings

logger = Logger()


def this() -> Services[AdminSettings]:
    """This function's services: its settings are ``AdminSettings``."""
    return services(AdminSettings)


tracer = Tracer()
app = api_resolver()
app.configure_openapi(**OPENAPI)
PAGE_ROUTE = "GET /admin/queues"
api = Guarded(
    app,
    token=lambda: this().settings.secret("admin_token"),
    max_body_bytes=lambda: this().settings.max_body_bytes,
    open_routes=[PAGE_ROUTE],  # the page holds no data: it asks for the token and calls the API
)
observability.init_sentry()  # only when SENTRY_DSN is set

PAGE = (FilePath(__file__).parent / "page.html").read_text(encoding="utf-8")


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
TOKEN: list[dict[str, list[str]]] = [{"adminToken": []}]
QUEUE_DOC = "`notifications`, `broadcast`, `proof_notify` or `inbound`; another name is 404 (`field` `queue`)"
QueueParam = Annotated[str, Path(min_length=1, description=QUEUE_DOC, examples=["notifications"])]
TripId = Annotated[str, Path(min_length=1, examples=[TRIP_ID])]
DLQ_LIMIT = (
    "how many messages at most (default 50, also when empty); values outside 1-100 are clamped to that "
    "range; not a whole number is 422"
)
OUTCOMES_LIMIT = (
    "how many entries at most (default 50, also when empty); values outside 1-200 are clamped to that "
    "range; not a whole number is 422"
)
QUEUE_404 = {404: "no such queue (code `not_found`, `field` `queue`), or no route matched the path"}
PURGE_ANSWERS = answers(  # the same for the queue's purge and the DLQ's
    {200: ("what was deleted (`done: false`: time ran out with messages left, call again)", PurgeResult)},
    [*BODY_ERRORS, 404],
    described={
        **QUEUE_404,
        422: "the body is not valid (code `validation_error`), or `confirm` is not the queue's name (code "
        "`confirmation_required`, `field` `confirm`)",
    },
)
DEFAULT_LIMIT = 50


def limit_or_default(limit: int | Literal[""]) -> int:
    """``?limit=`` (empty) is the default, as no limit at all."""
    return limit if isinstance(limit, int) else DEFAULT_LIMIT


def time_left() -> float:
    return app.lambda_context.get_remaining_time_in_millis() / 1000


@app.get(PAGE_ROUTE.split(" ")[1], include_in_schema=False, enable_validation=False)
def page() -> Response[str]:
    return Response(
        status_code=200, content_type="text/html; charset=utf-8", body=PAGE, headers={**PAGE_HEADERS}
    )


@app.get(
    "/admin/api/queues",
    summary="Per queue and its DLQ, the messages visible, in flight and delayed; the DLQ's oldest age",
    operation_id="queueStats",
    tags=["admin"],
    security=TOKEN,
    responses=answers({200: ("the queues", QueuesView)}, headers=NO_STORE_HEADER),
)
@tracer.capture_method(capture_response=False)
def queues() -> Response[QueuesView]:
    stats = this().queue_admin.stats()
    return Response(200, "application/json", QueuesView(queues=stats), headers={**NO_STORE})


@app.get(
    "/admin/api/queues/<queue>/dlq",
    summary="The DLQ's messages, without personal data (what each job is, never whom it is for)",
    operation_id="listDlq",
    tags=["admin"],
    security=TOKEN,
    responses=answers(
        {200: ("the DLQ's messages", DlqListing)}, [404, 422], described=QUEUE_404, headers=NO_STORE_HEADER
    ),
)
@tracer.capture_method(capture_response=False)
def dlq_messages(
    queue: QueueParam,
    limit: Annotated[int | Literal[""], Query(description=DLQ_LIMIT)] = DEFAULT_LIMIT,
) -> Response[DlqListing]:
    listing = this().queue_admin.list_dlq(queue, limit_or_default(limit))
    return Response(200, "application/json", listing, headers={**NO_STORE})


@app.post(
    "/admin/api/queues/<queue>/dlq/redrive",
    summary="Move DLQ messages (the listed ids, or all) back to the queue they failed on",
    operation_id="redriveDlq",
    tags=["admin"],
    security=TOKEN,
    responses=answers(
        {200: ("what was moved (`done: false`: time ran out with messages left, call again)", RedriveResult)},
        [*BODY_ERRORS, 404],
        described=QUEUE_404,
    ),
)
@tracer.capture_method(capture_response=False)
def redrive(queue: QueueParam, request: Annotated[RedriveRequest, Body()]) -> RedriveResult:
    result = this().queue_admin.redrive(queue, request, time_left)
    logger.info(
        "DLQ redriven",
        extra={"queue": result.queue, "all": request.all, "moved": result.moved, "done": result.done},
    )
    return result


@app.post(
    "/admin/api/queues/<queue>/dlq/purge",
    summary="Delete the DLQ's visible messages (the body must repeat the queue's name)",
    operation_id="purgeDlq",
    tags=["admin"],
    security=TOKEN,
    responses=PURGE_ANSWERS,
)
@tracer.capture_method(capture_response=False)
def purge_dlq(queue: QueueParam, request: Annotated[PurgeRequest, Body()]) -> PurgeResult:
    return _purge(queue, "dlq", request)


@app.post(
    "/admin/api/queues/<queue>/purge",
    summary="Delete the queue's waiting messages (the body must repeat its name; in-flight ones stay)",
    operation_id="purgeQueue",
    tags=["admin"],
    security=TOKEN,
    responses=PURGE_ANSWERS,
)
@tracer.capture_method(capture_response=False)
def purge_queue(queue: QueueParam, request: Annotated[PurgeRequest, Body()]) -> PurgeResult:
    return _purge(queue, "queue", request)


def _purge(queue: str, target: Literal["queue", "dlq"], request: PurgeRequest) -> PurgeResult:
    result = this().queue_admin.purge(queue, target, request, time_left)
    logger.warning(
        "queue purged",
        extra={"queue": result.queue, "target": target, "deleted": result.deleted, "done": result.done},
    )
    return result


@app.get(
    "/admin/api/trips/<tripId>/outcomes",
    summary="The trip's newest notification log entries (pseudonymous participant ids, no message text)",
    operation_id="tripOutcomes",
    tags=["admin"],
    security=TOKEN,
    responses=answers(
        {200: ("the entries, newest first", TripOutcomes)}, [404, 422], headers=NO_STORE_HEADER
    ),
)
@tracer.capture_method(capture_response=False)
def trip_outcomes(
    tripId: TripId,  # noqa: N803 - the path parameter's name in template.yaml
    limit: Annotated[int | Literal[""], Query(description=OUTCOMES_LIMIT)] = DEFAULT_LIMIT,
    status: Annotated[OutcomeStatus, Query(description="only entries of this status (empty: any)")] = "",
) -> Response[TripOutcomes]:
    this()  # binds the tables
    result = recent_outcomes(
        tripId, limit=limit_or_default(limit), status=status or None, time_left=time_left
    )
    return Response(200, "application/json", result, headers={**NO_STORE})


@app.get("/admin/api/openapi.json", include_in_schema=False, enable_validation=False)
def openapi() -> Response[str]:
    return openapi_json(app)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> dict:
    return api.resolve(event, context)

"""HTTP API for the Jastipin backend: trips, product uploads (→ notifications queue), broadcasts, proofs.

Each route declares its body, query and answers as pydantic models: Powertools validates the request before
the route runs and the answer after, and generates the OpenAPI document from them (served at
``GET /api/openapi.json``, committed as ``docs/openapi.yaml``). Every request carries the backend's bearer
token (``jastipin.http.Guarded``)."""

from typing import Annotated

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin import audience, broadcasts, ledger, proofs, trips, views
from jastipin.http import Guarded, api_resolver, validate
from jastipin.openapi import BODY_ERRORS, OPENAPI, TRIP_ID, answers, openapi_json
from jastipin.operations import observability
from jastipin.runtime import Services, services
from jastipin.settings import EnqueueSettings

logger = Logger()


def this() -> Services[EnqueueSettings]:
    """This function's services: its settings are ``EnqueueSettings``."""
    return services(EnqueueSettings)


tracer = Tracer()
app = api_resolver()
app.configure_openapi(**OPENAPI)
api = Guarded(
    app,
    token=lambda: this().settings.secret("api_token"),
    max_body_bytes=lambda: this().settings.max_body_bytes,
)
observability.init_sentry()  # only when SENTRY_DSN is set

TOKEN: list[dict[str, list[str]]] = [{"apiToken": []}]
TripId = Annotated[str, Path(min_length=1, examples=[TRIP_ID])]
TEMPLATE = (
    "a template of the registry (built in `trip_reminder`, `product_update`, `proof_received`, plus "
    "`TEMPLATES_JSON`); an unknown one is 422 with `field` `template`"
)


@app.post(
    "/api/trips",
    status_code=201,
    summary="Create a trip (its slug is what participants type after JOIN)",
    operation_id="createTrip",
    tags=["trips"],
    security=TOKEN,
    responses=answers(
        {201: ("the trip was created", views.TripView)},
        [*BODY_ERRORS, 409],
        described={409: "the slug is already taken (code `conflict`, `field` `slug`)"},
    ),
)
@tracer.capture_method(capture_response=False)
def create_trip(request: Annotated[trips.CreateTripRequest, Body()]) -> views.TripView:
    trip = trips.create_trip(request, this().settings)
    logger.info("trip created", extra={"trip_id": trip.trip_id})
    return views.TripView.model_validate(trips.trip_view(trip))


@app.post(
    "/api/trips/<tripId>/products",
    status_code=202,
    summary="Upload a product; its update to the trip's participants is queued (one fan-out job)",
    operation_id="uploadProduct",
    tags=["trips"],
    security=TOKEN,
    responses=answers(
        {202: ("the product was saved and its fan-out job queued", views.ProductQueued)}, [*BODY_ERRORS, 404]
    ),
)
@tracer.capture_method(capture_response=False)
def upload_product(
    tripId: TripId,  # noqa: N803 - the path parameter's name in template.yaml
    request: Annotated[trips.NewProductRequest, Body()],
) -> views.ProductQueued:
    svc = this()
    product, job = trips.upload_product(tripId, request, svc.queues, svc.settings)
    logger.info("product queued", extra={"trip_id": product.trip_id, "job_id": job.job_id})
    return views.ProductQueued(
        job_id=job.job_id, product_id=product.product_id, trip_id=product.trip_id, status="queued"
    )


@app.get(
    "/api/trips/<tripId>/broadcasts/estimate",
    summary="What a broadcast of a template would cost (nothing is sent)",
    operation_id="estimateBroadcast",
    tags=["broadcasts"],
    security=TOKEN,
    responses=answers({200: ("the estimate", views.Estimate)}, [404, 422]),
)
@tracer.capture_method(capture_response=False)
def estimate_broadcast(
    tripId: TripId,  # noqa: N803
    template: Annotated[
        str, Query(min_length=1, max_length=512, description=TEMPLATE, examples=["trip_reminder"])
    ],
    active_within_days: Annotated[broadcasts.ActiveWithinDays, Query()] = audience.DEFAULT_ACTIVE_WITHIN_DAYS,
) -> views.Estimate:
    # the model's own rules too (a template of white space only is empty once stripped: 422 naming it)
    query = validate(
        broadcasts.EstimateQuery, {"template": template, "active_within_days": active_within_days}
    )
    return views.Estimate.model_validate(broadcasts.estimate(tripId, query, this().settings).view())


@app.post(
    "/api/trips/<tripId>/broadcasts",
    status_code=202,
    summary="Queue a paid template broadcast to the trip's active audience (or estimate it with dry_run)",
    description=(
        "Nothing is broadcast automatically: only this request without `dry_run` queues a broadcast. The "
        "same `idempotency_key` with the same template, parameters and filter returns the first broadcast "
        "(`duplicate: true`) and queues nothing new; with a different request it is 409."
    ),
    operation_id="createBroadcast",
    tags=["broadcasts"],
    security=TOKEN,
    responses=answers(
        {
            200: ("`dry_run: true`: the estimate, nothing queued", views.DryRunEstimate),
            202: (
                "the broadcast was recorded and its fan-out job queued (or it is a repeat of an "
                "idempotency key, `duplicate: true`)",
                views.Broadcast,
            ),
        },
        [*BODY_ERRORS, 404, 409],
        described={
            409: "the `idempotency_key` was already used for a different broadcast "
            "(`field` `idempotency_key`)"
        },
    ),
)
@tracer.capture_method(capture_response=False)
def create_broadcast(
    tripId: TripId,  # noqa: N803
    request: Annotated[broadcasts.BroadcastRequest, Body()],
) -> Response[views.Broadcast | views.DryRunEstimate]:
    svc = this()
    result = broadcasts.submit(tripId, request, svc.settings, svc.queues)
    if request.dry_run:
        return Response(200, "application/json", views.DryRunEstimate.model_validate(result))
    logger.info(
        "broadcast queued",
        extra={"trip_id": result["trip_id"], "job_id": result["job_id"], "duplicate": result["duplicate"]},
    )
    return Response(202, "application/json", views.Broadcast.model_validate(result))


@app.post(
    "/api/trips/<tripId>/proofs",
    status_code=202,
    summary="Send a participant's proof (an image) to the jastiper on WhatsApp",
    description=(
        "Inside the jastiper's 24-hour window the proof goes as an image with a caption, outside it as the "
        "`proof_received` template. The job id is derived from trip, participant, order and image: the same "
        "proof again is the same job, sent once."
    ),
    operation_id="submitProof",
    tags=["proofs"],
    security=TOKEN,
    responses=answers(
        {202: ("the proof's job was queued", views.ProofQueued)},
        [*BODY_ERRORS, 404],
        described={
            422: "the body is not valid (code `validation_error`, with `details`), neither or both of "
            "`image_url` and `media_id` were given (`field` `image_url`), or the participant is not a member "
            "of the trip (`field` `participant_id`)"
        },
    ),
)
@tracer.capture_method(capture_response=False)
def submit_proof(
    tripId: TripId,  # noqa: N803
    request: Annotated[proofs.ProofRequest, Body()],
) -> views.ProofQueued:
    svc = this()
    job = proofs.submit(tripId, request, svc.settings, svc.queues)
    logger.info("proof queued", extra={"trip_id": job.trip_id, "job_id": job.job_id})
    return views.ProofQueued(job_id=job.job_id, trip_id=job.trip_id, status="queued")


@app.get(
    "/api/trips/<tripId>/ledger",
    summary="Estimates beside what was sent and what Meta reported as billed",
    operation_id="tripLedger",
    tags=["ledger"],
    security=TOKEN,
    responses=answers({200: ("the trip's ledger", views.Ledger)}, [404]),
)
@tracer.capture_method(capture_response=False)
def trip_ledger(tripId: TripId) -> views.Ledger:  # noqa: N803
    return views.Ledger.model_validate(ledger.trip_ledger(tripId, this().settings))


@app.get("/api/openapi.json", include_in_schema=False, enable_validation=False)
def openapi() -> Response[str]:
    return openapi_json(app)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> dict:
    return api.resolve(event, context)

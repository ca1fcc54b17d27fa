"""HTTP API for the Jastipin backend: trips, product uploads (→ notifications queue), broadcasts, proofs."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin import broadcasts, ledger, proofs, trips
from jastipin.http import install_error_handlers, json_response, parse_body, require_bearer, validate
from jastipin.operations import observability
from jastipin.runtime import services

logger = Logger()
tracer = Tracer()
app = APIGatewayHttpResolver()
install_error_handlers(app)
observability.init_sentry()  # only when SENTRY_DSN is set


def authorize() -> None:
    require_bearer(app, services().settings.secret("api_token"))


@app.post("/api/trips")
@tracer.capture_method(capture_response=False)
def create_trip():
    authorize()
    request = parse_body(app, trips.CreateTripRequest, services().settings.max_body_bytes)
    trip = trips.create_trip(request, services().settings)
    logger.info("trip created", extra={"trip_id": trip.trip_id})
    return json_response(201, trips.trip_view(trip))


@app.post("/api/trips/<tripId>/products")
@tracer.capture_method(capture_response=False)
def upload_product(tripId: str):  # noqa: N803 - the path parameter's name in template.yaml
    authorize()
    svc = services()
    request = parse_body(app, trips.NewProductRequest, svc.settings.max_body_bytes)
    product, job = trips.upload_product(tripId, request, svc.queues, svc.settings)
    logger.info("product queued", extra={"trip_id": product.trip_id, "job_id": job.job_id})
    return json_response(
        202,
        {
            "job_id": job.job_id,
            "product_id": product.product_id,
            "trip_id": product.trip_id,
            "status": "queued",
        },
    )


@app.get("/api/trips/<tripId>/broadcasts/estimate")
@tracer.capture_method(capture_response=False)
def estimate_broadcast(tripId: str):  # noqa: N803
    authorize()
    query = validate(broadcasts.EstimateQuery, app.current_event.query_string_parameters or {})
    return json_response(200, broadcasts.estimate(tripId, query, services().settings).view())


@app.post("/api/trips/<tripId>/broadcasts")
@tracer.capture_method(capture_response=False)
def create_broadcast(tripId: str):  # noqa: N803
    authorize()
    svc = services()
    request = parse_body(app, broadcasts.BroadcastRequest, svc.settings.max_body_bytes)
    result = broadcasts.submit(tripId, request, svc.settings, svc.queues)
    if request.dry_run:
        return json_response(200, result)
    logger.info(
        "broadcast queued",
        extra={"trip_id": result["trip_id"], "job_id": result["job_id"], "duplicate": result["duplicate"]},
    )
    return json_response(202, result)


@app.post("/api/trips/<tripId>/proofs")
@tracer.capture_method(capture_response=False)
def submit_proof(tripId: str):  # noqa: N803
    authorize()
    svc = services()
    request = parse_body(app, proofs.ProofRequest, svc.settings.max_body_bytes)
    job = proofs.submit(tripId, request, svc.settings, svc.queues)
    logger.info("proof queued", extra={"trip_id": job.trip_id, "job_id": job.job_id})
    return json_response(202, {"job_id": job.job_id, "trip_id": job.trip_id, "status": "queued"})


@app.get("/api/trips/<tripId>/ledger")
@tracer.capture_method(capture_response=False)
def trip_ledger(tripId: str):  # noqa: N803
    authorize()
    return json_response(200, ledger.trip_ledger(tripId, services().settings))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)

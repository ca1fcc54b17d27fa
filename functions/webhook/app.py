"""WhatsApp webhook: Meta's verification handshake (GET) and signed inbound messages and statuses (POST).

Answers 200 fast whatever the content (Meta retries non-200 for 7 days): inbound messages and the statuses
that can change the log (delivered, read, failed) are queued for the inbound function (functions/inbound),
which handles each message once (idempotency by wamid) and applies each status only forward; marketing
preferences (rare) are applied at once. The answer never waits on the notifications log, which a fan-out keeps
busy. Nothing is lost: if anything cannot be queued or applied the answer is 500 and Meta delivers the webhook
again.

No Powertools Tracer here: its X-Ray SDK import alone costs more than boto3's, on the cold start of the one
function Meta waits for. Lambda's active tracing (template.yaml) still traces every invocation."""

from __future__ import annotations

import gc
import hmac

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from jastipin.http import HttpError, install_error_handlers, json_response, raw_body
from jastipin.inbound.payload import WebhookPayload, signature_valid
from jastipin.operations import observability
from jastipin.runtime import Services, services
from jastipin.settings import WebhookSettings

logger = Logger()


def this() -> Services[WebhookSettings]:
    """This function's services: its settings are ``WebhookSettings``."""
    return services(WebhookSettings)


app = APIGatewayHttpResolver()
install_error_handlers(app)
observability.init_sentry()  # only when SENTRY_DSN is set

WEBHOOK_PATH = "/api/webhooks/whatsapp"


@app.exception_handler(Exception)
def unavailable(exc: Exception) -> Response:
    """Anything unexpected (a queue or table unavailable): 500, so Meta delivers the webhook again later.
    Neither the payload nor the error's text is echoed back."""
    logger.exception("webhook not accepted; Meta will deliver it again")
    observability.capture_exception(exc)
    return json_response(500, {"error": {"code": "unavailable", "message": "try again later"}})


@app.get(WEBHOOK_PATH)
def verify():
    params = app.current_event.query_string_parameters or {}
    expected = this().settings.secret("wa_verify_token")
    mode, token, challenge = (
        params.get("hub.mode"),
        params.get("hub.verify_token") or "",
        params.get("hub.challenge"),
    )
    if mode == "subscribe" and challenge and hmac.compare_digest(token.encode(), expected.encode()):
        return Response(status_code=200, content_type="text/plain", body=challenge)
    return json_response(
        403, {"error": {"code": "forbidden", "message": "verification failed", "field": "hub.verify_token"}}
    )


@app.post(WEBHOOK_PATH)
def receive():
    svc = this()
    body = raw_body(app.current_event.raw_event, svc.settings.max_body_bytes * 4)
    header = app.current_event.headers.get("x-hub-signature-256")
    if not header:
        raise HttpError(401, "unauthorized", "missing signature", field="X-Hub-Signature-256")
    if not signature_valid(svc.settings.secret("wa_app_secret"), body, header):
        raise HttpError(403, "forbidden", "invalid signature", field="X-Hub-Signature-256")
    try:
        payload = WebhookPayload.model_validate_json(body)
    except ValidationError:
        # Signed by Meta but not a shape we know: acknowledge so Meta does not retry for a week.
        logger.warning("unparseable webhook payload acknowledged")
        return json_response(200, {"status": "ignored"})
    summary = svc.intake.accept(payload)
    return json_response(200, {"status": "ok", **summary})


_frozen = False


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> dict:
    global _frozen
    try:
        return app.resolve(event, context)
    finally:
        if not _frozen:
            # After the first request everything loaded so far (modules, boto3 clients and their service
            # models: ~130,000 objects) lives as long as the environment: moved out of the collector's sight,
            # a full collection no longer walks it (~40-80 ms, at the tail of the latency Meta sees).
            gc.freeze()
            _frozen = True

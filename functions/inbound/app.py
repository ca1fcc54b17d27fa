"""Inbound messages and statuses: consumes the inbound queue the webhook fills (one WhatsApp message or one
delivery status per SQS message). A message runs the participant's command (JOIN / INFO / STOP, anything else
gets the help text), queueing the reply; a status moves its notifications-log entry forward.

Each message is handled once across instances and redeliveries (idempotency by wamid); a status is applied
only forward, so a repeat changes nothing. A record that raises (DynamoDB unavailable, an unreadable body, the
same message in progress elsewhere) goes back to the queue and, after 3 receives, to the inbound DLQ, where an
operator can redrive it."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin.inbound.queued import QueuedStatus, read_queued
from jastipin.operations import observability
from jastipin.runtime import Services, services
from jastipin.settings import InboundSettings

logger = Logger()


def this() -> Services[InboundSettings]:
    """This function's services: its settings are ``InboundSettings``."""
    return services(InboundSettings)


processor = BatchProcessor(event_type=EventType.SQS)
observability.init_sentry()  # only when SENTRY_DSN is set


class UnreadableInbound(ValueError):
    """A queue body that is neither an inbound message nor a status (the error names the record, never what
    it holds)."""


def record_handler(record: SQSRecord) -> None:
    try:
        work = read_queued(record.body)
    except ValueError:
        # The body holds a phone number and the participant's text: neither goes to logs or Sentry.
        logger.error("unreadable inbound message", extra={"message_id": record.message_id})
        raise UnreadableInbound(f"queue message {record.message_id} is not an inbound message") from None
    try:
        if isinstance(work, QueuedStatus):
            this().inbound.apply(work)
        else:
            this().inbound.handle(work)
    except IdempotencyAlreadyInProgressError:
        # Another instance is handling this very message: the record comes back after the visibility timeout
        # and then finds it done.
        logger.info("inbound message in progress elsewhere", extra={"message_id": record.message_id})
        raise
    except Exception as exc:
        observability.capture_exception(exc)  # the batch processor swallows it: report it here
        raise


@logger.inject_lambda_context(log_event=False)
@observability.report_errors
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    this().inbound.register_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )

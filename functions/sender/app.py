"""Sender: consumes the notifications, broadcast and proof_notify queues (partial batch failures on).

A fan-out job is expanded into chunk jobs; a chunk job is sent recipient by recipient under the rate limit.
A record that raises (e.g. DynamoDB unavailable, token rejected) goes back to SQS and, after 3 receives, to
its DLQ; recipients already sent are skipped when it comes back."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from jastipin.operations import observability
from jastipin.outbound.delivery import Deadline
from jastipin.outbound.jobs import Job, parse_job
from jastipin.runtime import Services, services
from jastipin.settings import SenderSettings

logger = Logger()


def this() -> Services[SenderSettings]:
    """This function's services: its settings are ``SenderSettings``."""
    return services(SenderSettings)


tracer = Tracer()
metrics = Metrics()
standard_processor = BatchProcessor(event_type=EventType.SQS)
fifo_processor = SqsFifoPartialProcessor()  # on a failure, later records of the batch fail too (order kept)
observability.init_sentry()  # only when SENTRY_DSN is set


class UnreadableJob(ValueError):
    """A queue body that is not a valid job (the message says which record, never what it holds)."""


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    logger.remove_keys(["job_id", "trip_id", "kind"])  # the previous record's job
    try:
        job = parse_job(record.body)
    except ValueError:
        # Neither the body nor pydantic's message may reach logs, traces or Sentry: both can hold phone
        # numbers and message text. The record fails (and, after 3 receives, waits in the DLQ).
        logger.error("unreadable job", extra={"message_id": record.message_id})
        error = UnreadableJob(f"queue message {record.message_id} is not a valid job")
        observability.capture_exception(error)
        raise error from None
    logger.append_keys(job_id=job.job_id, trip_id=job.trip_id, kind=job.kind.value)  # correlation per job
    try:
        _process(job, lambda_context)
    except Exception as exc:
        observability.capture_exception(exc)  # the batch processor swallows it: report it here
        raise


def _process(job: Job, lambda_context: LambdaContext | None) -> None:
    sender = this().sender
    deadline = Deadline(lambda_context.get_remaining_time_in_millis if lambda_context else None)
    if job.is_fan_out:
        sender.fan_out(job, deadline)  # hands over to a continuation before the deadline
        return
    result = sender.send_chunk(job, deadline)
    logger.info(
        "chunk processed",
        extra={
            "recipients": len(job.participants or []),
            "outcomes": len(result.outcomes),
            "requeued": len(result.requeued),
            # send slots this instance reserved and could not use in time, since it started
            "slots_dropped": getattr(sender.limiter, "dropped", 0),
        },
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
@observability.report_errors  # Sentry for escaping errors; publishes the per-queue metrics breakdown
def handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    records = event.get("Records") or [{}]
    is_fifo = str(records[0].get("eventSourceARN", "")).endswith(".fifo")
    processor = fifo_processor if is_fifo else standard_processor
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )

"""What the webhook does with a verified payload (``WebhookIntake``)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from jastipin.inbound.payload import (
    WebhookPayload,
)
from jastipin.inbound.preferences import apply_preference
from jastipin.inbound.queued import InboundWork, QueuedStatus
from jastipin.inbound.statuses import status_worth_keeping
from jastipin.outbound.queues import QueueError

logger = Logger(child=True)


def _count_malformed(dropped: int) -> int:
    """Messages, statuses or preferences of a signed payload that could not be read: logged and counted
    (metric ``WebhookItemMalformed``); the valid ones of the same payload still take effect."""
    if dropped:
        logger.warning("malformed webhook items dropped", extra={"items": dropped})
        with single_metric(name="WebhookItemMalformed", unit=MetricUnit.Count, value=dropped) as metric:
            metric.add_dimension(name="service", value="jastipin")
    return dropped


SQS_BATCH = 10


class WebhookIntake:
    """What the webhook does with a verified payload, fast: marketing preferences are applied at once (one
    conditional update each, rare); inbound messages and statuses are queued (one SQS message each, sent in
    batches of 10) for the inbound function, which runs the commands (~6 calls each) and applies the statuses
    (one conditional update each) away from Meta's latency budget, so the answer never waits on the busy
    notifications log.

    Raises if anything cannot be queued: the webhook answers 500 and Meta delivers it again (statuses are
    forward-only and messages are handled once, so the repeat is harmless)."""

    def __init__(self, sqs_client: Any, inbound_queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = inbound_queue_url

    def accept(self, payload: WebhookPayload) -> dict[str, int]:
        summary = {"queued": 0, "statuses": 0, "preferences": 0, "malformed": 0}
        bodies: list[str] = []
        for entry in payload.entry:
            for change in entry.changes:
                value = change.value
                summary["malformed"] += _count_malformed(value.malformed)
                for m in value.messages:
                    bodies.append(InboundWork(message=m, contacts=value.contacts).to_body())
                    summary["queued"] += 1
                for status in value.statuses:
                    if status_worth_keeping(status):
                        bodies.append(QueuedStatus(status=status).to_body())
                        summary["statuses"] += 1
                for preference in value.user_preferences:
                    apply_preference(preference)
                    summary["preferences"] += 1
        for start in range(0, len(bodies), SQS_BATCH):
            batch = bodies[start : start + SQS_BATCH]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
            )
            if response.get("Failed"):
                raise QueueError(f"inbound queue refused {len(response['Failed'])} message(s)")
        return summary

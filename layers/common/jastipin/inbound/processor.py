"""The inbound function's work (``InboundProcessor``): each queued message handled once, each status
applied."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from jastipin.data.models import utcnow
from jastipin.inbound.handler import CommandHandler
from jastipin.inbound.identity import message_time
from jastipin.inbound.payload import (
    InboundMessage,
    WebhookContact,
)
from jastipin.inbound.queued import InboundWork, QueuedStatus
from jastipin.inbound.statuses import apply_status
from jastipin.outbound.queues import JobQueues

logger = Logger(child=True)


DEDUP_SECONDS = 7 * 24 * 3600  # Meta retries a webhook for up to 7 days


class InboundProcessor:
    """Runs what the webhook queued: inbound messages, each handled once across instances and redeliveries
    (Powertools idempotency on the message id, DynamoDB-backed, with TTL), and statuses, which need no such
    guard (each is applied only forward, so a repeat changes nothing)."""

    def __init__(
        self,
        queues: JobQueues,
        idempotency_table: str,
        dynamodb_client: Any = None,
        log_ttl_days: float = 3,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._log_ttl_days = log_ttl_days  # a status kept before its outcome lives as long as the log
        self._clock = clock  # what a message's age is measured against
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        self._commands = CommandHandler(queues)
        persistence = DynamoDBPersistenceLayer(table_name=idempotency_table, boto3_client=dynamodb_client)
        self._config = config = IdempotencyConfig(
            event_key_jmespath="message_id",
            expires_after_seconds=DEDUP_SECONDS,
            raise_on_no_idempotency_key=True,
        )
        self._handle_once = idempotent_function(
            data_keyword_argument="key", persistence_store=persistence, config=config
        )(self._handle)

    def apply(self, queued: QueuedStatus) -> bool:
        """Apply a queued status to the notifications log; False if it changed nothing. Raises if the table
        fails: the record goes back to the queue."""
        return apply_status(queued.status, self._log_ttl_days)

    def register_context(self, context: Any) -> None:
        """Lets idempotency records of a crashed invocation expire when the invocation would have ended."""
        self._config.register_lambda_context(context)

    def _handle(
        self, key: dict[str, Any], message: InboundMessage, contacts: list[WebhookContact]
    ) -> dict[str, Any]:
        reply = self._commands.handle_message(message, contacts)
        return {"replied": reply is not None}

    def handle(self, work: InboundWork) -> bool:
        """Handle one queued message; False if it was already handled (or is a replay). Raises
        ``IdempotencyAlreadyInProgressError`` while another instance handles it (the queue retries later).

        A message older than the dedup window is ignored: Meta retries for at most 7 days, so only a replay of
        a captured, validly signed webhook can be that old — and its idempotency record may have expired
        (a replayed JOIN would otherwise undo a later STOP)."""
        age = self._clock() - message_time(work.message, self._clock)
        if age > timedelta(seconds=DEDUP_SECONDS):
            logger.warning(
                "inbound message older than the dedup window ignored",
                extra={"message_id": work.message.id, "age_days": round(age.total_seconds() / 86400, 1)},
            )
            return False
        result = self._handle_once(
            key={"message_id": work.message.id}, message=work.message, contacts=work.contacts
        )
        return bool(result and result.get("replied"))

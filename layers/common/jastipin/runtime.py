"""Per-container singletons: a function's settings, AWS clients, the WhatsApp client, the domain's services.
Created once, reused by every invocation (cold start is measured; import what a handler needs).

A function names its settings (``services(SenderSettings)``); a service it asks for that needs settings it
does not read is a ``TypeError`` naming both, not a half-configured object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from jastipin.settings import (
    AdminSettings,
    Common,
    InboundSettings,
    SenderSettings,
    Settings,
    WebhookSettings,
    get_settings,
)

if TYPE_CHECKING:
    from jastipin.data.async_dynamodb import AsyncDynamoDB
    from jastipin.inbound.intake import WebhookIntake
    from jastipin.inbound.processor import InboundProcessor
    from jastipin.operations.dlq import QueueAdmin
    from jastipin.outbound.delivery import Sender
    from jastipin.outbound.queues import JobQueues
    from jastipin.outbound.rate_limit import SendLimiter
    from jastipin.outbound.whatsapp import WhatsAppClient

S = TypeVar("S", bound=Common)
T = TypeVar("T")


@dataclass
class Services(Generic[S]):
    settings: S

    def need(self, kind: type[T]) -> T:
        """This function's settings as ``kind``: a service built from settings the function does not read is
        a mistake of wiring, found at its first use."""
        if not isinstance(self.settings, kind):
            raise TypeError(f"{type(self.settings).__name__} does not read {kind.__name__}")
        return self.settings

    @cached_property
    def sqs(self) -> Any:
        import boto3

        return boto3.client("sqs")

    @cached_property
    def dynamodb(self) -> Any:
        import boto3

        return boto3.client("dynamodb")

    @cached_property
    def queues(self) -> JobQueues:
        from jastipin.outbound.queues import JobQueues

        if not hasattr(self.settings, "notifications_queue_url"):
            raise TypeError(f"{type(self.settings).__name__} names no queue to send jobs to")
        return JobQueues(self.sqs, self.settings)

    @cached_property
    def inbound(self) -> InboundProcessor:
        from jastipin.inbound.processor import InboundProcessor

        s = self.need(InboundSettings)
        return InboundProcessor(self.queues, s.idempotency_table, self.dynamodb, s.log_ttl_days)

    @cached_property
    def intake(self) -> WebhookIntake:
        from jastipin.inbound.intake import WebhookIntake

        return WebhookIntake(self.sqs, self.need(WebhookSettings).inbound_queue_url)

    @cached_property
    def sender(self) -> Sender:
        import atexit

        from jastipin.outbound.delivery import Sender

        sender = Sender(
            self.need(SenderSettings),
            self.queues,
            self.whatsapp,
            self.rate_limiter,
            dynamodb=self._async_dynamodb(),
        )
        atexit.register(sender.close)  # its HTTP session, closed when a process ends (the local runtime)
        return sender

    def _async_dynamodb(self) -> AsyncDynamoDB | None:
        """The sender's outcome writes on its event loop, where DynamoDB is reached over the network as this
        process is configured: on Lambda, or at ``AWS_ENDPOINT_URL`` (the local runtime, the tests' moto
        server). Elsewhere, e.g. under moto's in-process ``mock_aws``, which only botocore's own calls reach,
        None: the writes go through botocore (an aiohttp request would head for AWS itself)."""
        if not (os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("AWS_ENDPOINT_URL")):
            return None
        import boto3

        from jastipin.data.async_dynamodb import AsyncDynamoDB

        return AsyncDynamoDB(self.dynamodb, boto3.Session().get_credentials())

    @cached_property
    def rate_limiter(self) -> SendLimiter:  # one limit across every sender instance and queue
        from jastipin.outbound.rate_limit import GlobalRateLimiter, NoRateLimit

        s = self.need(SenderSettings)
        if s.rate_limit_per_second == 0:
            return NoRateLimit()
        return GlobalRateLimiter(
            self.dynamodb,
            s.rate_limit_table,
            f"whatsapp#{s.wa_phone_number_id}",
            s.rate_limit_per_second,
            lanes=s.rate_limit_lanes,
        )

    @cached_property
    def queue_admin(self) -> QueueAdmin:
        from jastipin.operations.dlq import QueueAdmin

        return QueueAdmin(self.sqs, self.need(AdminSettings))

    @cached_property
    def whatsapp(self) -> WhatsAppClient:
        from jastipin.outbound.whatsapp import WhatsAppClient

        s = self.need(SenderSettings)
        return WhatsAppClient(
            base_url=s.wa_api_base_url,
            version=s.wa_api_version,
            phone_number_id=s.wa_phone_number_id,
            access_token=lambda: s.secret("wa_access_token"),  # per request: a rotated token is picked up
            timeout=s.wa_timeout_seconds,
            max_connections=max(16, s.send_concurrency * 2),
        )


@lru_cache(maxsize=8)
def services(kind: type[Common] = Settings) -> Services[Any]:
    """The services of a function reading ``kind`` (its settings class); the tables it names are bound. A
    handler wraps it to say its type (``def svc() -> Services[SenderSettings]``)."""
    from jastipin.data.models import bind_tables

    settings = get_settings(kind)
    bind_tables(settings)
    return Services(settings)

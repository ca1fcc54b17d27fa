"""The inbound queue's two message bodies: an inbound message with its contacts (``InboundWork``), or one
of Meta's statuses (``QueuedStatus``). The webhook writes them, the inbound function reads them."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from jastipin.inbound.payload import (
    InboundMessage,
    StatusUpdate,
    WebhookContact,
)
from jastipin.outbound.jobs import sqs_safe_json


class InboundWork(BaseModel):
    """One inbound message and the contacts Meta sent with it: the body of an inbound-queue message."""

    model_config = ConfigDict(extra="ignore")

    message: InboundMessage
    contacts: list[WebhookContact] = Field(default_factory=list)

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))


class QueuedStatus(BaseModel):
    """One of Meta's delivery statuses on its way to the notifications log: the other body of an inbound-queue
    message."""

    model_config = ConfigDict(extra="ignore")

    status: StatusUpdate

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))


def read_queued(body: str) -> InboundWork | QueuedStatus:
    """An inbound-queue body: a message (``{"message": ...}``) or a status (``{"status": ...}``). Raises
    ``ValueError`` (pydantic's ``ValidationError`` among them) for anything else."""
    data = json.loads(body)
    if isinstance(data, dict) and "status" in data and "message" not in data:
        return QueuedStatus.model_validate(data)
    return InboundWork.model_validate(data)

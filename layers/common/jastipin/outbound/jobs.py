"""Queue message bodies, validated on both ends (enqueue and sender).

The JSON shape follows the spec's job payload (``tripId, productId, participants[], template, message``),
plus what a reliable sender needs: a job id (idempotency key per recipient), the kind of message, and a
fan-out marker. A job with ``participants = null`` is a fan-out job: the sender pages through the trip's
active participants and enqueues chunk jobs (same job id) carrying them.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# SQS accepts #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF in a body; JSON text escapes control
# characters itself but leaves these as they are (a product name or a participant's message may hold them).
_NOT_SQS_SAFE = re.compile(r"[\ud800-\udfff\ufffe\uffff]")


def sqs_safe_json(text: str) -> str:
    """JSON text with the characters SQS refuses written as ``\\uXXXX`` escapes (they only occur inside
    JSON strings, where the escape means the same character)."""
    return _NOT_SQS_SAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class JobKind(StrEnum):
    PRODUCT_UPDATE = "product_update"
    AUTO_REPLY = "auto_reply"
    BROADCAST = "broadcast"
    PROOF = "proof"


class QueueName(StrEnum):
    NOTIFICATIONS = "notifications"
    BROADCAST = "broadcast"
    PROOF_NOTIFY = "proof_notify"


QUEUE_OF_KIND = {
    JobKind.PRODUCT_UPDATE: QueueName.NOTIFICATIONS,
    JobKind.AUTO_REPLY: QueueName.NOTIFICATIONS,
    JobKind.BROADCAST: QueueName.BROADCAST,
    JobKind.PROOF: QueueName.PROOF_NOTIFY,
}


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Recipient(_Camel):
    id: str = Field(min_length=1, max_length=64)  # participant id (never a phone number)
    phone: str | None = Field(default=None, max_length=20)  # E.164
    user_id: str | None = Field(default=None, max_length=128)  # business-scoped user id, when no phone
    name: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _has_address(self) -> Recipient:
        if not self.phone and not self.user_id:
            raise ValueError("recipient needs a phone or a user_id")
        return self


class TemplateRef(_Camel):
    name: str = Field(min_length=1, max_length=512)
    language: str = Field(default="id", min_length=2, max_length=15)
    parameters: list[str] = Field(default_factory=list, max_length=20)
    category: str | None = Field(default=None, max_length=32)  # registry category (marketing needs consent)
    header_image_url: str | None = Field(default=None, max_length=2048)  # image header (proof_received)
    header_image_id: str | None = Field(default=None, max_length=128)


class AudienceFilter(_Camel):
    """Who a broadcast goes to besides "active member of the trip" (``jastipin.audience``)."""

    active_since: datetime  # last activity (join, or any message to us) at or after this time
    marketing: bool = True  # marketing template: leave out who stopped marketing messages


class Job(_Camel):
    job_id: str = Field(min_length=1, max_length=64)
    kind: JobKind
    trip_id: str = Field(min_length=1, max_length=64)
    product_id: str | None = None
    participants: list[Recipient] | None = Field(default=None, max_length=1000)
    template: str | None = None  # the spec's message_type / template name, e.g. "product_update"
    message: str | None = Field(default=None, max_length=4096)  # free-form text (inside the 24-hour window)
    template_ref: TemplateRef | None = None  # approved template (outside the window, broadcasts)
    image_url: str | None = Field(default=None, max_length=2048)  # proof image (a link...)
    media_id: str | None = Field(default=None, max_length=128)  # ...or an uploaded media id
    audience: AudienceFilter | None = None  # broadcast fan-out: the filter the estimate used
    caption: str | None = Field(default=None, max_length=1024)
    always_in_window: bool = False  # replies to an inbound message are inside the window by definition
    # A fan-out continuation (``outbound.fanout``): participants after ``cursor`` (participant id order) are
    # still to be read; the next chunk job is number ``next_chunk``.
    cursor: str | None = Field(default=None, max_length=64)
    next_chunk: int | None = Field(default=None, ge=0)

    @property
    def is_fan_out(self) -> bool:
        return self.participants is None

    @property
    def needs_marketing_consent(self) -> bool:
        """A broadcast of a marketing template (or of unknown category) skips who opted out of marketing."""
        if self.kind is not JobKind.BROADCAST:
            return False
        category = self.template_ref.category if self.template_ref else None
        return category in (None, "marketing")

    def chunk(self, participants: list[Recipient]) -> Job:
        return self.model_copy(update={"participants": participants, "cursor": None, "next_chunk": None})

    def continuation(self, cursor: str | None, next_chunk: int) -> Job:
        """The same fan-out job, to go on after ``cursor`` with chunk number ``next_chunk``."""
        return self.model_copy(update={"cursor": cursor, "next_chunk": next_chunk})

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))

    @classmethod
    def from_body(cls, body: str) -> Job:
        return cls.model_validate_json(body)

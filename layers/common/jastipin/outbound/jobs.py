"""Queue message bodies, validated on both ends (enqueue and sender).

The JSON shape follows the spec's job payload (``tripId, productId, participants[], template, message``),
plus what a reliable sender needs: a job id (idempotency key per recipient), the kind of message, and a
fan-out marker. A job with ``participants = null`` is a fan-out job: the sender pages through the trip's
active participants and enqueues chunk jobs (same job id) carrying them.

Each kind is its own model (``ProductUpdateJob``, ``AutoReplyJob``, ``BroadcastJob``, ``ProofJob``) with only
the fields it uses; ``Job`` is their union, told apart by ``kind``, and ``parse_job`` reads a body. The body
is the same JSON, field for field and in the same order, as when one model held every kind: jobs waiting in
a queue or a DLQ across a deploy read the same either way.
"""

import re
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)
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
    # defer_build: a model's validator is built on its first use, not at import (a function uses few of
    # them: the webhook none, the backend the kinds it queues; bench/import_bench.py measures the import)
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, defer_build=True
    )


class Recipient(_Camel):
    id: str = Field(min_length=1, max_length=64)  # participant id (never a phone number)
    phone: str | None = Field(default=None, max_length=20)  # E.164
    user_id: str | None = Field(default=None, max_length=128)  # business-scoped user id, when no phone
    name: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _has_address(self) -> Self:
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


class _Job(_Camel):
    """What every job has, whatever its kind. A job with ``participants = None`` is a fan-out job; a
    continuation of one carries ``cursor`` and ``next_chunk``."""

    job_id: str = Field(min_length=1, max_length=64)
    kind: JobKind
    trip_id: str = Field(min_length=1, max_length=64)
    participants: list[Recipient] | None = Field(default=None, max_length=1000)
    template: str | None = None  # the spec's message_type / template name, e.g. "product_update"
    # A fan-out continuation (``outbound.fanout``): participants after ``cursor`` (participant id order) are
    # still to be read; the next chunk job is number ``next_chunk``.
    cursor: str | None = Field(default=None, max_length=64)
    next_chunk: int | None = Field(default=None, ge=0)

    # STOP honoured: only the trip's active members get it (checked again right before each send).
    needs_membership: ClassVar[bool] = False

    @property
    def is_fan_out(self) -> bool:
        return self.participants is None

    @property
    def needs_marketing_consent(self) -> bool:
        """Who opted out of marketing messages is skipped."""
        return False

    @property
    def needs_open_window(self) -> bool:
        """Nothing can be sent outside the recipient's 24-hour window: skipped there."""
        return False

    def chunk(self, participants: list[Recipient]) -> Self:
        return self.model_copy(update={"participants": participants, "cursor": None, "next_chunk": None})

    def continuation(self, cursor: str | None, next_chunk: int) -> Self:
        """The same fan-out job, to go on after ``cursor`` with chunk number ``next_chunk``."""
        return self.model_copy(update={"cursor": cursor, "next_chunk": next_chunk})

    def to_body(self) -> str:
        return sqs_safe_json(self.model_dump_json(by_alias=True, exclude_none=True))

    @model_serializer(mode="wrap")
    def _in_wire_order(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        """The fields in the order the body has always had them, whatever kind declares them."""
        data = handler(self)
        names = [to_camel(name) if info.by_alias else name for name in _WIRE_ORDER]
        ordered = {name: data[name] for name in names if name in data}
        ordered.update(data)
        return ordered


_WIRE_ORDER = (
    "job_id",
    "kind",
    "trip_id",
    "product_id",
    "participants",
    "template",
    "message",
    "template_ref",
    "image_url",
    "media_id",
    "audience",
    "caption",
    "always_in_window",
    "cursor",
    "next_chunk",
)


class ProductUpdateJob(_Job):
    """A new product, to the trip's members: the text inside their 24-hour window, the trip's window template
    (if it has one) outside it, skipped otherwise. Queued as a fan-out."""

    kind: Literal[JobKind.PRODUCT_UPDATE] = JobKind.PRODUCT_UPDATE
    product_id: str | None = None
    message: str = Field(max_length=4096)
    template_ref: TemplateRef | None = None  # the trip's window template
    always_in_window: Literal[False] = False

    needs_membership: ClassVar[bool] = True

    @property
    def needs_open_window(self) -> bool:
        """Free-form text only when the trip has no window template."""
        return self.template_ref is None


class AutoReplyJob(_Job):
    """The answer to a participant's message: inside the window by definition, to whoever wrote."""

    kind: Literal[JobKind.AUTO_REPLY] = JobKind.AUTO_REPLY
    participants: list[Recipient] = Field(max_length=1000)
    message: str = Field(max_length=4096)
    always_in_window: Literal[True] = True


class BroadcastJob(_Job):
    """An approved template to the members the audience filter picks (the one the estimate counted). Queued
    as a fan-out."""

    kind: Literal[JobKind.BROADCAST] = JobKind.BROADCAST
    template_ref: TemplateRef
    audience: AudienceFilter
    always_in_window: Literal[False] = False

    needs_membership: ClassVar[bool] = True

    @property
    def needs_marketing_consent(self) -> bool:
        """A marketing template (or one of unknown category) skips who opted out of marketing."""
        return self.template_ref.category in (None, "marketing")


class ProofJob(_Job):
    """A proof image to the trip's owner: the image with its caption inside the window, the proof template
    (the image as its header) outside it."""

    kind: Literal[JobKind.PROOF] = JobKind.PROOF
    participants: list[Recipient] = Field(max_length=1000)
    image_url: str | None = Field(default=None, max_length=2048)  # a link...
    media_id: str | None = Field(default=None, max_length=128)  # ...or an uploaded media id
    caption: str = Field(max_length=1024)
    template_ref: TemplateRef
    always_in_window: Literal[False] = False

    @model_validator(mode="after")
    def _one_image(self) -> Self:
        if (self.image_url is None) == (self.media_id is None):
            raise ValueError("a proof needs exactly one of image_url or media_id")
        return self


Job = Annotated[ProductUpdateJob | AutoReplyJob | BroadcastJob | ProofJob, Field(discriminator="kind")]
"""A queue message body: one model per kind, told apart by ``kind``."""


@lru_cache(maxsize=1)
def _job_adapter() -> TypeAdapter[Job]:
    return TypeAdapter(Job, config=ConfigDict(title="Job"))  # built on the first job read, not at import


def parse_job(body: str) -> Job:
    """The job a queue body holds; raises ``pydantic.ValidationError`` (a ``ValueError``) if it holds none:
    an unknown kind, a field missing, or a field its kind does not have."""
    return _job_adapter().validate_json(body)

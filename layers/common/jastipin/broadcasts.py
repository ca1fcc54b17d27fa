"""Paid template broadcasts (spec section 10): the estimate, and a broadcast through the FIFO ``broadcast``
queue (one fan-out job, ``MessageGroupId`` = trip: a trip's broadcasts go out one after the other).

No broadcast is ever sent automatically: only ``POST /api/trips/{tripId}/broadcasts`` without ``dry_run``
queues one. The estimate and the fan-out use the same audience filter (``jastipin.audience``); the request
time fixes the activity cut-off, carried in the job, so the fan-out selects the audience that was counted.

Idempotency: the body's ``idempotency_key`` names the broadcast (``bc_`` + hash of trip and key); the
record is created with a conditional put, so the same key again returns the first result and queues
nothing new. A record whose job may not have reached the queue (``pending``: the request failed in between)
is queued again on the retry: the job id is the same, so SQS (FIFO deduplication, 5 minutes) and then the
sender's per-recipient log keep it to one message per recipient.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from jastipin import audience, audience_counts, texts
from jastipin.data import broadcasts as broadcast_records
from jastipin.data.models import Broadcast, BroadcastStatus, Trip
from jastipin.errors import Conflict
from jastipin.ids import new_id, stable_id
from jastipin.outbound.jobs import AudienceFilter, BroadcastJob, TemplateRef
from jastipin.outbound.queues import JobQueues
from jastipin.safe_text import clean_line
from jastipin.settings import EnqueueSettings
from jastipin.templates import TemplateCategory, TemplateSpec, rate_rupiah, registry
from jastipin.trips import get_trip

CURRENCY = "IDR"

logger = Logger(child=True)


def template_parameter(value: str) -> str:
    # Meta rejects body parameters with new lines, tabs or more than 4 spaces in a row (error 132018); other
    # control characters and bidirectional overrides are refused as in every text that reaches WhatsApp.
    if "\n" in value or "\t" in value or " " * 5 in value:
        raise ValueError("must not contain new lines, tabs or more than 4 consecutive spaces")
    return clean_line(value)


TemplateParameter = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(template_parameter)]
ActiveWithinDays = Annotated[
    int,
    Field(
        ge=1,
        le=audience.MAX_ACTIVE_WITHIN_DAYS,
        description="only participants active in the last N days (default 7)",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EstimateQuery(_Request):
    """``GET .../broadcasts/estimate?template=trip_reminder&active_within_days=7``"""

    template: str = Field(min_length=1, max_length=512)
    active_within_days: ActiveWithinDays = audience.DEFAULT_ACTIVE_WITHIN_DAYS


class BroadcastRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "template": "trip_reminder",
                    "parameters": ["Jastip Jepang"],
                    "idempotency_key": "promo-juni",
                }
            ]
        }
    )

    template: str = Field(min_length=1, max_length=512)
    parameters: list[TemplateParameter] = Field(default_factory=list, max_length=20)
    dry_run: bool = Field(default=False, strict=True)  # "false" or 0 must not send a broadcast
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    active_within_days: ActiveWithinDays = audience.DEFAULT_ACTIVE_WITHIN_DAYS

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [self.template, self.parameters, self.active_within_days],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Estimate:
    trip_id: str
    template: str
    category: str
    language: str
    active_within_days: int
    participants: int
    rate_rupiah: int

    @property
    def total_rupiah(self) -> int:
        return self.participants * self.rate_rupiah

    def view(self) -> dict[str, Any]:
        return {
            "trip_id": self.trip_id,
            "template": self.template,
            "category": self.category,
            "language": self.language,
            "active_within_days": self.active_within_days,
            "participants": self.participants,
            "rate_rupiah": self.rate_rupiah,
            "total_rupiah": self.total_rupiah,
            "currency": CURRENCY,
            "text": texts.broadcast_estimate(self.participants, self.total_rupiah),
        }


def _filter(spec: TemplateSpec, active_within_days: int) -> AudienceFilter:
    return audience.broadcast_filter(
        active_within_days, marketing=spec.category is TemplateCategory.MARKETING
    )


def audience_size(trip: Trip, criteria: AudienceFilter) -> int:
    """From the trip's kept counts (a constant number of small reads at any trip size); a trip that has none
    yet (written around them, see ``jastipin.audience_counts``) is counted in full, as it always was."""
    kept = audience_counts.estimate(trip, criteria)
    if kept is not None:
        return kept
    logger.warning(
        "trip has no kept audience counts: counted in full (python -m jastipin.audience_counts rebuild)",
        extra={"trip_id": trip.trip_id},
    )
    return audience.count(trip.trip_id, criteria)


def _estimate(
    trip: Trip, spec: TemplateSpec, criteria: AudienceFilter, days: int, settings: EnqueueSettings
) -> Estimate:
    return Estimate(
        trip_id=trip.trip_id,
        template=spec.name,
        category=spec.category.value,
        language=spec.language,
        active_within_days=days,
        participants=audience_size(trip, criteria),
        rate_rupiah=rate_rupiah(settings, spec.category.value),
    )


def estimate(trip_id: str, query: EstimateQuery, settings: EnqueueSettings) -> Estimate:
    trip = get_trip(trip_id)
    spec = registry(settings).get(query.template)
    return _estimate(trip, spec, _filter(spec, query.active_within_days), query.active_within_days, settings)


def submit(
    trip_id: str, request: BroadcastRequest, settings: EnqueueSettings, queues: JobQueues
) -> dict[str, Any]:
    """Dry run: the estimate. Otherwise: record the broadcast and queue its fan-out job (once per key)."""
    trip = get_trip(trip_id)
    templates = registry(settings)
    spec = templates.get(request.template)
    templates.ref(spec.name, request.parameters)  # validates the parameters before anything is queued
    criteria = _filter(spec, request.active_within_days)
    if request.dry_run:
        return {
            "dry_run": True,
            **_estimate(trip, spec, criteria, request.active_within_days, settings).view(),
        }

    key = request.idempotency_key
    broadcast_id = stable_id("bc", trip.trip_id, key) if key else new_id("bc")
    if key:
        existing = broadcast_records.get(trip.trip_id, broadcast_id)
        if existing is not None:
            return _replay(existing, request, queues)
    found = _estimate(trip, spec, criteria, request.active_within_days, settings)
    record = Broadcast(
        trip.trip_id,
        broadcast_id,
        template=spec.name,
        language=spec.language,
        category=spec.category.value,
        parameters=list(request.parameters),
        active_within_days=request.active_within_days,
        active_since=criteria.active_since,
        estimated_count=found.participants,
        rate_rupiah=found.rate_rupiah,
        estimated_rupiah=found.total_rupiah,
        idempotency_key=key,
        fingerprint=request.fingerprint(),
    )
    if not broadcast_records.create(record):
        existing = broadcast_records.get(trip.trip_id, broadcast_id)  # the same key, submitted concurrently
        assert existing is not None
        return _replay(existing, request, queues)
    _queue(record, queues)
    return broadcast_view(record, duplicate=False)


def _replay(existing: Broadcast, request: BroadcastRequest, queues: JobQueues) -> dict[str, Any]:
    if existing.fingerprint != request.fingerprint():
        raise Conflict(
            "idempotency_key was already used for a different broadcast (template, parameters or filter)",
            field="idempotency_key",
        )
    if existing.status == BroadcastStatus.PENDING.value:
        _queue(existing, queues)  # the first request stopped before its job reached the queue
    return broadcast_view(existing, duplicate=True)


def job_of(record: Broadcast) -> BroadcastJob:
    """The fan-out job of a broadcast, rebuilt from its record (the same job every time)."""
    return BroadcastJob(
        job_id=record.broadcast_id,
        trip_id=record.trip_id,
        template=record.template,
        template_ref=TemplateRef(
            name=record.template,
            language=record.language,
            parameters=[str(p) for p in record.parameters or []],
            category=record.category,
        ),
        audience=AudienceFilter(
            active_since=record.active_since, marketing=record.category == TemplateCategory.MARKETING.value
        ),
    )


def _queue(record: Broadcast, queues: JobQueues) -> None:
    queues.send(job_of(record))
    broadcast_records.mark_queued(record)


def estimate_view(record: Broadcast) -> dict[str, Any]:
    return {
        "participants": int(record.estimated_count),
        "rate_rupiah": int(record.rate_rupiah),
        "total_rupiah": int(record.estimated_rupiah),
        "currency": CURRENCY,
        "text": texts.broadcast_estimate(int(record.estimated_count), int(record.estimated_rupiah)),
    }


def broadcast_view(record: Broadcast, *, duplicate: bool) -> dict[str, Any]:
    return {
        "broadcast_id": record.broadcast_id,
        "job_id": record.broadcast_id,
        "trip_id": record.trip_id,
        "template": record.template,
        "category": record.category,
        "active_within_days": int(record.active_within_days),
        "status": record.status,
        "duplicate": duplicate,
        "estimate": estimate_view(record),
    }

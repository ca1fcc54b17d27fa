"""The backend API's answers as models: what ``functions/enqueue`` declares for each route, so that every
answer is checked against them (Powertools' response validation) and the OpenAPI document is generated from
them. The domain modules build the answers (``trips``, ``broadcasts``, ``proofs``, ``ledger``); an answer
with a field not declared here is a 500, caught by the contract test, never a silent change of the API."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jastipin.data.models import WindowPolicy
from jastipin.templates import TemplateCategory


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use, not at import


class TripView(_View):
    trip_id: str = Field(description="the trip's id: its slug")
    slug: str = Field(description="what participants type after JOIN (lower case)")
    title: str
    window_policy: WindowPolicy
    window_template: str | None
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class ProductQueued(_View):
    job_id: str
    product_id: str
    trip_id: str
    status: Literal["queued"]


class ProofQueued(_View):
    job_id: str
    trip_id: str
    status: Literal["queued"]


class Estimate(_View):
    trip_id: str
    template: str
    category: TemplateCategory
    language: str
    active_within_days: int
    participants: int = Field(ge=0, description="the audience the broadcast would go to now")
    rate_rupiah: int
    total_rupiah: int
    currency: Literal["IDR"]
    text: str = Field(description="the estimate in words, e.g. `Kirim pesan ke 1 peserta = Rp35`")


class DryRunEstimate(Estimate):
    dry_run: Literal[True]


class RecordedEstimate(_View):
    participants: int
    rate_rupiah: int
    total_rupiah: int
    currency: Literal["IDR"]
    text: str


class _BroadcastFields(_View):
    broadcast_id: str
    job_id: str = Field(description="the same as `broadcast_id` (the log's job id)")
    trip_id: str
    template: str
    category: TemplateCategory
    active_within_days: int
    status: Literal["pending", "queued"] = Field(
        description="`pending`: recorded, its job not yet on the queue (the same request again queues it)"
    )
    estimate: RecordedEstimate


class Broadcast(_BroadcastFields):
    duplicate: bool = Field(
        description="true when an earlier request with the same `idempotency_key` made this broadcast"
    )


class StatusCounts(_View):
    queued: int
    sent: int
    delivered: int
    read: int
    failed: int
    skipped: int


class BilledCategory(_View):
    messages: int
    rupiah: int


class _Tally(_View):
    entries: int
    statuses: StatusCounts
    sent: int = Field(description="accepted by WhatsApp (sent, delivered or read)")
    billed: dict[str, BilledCategory] = Field(
        description="per Meta pricing category, the messages Meta priced as billed (`pricing.type` regular, "
        "or `billable` where no type came) and their cost"
    )
    free: dict[str, int] = Field(
        description="messages Meta delivered without a charge, by the `pricing.type` of its statuses "
        "(e.g. free_customer_service, free_entry_point)"
    )
    billed_messages: int
    billed_rupiah: int


class Outcome(_Tally):
    source: Literal["log", "snapshot"] = Field(
        description="`snapshot`: the log expired, this is the copy kept with the broadcast"
    )
    as_of: str | None = Field(json_schema_extra={"format": "date-time"})


class LedgerBroadcast(_BroadcastFields):
    requested_at: str = Field(json_schema_extra={"format": "date-time"})
    outcome: Outcome | None = Field(description="null: queued, nothing logged yet")


class LedgerJob(_Tally):
    job_id: str
    message_type: str
    first_logged_at: str


class LedgerTotals(_View):
    estimated_rupiah: int
    billed_messages: int
    billed_rupiah: int


class Ledger(_View):
    trip_id: str
    currency: Literal["IDR"]
    rates_rupiah: dict[str, int] = Field(description="rupiah per message of each pricing category")
    log_retention_days: int | float = Field(
        description="after this the log expires and only broadcast snapshots remain"
    )
    broadcasts: list[LedgerBroadcast]
    jobs: list[LedgerJob] = Field(
        description="every job in the log (product updates, replies, proofs, broadcasts)"
    )
    totals: LedgerTotals

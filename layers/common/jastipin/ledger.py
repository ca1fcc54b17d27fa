"""The per-trip ledger: what was estimated, what was sent, and what Meta reported as billed.

- Estimated: the broadcast records (``Broadcast``, kept for good).
- Sent and billed: the notifications log, the trip's entries listed by its keys-only ``by_trip_keys`` index
  and read from the table (``notifications_log.trip_log``: a broadcast's chunks by Query on the job, the odd
  reply by BatchGetItem; no Scan). Counting per status at write time was not chosen: it would put back one
  write per delivered/read status, the very write the keys-only index removed.
  Each entry's status counts (sent / delivered / read / failed / skipped). Whether Meta bills a message is
  Meta's to say, per message, in its statuses' ``pricing`` object: ``type`` ``regular`` is billed, any other
  type (``free_customer_service``, ``free_entry_point``, whatever Meta adds) is not and is counted by type
  under ``free``; a status without ``type`` falls back to ``billable``. Nothing here decides from the
  24-hour window (Meta changed what is free in 2025 and again in October 2026). A billed entry counts once in
  its ``pricing.category``, priced with the configured rates, however many statuses repeated the pricing.
- The log expires (``LOG_TTL_DAYS``, 3 days). So each ledger read copies what the log says about a broadcast
  into the broadcast's record (``observed``), unless the record already holds a view of more log entries
  (a log that is already expiring never overwrites a fuller one). After the log is gone the ledger shows
  that copy (``source: "snapshot"``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jastipin import broadcasts
from jastipin.data import broadcasts as broadcast_records
from jastipin.data.models import Broadcast, LogStatus, NotificationLog, utcnow
from jastipin.data.notifications_log import trip_log
from jastipin.settings import EnqueueSettings
from jastipin.templates import rate_rupiah, rates
from jastipin.trips import get_trip

UNKNOWN_CATEGORY = "unknown"


@dataclass
class Tally:
    """What the log holds for one job."""

    message_type: str = ""
    entries: int = 0
    first_logged_at: str = ""
    statuses: Counter[str] = field(default_factory=Counter)
    billed: Counter[str] = field(default_factory=Counter)  # by pricing category
    free: Counter[str] = field(default_factory=Counter)  # by pricing type

    def add(self, entry: NotificationLog) -> None:
        self.message_type = self.message_type or entry.message_type
        self.entries += 1
        if not self.first_logged_at or entry.created_at < self.first_logged_at:
            self.first_logged_at = entry.created_at
        self.statuses[entry.status] += 1
        billed = is_billed(entry.pricing_type, entry.billable)
        if billed:
            self.billed[entry.pricing_category or UNKNOWN_CATEGORY] += 1
        elif billed is False and entry.pricing_type:
            self.free[entry.pricing_type] += 1

    def as_dict(self) -> dict[str, Any]:
        observed: dict[str, Any] = {
            "entries": self.entries,
            "statuses": {s.value: self.statuses.get(s.value, 0) for s in LogStatus},
            "billed": dict(sorted(self.billed.items())),
        }
        if self.free:
            observed["free"] = dict(sorted(self.free.items()))
        return observed


BILLED_TYPE = "regular"


def is_billed(pricing_type: str | None, billable: bool | None) -> bool | None:
    """Whether Meta bills a message, from its statuses' pricing (None: no pricing seen yet). ``type`` decides
    when Meta sent one (``regular`` is billed); ``billable`` (older statuses) otherwise."""
    if pricing_type:
        return pricing_type == BILLED_TYPE
    return billable


def log_tallies(trip_id: str) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for entry in trip_log(trip_id):
        tallies.setdefault(entry.job_id, Tally()).add(entry)
    return tallies


def _outcome(
    observed: dict[str, Any], settings: EnqueueSettings, source: str, as_of: str | None
) -> dict[str, Any]:
    statuses = observed["statuses"]
    billed = {
        category: {"messages": n, "rupiah": n * rate_rupiah(settings, category)}
        for category, n in observed["billed"].items()
    }
    return {
        "source": source,
        "as_of": as_of,
        "entries": observed["entries"],
        "statuses": statuses,
        # "sent" in the everyday sense: accepted by WhatsApp, whatever happened next
        "sent": sum(statuses.get(s, 0) for s in ("sent", "delivered", "read")),
        "billed": billed,
        "free": observed.get("free", {}),  # messages Meta delivered without a charge, by pricing type
        "billed_messages": sum(observed["billed"].values()),
        "billed_rupiah": sum(b["rupiah"] for b in billed.values()),
    }


def _remember(record: Broadcast, tally: Tally) -> None:
    """Copy the log's view of a broadcast into its record (durable), never replacing a fuller view."""
    observed = tally.as_dict()
    if record.observed == observed:
        return
    if record.observed_entries is not None and record.observed_entries > tally.entries:
        return
    # False: another read stored a fuller view meanwhile (it stays)
    broadcast_records.remember_observed(record, observed, tally.entries, utcnow())


def trip_ledger(trip_id: str, settings: EnqueueSettings) -> dict[str, Any]:
    trip = get_trip(trip_id)
    tallies = log_tallies(trip.trip_id)
    now = utcnow().isoformat()
    broadcast_views = []
    billed_messages = billed_rupiah = estimated_rupiah = 0
    records = broadcast_records.of_trip(trip.trip_id)
    for record in records:
        view = broadcasts.broadcast_view(record, duplicate=False)
        view.pop("duplicate")
        view["requested_at"] = record.requested_at.isoformat()
        tally = tallies.get(record.broadcast_id)
        if tally is not None:
            _remember(record, tally)
            view["outcome"] = _outcome(tally.as_dict(), settings, "log", now)
        elif record.observed:
            as_of = record.observed_at.isoformat() if record.observed_at else None
            view["outcome"] = _outcome(record.observed, settings, "snapshot", as_of)
            billed_messages += view["outcome"]["billed_messages"]  # not in the jobs below any more
            billed_rupiah += view["outcome"]["billed_rupiah"]
        else:
            view["outcome"] = None  # queued, nothing logged yet
        estimated_rupiah += int(record.estimated_rupiah)
        broadcast_views.append(view)
    jobs = []
    for job_id, tally in sorted(tallies.items(), key=lambda item: item[1].first_logged_at):
        outcome = _outcome(tally.as_dict(), settings, "log", now)
        billed_messages += outcome["billed_messages"]
        billed_rupiah += outcome["billed_rupiah"]
        jobs.append(
            {
                "job_id": job_id,
                "message_type": tally.message_type,
                "first_logged_at": tally.first_logged_at,
                **{k: v for k, v in outcome.items() if k not in {"source", "as_of"}},
            }
        )
    return {
        "trip_id": trip.trip_id,
        "currency": broadcasts.CURRENCY,
        "rates_rupiah": rates(settings),
        "log_retention_days": int(days) if (days := settings.log_ttl_days).is_integer() else days,
        "broadcasts": broadcast_views,
        "jobs": jobs,
        "totals": {
            "estimated_rupiah": estimated_rupiah,
            "billed_messages": billed_messages,
            "billed_rupiah": billed_rupiah,
        },
    }

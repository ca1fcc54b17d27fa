"""The notifications log's merge rules (``data.notifications_log``) against moto: whatever the order of the
sender's outcome and Meta's statuses, duplicated or reversed, the entry ends at the furthest status with the
job's fields and Meta's pricing; nothing moves backwards; ``failed`` is final; a status nobody can place is
kept, not lost."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from jastipin.data import notifications_log as log
from jastipin.data.models import LogStatus, NotificationLog, utcnow

JOB, PID, TRIP, WAMID = "job_1", "p_1", "jpn25", "wamid.A"


def expiry():
    return utcnow() + timedelta(days=3)


def outcome(status: LogStatus = LogStatus.SENT, wamid: str | None = WAMID, attempts: int = 1) -> None:
    log.record(JOB, TRIP, "product_update", log.Outcome(PID, status, attempts, wamid), expiry())


def status(state: LogStatus, wamid: str = WAMID, *, keyed: bool = True, **extra) -> str:
    change = log.StatusChange(wamid=wamid, status=state, key=(JOB, PID) if keyed else None, **extra)
    return log.apply_status(change, expiry())


def entry() -> NotificationLog:
    return NotificationLog.get(JOB, PID, consistent_read=True)


EVENTS = {
    "outcome": lambda: outcome(),
    "delivered": lambda: status(
        LogStatus.DELIVERED, pricing_category="utility", pricing_type="regular", billable=True
    ),
    "read": lambda: status(LogStatus.READ),
}


@pytest.mark.parametrize("order", list(itertools.permutations(EVENTS)))
def test_every_order_ends_at_the_furthest_status_with_the_job_fields(settings, order):
    for name in order:
        EVENTS[name]()
    for name in order:  # and each again: duplicates change nothing
        EVENTS[name]()
    e = entry()
    assert (e.status, e.provider_msg_id, e.trip_id, e.message_type, e.attempts) == (
        "read",
        WAMID,
        TRIP,
        "product_update",
        1,
    )
    assert (e.pricing_category, e.pricing_type, e.billable) == ("utility", "regular", True)
    assert e.created_at is not None and e.expires_at is not None


def test_a_status_before_the_outcome_is_kept_as_a_stub(settings):
    assert status(LogStatus.DELIVERED) == "kept"
    stub = entry()
    assert (stub.status, stub.provider_msg_id, stub.trip_id) == ("delivered", WAMID, None)
    assert log.previous(JOB, [PID])[PID].complete is False
    outcome()
    assert (entry().status, entry().trip_id) == ("delivered", TRIP)
    assert log.previous(JOB, [PID])[PID].complete is True


def test_failed_is_final_and_keeps_metas_error(settings):
    outcome()
    assert status(LogStatus.FAILED, error_code=131026) == "applied"
    assert status(LogStatus.READ) == "unchanged"
    assert status(LogStatus.DELIVERED) == "unchanged"
    e = entry()
    assert (e.status, e.error_code, e.reason) == ("failed", 131026, "whatsapp_error_131026")


def test_another_wamids_status_does_not_move_the_entry(settings):
    outcome()
    assert status(LogStatus.READ, wamid="wamid.other") == "unchanged"
    assert entry().status == "sent"


def test_a_timed_out_send_that_reached_meta_gets_its_wamid_from_the_status(settings):
    """The send timed out (outcome queued, no wamid), yet Meta took it: its status names the entry by our
    key, so the entry gets the wamid and the status, and the sender will not send again."""
    outcome(LogStatus.QUEUED, wamid=None)
    assert status(LogStatus.DELIVERED) == "applied"
    e = entry()
    assert (e.status, e.provider_msg_id) == ("delivered", WAMID)
    outcome(LogStatus.QUEUED, wamid=None, attempts=1)  # the sender's late write of the same failure
    assert entry().status == "delivered"


def test_a_status_without_a_key_finds_the_entry_by_wamid_or_is_kept_as_unknown(settings):
    outcome()
    assert status(LogStatus.DELIVERED, keyed=False) == "applied"
    assert entry().status == "delivered"
    assert status(LogStatus.DELIVERED, wamid="wamid.stranger", keyed=False) == "unknown"
    kept = NotificationLog.get("wamid#wamid.stranger", "-", consistent_read=True)
    assert kept.status == "delivered" and kept.expires_at is not None  # until the log's TTL


def test_an_outcome_never_lowers_a_status_and_a_final_outcome_is_not_replaced(settings):
    outcome(LogStatus.QUEUED, wamid=None)
    outcome(LogStatus.SENT)
    assert entry().status == "sent" and entry().attempts == 1
    outcome(LogStatus.QUEUED, wamid=None, attempts=2)  # never happens after a send; even so, not lowered
    assert entry().status == "sent"

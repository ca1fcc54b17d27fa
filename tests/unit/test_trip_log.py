"""The log entries of a trip (``data.notifications_log.trip_log``): the keys-only ``by_trip_keys`` index
gives the order, the table the entries, a broadcast's chunk by one Query on its job, scattered keys by
BatchGetItem."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jastipin.data.models import NotificationLog
from jastipin.data.notifications_log import trip_log
from jastipin.operations.outcomes import recent_outcomes

START = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
BIG_JOB, BIG = "bc_big", 250  # a broadcast: many entries under one job
SMALL = 30  # auto-replies: one entry per job


def entry(job_id: str, n: int, at: datetime, *, trip: str = "jpn25", status: str = "sent") -> NotificationLog:
    return NotificationLog(
        job_id,
        f"p_{n:016d}",
        trip_id=trip,
        message_type="trip_reminder" if job_id == BIG_JOB else "auto_reply",
        status=status,
        provider_msg_id=f"wamid.{job_id}.{n}",
        attempts=1,
        created_at=at.isoformat(),
        updated_at=at.isoformat(),
        expires_at=at + timedelta(days=3),
    )


@pytest.fixture
def log(settings) -> list[tuple[str, str]]:
    """A 250-recipient broadcast, then 30 one-recipient replies and another trip's entry; keys in order."""
    with NotificationLog.batch_write() as batch:
        for n in range(BIG):
            batch.save(entry(BIG_JOB, n, START + timedelta(seconds=n), status="failed" if n == 7 else "sent"))
        for n in range(SMALL):
            batch.save(entry(f"rpl_{n}", n, START + timedelta(seconds=1000 + n)))
        batch.save(entry("rpl_other", 0, START + timedelta(seconds=2000), trip="other"))
    broadcast = [(BIG_JOB, f"p_{n:016d}") for n in range(BIG)]
    return broadcast + [(f"rpl_{n}", f"p_{n:016d}") for n in range(SMALL)]


@contextlib.contextmanager
def dynamodb_calls() -> Iterator[Counter[str]]:
    """Counts the DynamoDB operations made inside the block ("Query:index" for an index query)."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call
    counts: Counter[str] = Counter()

    def counted(client, operation, params):
        counts[f"{operation}:index" if params.get("IndexName") else operation] += 1
        return original(client, operation, params)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


def test_entries_come_in_time_order_a_broadcast_read_by_one_query(log):
    with dynamodb_calls() as calls:
        entries = list(trip_log("jpn25"))
    assert [(e.job_id, e.participant_id) for e in entries] == log  # the other trip's entry is not there
    assert all(e.message_type and e.status for e in entries)  # whole entries, not index keys
    # One index Query, one Query for the broadcast's 250 entries, one BatchGetItem for the 30 replies.
    assert calls == Counter({"Query:index": 1, "Query": 1, "BatchGetItem": 1})

    newest = list(trip_log("jpn25", newest_first=True))
    assert [(e.job_id, e.participant_id) for e in newest] == log[::-1]


def test_entries_show_their_status_now_not_when_they_were_indexed(log):
    NotificationLog(BIG_JOB, "p_0000000000000003").update(actions=[NotificationLog.status.set("read")])
    statuses = {e.participant_id: e.status for e in trip_log("jpn25") if e.job_id == BIG_JOB}
    assert statuses["p_0000000000000003"] == "read" and statuses["p_0000000000000004"] == "sent"


def test_an_entry_gone_meanwhile_is_left_out(log):
    NotificationLog("rpl_3", "p_0000000000000003").delete()
    NotificationLog(BIG_JOB, "p_0000000000000005").delete()
    keys = [(e.job_id, e.participant_id) for e in trip_log("jpn25")]
    assert len(keys) == len(log) - 2 and ("rpl_3", "p_0000000000000003") not in keys


def test_a_short_look_at_the_newest_fetches_only_those(log):
    with dynamodb_calls() as calls:
        newest = recent_outcomes("jpn25", limit=5)
    assert [o.job_id for o in newest.outcomes] == ["rpl_29", "rpl_28", "rpl_27", "rpl_26", "rpl_25"]
    assert calls == Counter({"Query:index": 1, "BatchGetItem": 1})  # 5 keys, 5 entries

    with dynamodb_calls() as calls:
        broadcast = recent_outcomes("jpn25", limit=3, status="sent")
    assert [o.job_id for o in broadcast.outcomes] == ["rpl_29", "rpl_28", "rpl_27"]


def test_outcomes_of_one_status_walk_the_log_with_a_query_per_broadcast(log):
    with dynamodb_calls() as calls:
        failed = recent_outcomes("jpn25", status="failed")
    assert [(o.job_id, o.participant_id, o.status) for o in failed.outcomes] == [
        (BIG_JOB, "p_0000000000000007", "failed")
    ]
    assert calls["Query"] == 1 and calls["BatchGetItem"] <= 1  # not one BatchGetItem per 100 entries

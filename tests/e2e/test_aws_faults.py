"""AWS-side faults through the local runtime (the moto server injects them, see localrun/moto_server.py), next
to WhatsApp-side ones (the sandbox): after each, the end state the README ("Reliability") promises. Every
recipient has exactly one final outcome in the notifications log, nobody is sent a message more often than the
documented bound allows, a failing message or status waits in SQS (then in its DLQ) instead of being lost,
and the webhook answers 500 for what it could not keep.

The clients retry throttling and 5xx errors themselves: PynamoDB's botocore client (every table access of the
functions) makes 4 attempts in botocore's "standard" mode, so a fault for fewer calls than that is absorbed
by the SDK, and a fault that lasts longer reaches the function's own failure path."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jastipin.ids import stable_id
from jastipin.outbound.delivery import UNLOGGED_LIMIT
from localrun.project import LOCAL_SECRETS, WEBHOOK_PATH
from localrun.runtime import LocalRuntime
from localrun.sandbox import sign, webhook_envelope
from tests.e2e.helpers import (
    create_trip,
    dlq_messages,
    local_config,
    log_entries,
    phone,
    seed_participants,
    upload_product,
    wait_for_log,
)
from tests.harness import eventually

VISIBILITY = 3  # seconds: a failed message comes back fast (the template's 180 s would stall the tests)
SEND_CONCURRENCY = 4
WA_TIMEOUT = 1.0  # seconds: the sandbox's timeout fault only has to outlast this
THROTTLED = "ProvisionedThroughputExceededException"
SDK_ATTEMPTS = 4  # PynamoDB: 1 + max_retry_attempts (3), botocore "standard" retry mode
FINAL = {"sent", "delivered", "read", "failed", "skipped"}


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    config = local_config(
        visibility_timeout=VISIBILITY,
        status_callbacks=False,  # statuses are sent by the tests that need them
        env={
            "SEND_CONCURRENCY": str(SEND_CONCURRENCY),
            "WA_TIMEOUT_SECONDS": str(WA_TIMEOUT),
            "RATE_LIMIT_PER_SECOND": "50",
        },
    )
    with LocalRuntime(config) as rt:
        yield rt


@pytest.fixture(autouse=True)
def clean(runtime: LocalRuntime) -> Iterator[None]:
    """Each case starts with no faults and an empty sandbox, and leaves the queues idle."""
    runtime.moto.clear_faults()  # type: ignore[union-attr]
    runtime.sandbox.clear()  # type: ignore[union-attr]
    yield
    runtime.moto.clear_faults()  # type: ignore[union-attr]
    runtime.wait_idle(timeout=30)
    runtime.sandbox.clear()  # type: ignore[union-attr]


@contextlib.contextmanager
def visibility(runtime: LocalRuntime, queue: str, seconds: int) -> Iterator[None]:
    """The template's rule (a queue's visibility outlasts an invocation) for a case whose invocations wait
    out SDK or WhatsApp retries: the module's short visibility would hand a message still being processed to
    a second invocation, and the duplicates would be the test's doing."""
    sqs = runtime.client("sqs")
    url = runtime.queue_url(queue)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)})
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": str(VISIBILITY)})


def digits(n: int) -> str:
    return phone(n).lstrip("+")


def failed_receives(runtime: LocalRuntime, queue: str) -> int:
    """Records of ``queue`` that its function failed (a function error fails its whole batch)."""
    (mapping,) = [m for m in runtime.mappings if m.queue.logical_id == queue]
    return mapping.stats["failed_records"] + mapping.stats["function_errors"]


def one_final_outcome_each(runtime: LocalRuntime, job: str, ids: list[str]) -> dict[str, dict]:
    """The job's log holds exactly one entry per recipient, each final; returns them by participant id."""
    items = log_entries(runtime, job)
    by_participant = {i["participant_id"]["S"]: i for i in items}
    assert len(items) == len(by_participant) == len(ids)
    assert set(by_participant) == set(ids)
    assert {i["status"]["S"] for i in items} <= FINAL, Counter(i["status"]["S"] for i in items)
    return by_participant


def sends(runtime: LocalRuntime) -> Counter[str]:
    """Messages WhatsApp accepted, per recipient."""
    return Counter(m["to"] for m in runtime.sandbox.messages())  # type: ignore[union-attr]


def injected(runtime: LocalRuntime) -> int:
    return sum(f["injected"] for f in runtime.moto.faults())  # type: ignore[union-attr]


# -- the sender -----------------------------------------------------------------------------------------


def test_throttled_log_writes_are_absorbed_by_sdk_retries(runtime):
    create_trip(runtime, "throttle")
    ids = seed_participants(runtime, "throttle", 30, start=1000)
    failures = failed_receives(runtime, "NotificationsQueue")
    # Fewer failures than one call's attempts: whichever outcome writes (UpdateItem) they hit, each succeeds.
    runtime.moto.add_fault(
        "dynamodb.UpdateItem", THROTTLED, table="NotificationsLogTable", times=SDK_ATTEMPTS - 1
    )
    with visibility(runtime, "NotificationsQueue", 12):  # the SDK's backoffs may take up to 7 s
        job = upload_product(runtime, "throttle")
        wait_for_log(runtime, job, 30)
    outcomes = one_final_outcome_each(runtime, job, ids)
    assert {(o["status"]["S"], o["attempts"]["N"]) for o in outcomes.values()} == {("sent", "1")}
    assert sends(runtime) == {digits(n): 1 for n in range(1000, 1030)}
    assert injected(runtime) == SDK_ATTEMPTS - 1  # the faults did fire...
    assert failed_receives(runtime, "NotificationsQueue") == failures  # ...and no invocation failed


def test_log_writes_failing_longer_than_the_sdk_retries(runtime):
    """The chunk's invocation fails, SQS redelivers it, and once the table is back every recipient ends with
    one outcome. Re-sends stay within the README's bound: at most UNLOGGED_LIMIT + SEND_CONCURRENCY per failed
    invocation (the sends whose outcomes were not logged)."""
    create_trip(runtime, "logdown")
    count = 60
    ids = seed_participants(runtime, "logdown", count, start=1100)
    failures = failed_receives(runtime, "NotificationsQueue")
    with visibility(runtime, "NotificationsQueue", 12):  # an invocation waits out the SDK's retries (≤ 7 s)
        runtime.moto.add_fault("dynamodb.UpdateItem", THROTTLED, table="NotificationsLogTable")
        job = upload_product(runtime, "logdown")
        eventually(lambda: failed_receives(runtime, "NotificationsQueue") > failures, 30, "the chunk to fail")
        assert not log_entries(runtime, job)  # nothing could be logged
        runtime.moto.clear_faults()  # the table is back
        wait_for_log(runtime, job, count, timeout=60)
    failed = failed_receives(runtime, "NotificationsQueue") - failures
    outcomes = one_final_outcome_each(runtime, job, ids)
    assert {o["status"]["S"] for o in outcomes.values()} == {"sent"}
    per_recipient = sends(runtime)
    assert set(per_recipient) == {digits(n) for n in range(1100, 1100 + count)}  # nobody lost
    resent = sum(n - 1 for n in per_recipient.values())
    assert resent <= failed * (UNLOGGED_LIMIT + SEND_CONCURRENCY), (resent, failed)
    assert not dlq_messages(runtime, "NotificationsDLQ")


def test_whatsapp_timeouts_and_dropped_connections_are_retried(runtime):
    sandbox = runtime.sandbox
    create_trip(runtime, "flaky")
    ids = seed_participants(runtime, "flaky", 6, start=1200)
    timeout_ms = WA_TIMEOUT * 1000 + 300
    sandbox.add_fault({"to": digits(1200), "times": 1, "timeout": True, "latency_ms": timeout_ms})
    sandbox.add_fault({"to": digits(1201), "times": 1, "timeout": True, "latency_ms": 0})  # dropped at once
    # Both, one after the other: the third attempt goes through.
    sandbox.add_fault({"to": digits(1202), "times": 1, "timeout": True, "latency_ms": 0})
    sandbox.add_fault({"to": digits(1202), "times": 1, "timeout": True, "latency_ms": timeout_ms})
    with visibility(runtime, "NotificationsQueue", 30):  # the chunk waits out the 2 s and 4 s backoffs
        job = upload_product(runtime, "flaky")
        wait_for_log(runtime, job, 6, timeout=45)
    outcomes = one_final_outcome_each(runtime, job, ids)
    attempts = {pid: (o["status"]["S"], int(o["attempts"]["N"])) for pid, o in outcomes.items()}
    assert attempts == {
        ids[0]: ("sent", 2),
        ids[1]: ("sent", 2),
        ids[2]: ("sent", 3),
        ids[3]: ("sent", 1),
        ids[4]: ("sent", 1),
        ids[5]: ("sent", 1),
    }
    assert sends(runtime) == {digits(n): 1 for n in range(1200, 1206)}
    assert sandbox.requests_count() == 6 + 1 + 1 + 2  # every failed attempt was tried again, once


def test_token_expiring_mid_job_halts_the_chunk_until_it_is_renewed(runtime):
    """The token is rejected (401 / 190) after the first few sends of a chunk: the chunk halts and goes back
    to SQS (the sends already made are logged), halts again on the redelivery, and once the token works the
    rest are sent. Nobody gets the message twice. (A token rejected for good ends in the DLQ after 3
    receives: tests/e2e/test_sender_faults.py.)"""
    sandbox = runtime.sandbox
    create_trip(runtime, "expiry")
    count = 10
    ids = seed_participants(runtime, "expiry", count, start=1300)
    to_of = {pid: digits(n) for n, pid in enumerate(ids, start=1300)}
    pid_of = {to: pid for pid, to in to_of.items()}
    # The fan-out pages through the trip in participant-id order, and the sender's threads take the chunk's
    # recipients in that order: the first SEND_CONCURRENCY are under way before any other.
    order = sorted(ids)
    early = {to_of[pid] for pid in order[:SEND_CONCURRENCY]}
    for pid in order[SEND_CONCURRENCY:]:
        sandbox.add_fault({"to": to_of[pid], "times": None, "http_status": 401, "code": 190})
    failures = failed_receives(runtime, "NotificationsQueue")
    job = upload_product(runtime, "expiry")
    eventually(lambda: failed_receives(runtime, "NotificationsQueue") > failures, 30, "the first halt")
    first = sends(runtime)
    assert first and set(first) <= early  # halted mid-job
    logged = {i["participant_id"]["S"]: i["status"]["S"] for i in log_entries(runtime, job)}
    assert all(logged[pid_of[to]] == "sent" for to in first)  # logged before the message went back
    eventually(lambda: failed_receives(runtime, "NotificationsQueue") > failures + 1, 30, "the redelivery")
    again = sends(runtime)
    assert set(again.values()) == {1} and set(again) <= early  # nobody twice, nobody past the bad token
    sandbox.clear_faults()  # the token is renewed before the third receive
    wait_for_log(runtime, job, count, timeout=30)
    outcomes = one_final_outcome_each(runtime, job, ids)
    assert {o["status"]["S"] for o in outcomes.values()} == {"sent"}
    assert sends(runtime) == {to: 1 for to in to_of.values()}
    assert not dlq_messages(runtime, "NotificationsDLQ")


# -- the webhook and the inbound function ----------------------------------------------------------------


def post_webhook(runtime: LocalRuntime, value: dict[str, Any]) -> httpx.Response:
    """A signed webhook as Meta posts it. Not through the sandbox: its client gives up after 5 s, and an
    answer may take longer here (the SDK's retries)."""
    payload = webhook_envelope(value, phone_number_id=runtime.sandbox.phone_number_id)  # type: ignore[union-attr]
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(LOCAL_SECRETS["WA_APP_SECRET"], body),
    }
    return httpx.post(runtime.api.url + WEBHOOK_PATH, content=body, headers=headers, timeout=30)  # type: ignore[union-attr]


def test_a_status_that_cannot_be_applied_waits_in_the_queue_until_the_log_is_back(runtime):
    """The webhook only queues a status (200: it is kept); the inbound function fails on the notifications
    log, the status comes back after the visibility timeout and is applied once the table works. Meta's
    repeats of it change nothing."""
    create_trip(runtime, "status")
    (pid,) = seed_participants(runtime, "status", 1, start=1400)
    job = upload_product(runtime, "status")
    wait_for_log(runtime, job, 1)
    (message,) = runtime.sandbox.messages()
    status = {
        "id": message["id"],
        "status": "delivered",
        "timestamp": str(int(time.time())),
        "recipient_id": digits(1400),
        "biz_opaque_callback_data": message["body"]["biz_opaque_callback_data"],  # Meta echoes it
    }
    failures = failed_receives(runtime, "InboundQueue")
    runtime.moto.add_fault("dynamodb.UpdateItem", THROTTLED, table="NotificationsLogTable")
    with visibility(runtime, "InboundQueue", 10):
        response = post_webhook(runtime, {"statuses": [status]})
        assert (response.status_code, response.json()["statuses"]) == (200, 1)
        eventually(lambda: injected(runtime) >= SDK_ATTEMPTS, 30, "the SDK to give up")
        eventually(lambda: failed_receives(runtime, "InboundQueue") > failures, 30, "the failed receive")
        (entry,) = log_entries(runtime, job)
        assert entry["status"]["S"] == "sent"
        runtime.moto.clear_faults()
        # Meta delivers it again, and (as it may) once more, while the first waits to come back.
        for _ in range(2):
            assert post_webhook(runtime, {"statuses": [status]}).status_code == 200
        runtime.wait_idle(timeout=60, queues={"InboundQueue"})
    (entry,) = log_entries(runtime, job)
    assert (entry["participant_id"]["S"], entry["status"]["S"]) == (pid, "delivered")
    assert not dlq_messages(runtime, "InboundDLQ")


def test_join_while_contacts_cannot_be_updated_waits_in_the_dlq_and_is_answered_once(runtime):
    """The webhook only queues the message (200); the inbound function fails on the contacts table, SQS
    redelivers, and after 3 receives the message is in the inbound DLQ. Once the table works the operator
    redrives it (the admin API; SQS's start-message-move-task does the same, moto has none): one reply, one
    membership."""
    sandbox = runtime.sandbox
    create_trip(runtime, "joindown")
    who = "6281399990001"
    failures = failed_receives(runtime, "InboundQueue")
    runtime.moto.add_fault("dynamodb.UpdateItem", THROTTLED, table="ContactsTable")
    assert sandbox.send_inbound(from_phone=who, text="JOIN joindown", name="Ani") == 200
    eventually(lambda: dlq_messages(runtime, "InboundDLQ"), 60, "the message in the inbound DLQ")
    # Three receives, each failed (on the table, or because the one before was still retrying it).
    eventually(lambda: failed_receives(runtime, "InboundQueue") - failures >= 3, 15, "3 failed receives")
    assert sandbox.messages() == []  # no reply: nothing was done
    runtime.moto.clear_faults()

    response = httpx.post(
        f"{runtime.api.url}/admin/api/queues/inbound/dlq/redrive",  # type: ignore[union-attr]
        json={"all": True},
        headers={"Authorization": f"Bearer {LOCAL_SECRETS['ADMIN_TOKEN']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["moved"], response.json()["done"]) == (1, True)

    (reply,) = eventually(lambda: sandbox.messages(to=who), 30, "the reply")
    assert reply["body"]["text"]["body"].startswith("Terima kasih sudah join!")
    runtime.wait_idle(timeout=30)  # a second reply would have been queued and sent by now
    assert [m["to"] for m in sandbox.messages()] == [who]
    membership = runtime.client("dynamodb").get_item(
        TableName=runtime.table_name("ParticipantsTable"),
        Key={"trip_id": {"S": "joindown"}, "participant_id": {"S": stable_id("p", "+" + who)}},
        ConsistentRead=True,
    )["Item"]
    assert membership["status"]["S"] == "active"
    assert not dlq_messages(runtime, "InboundDLQ")


def test_stop_while_memberships_cannot_be_updated_is_applied_once_the_table_is_back(runtime):
    """STOP must not be answered "you have not joined" (and dropped) because the table failed: the record
    fails, and the redelivery applies it."""
    sandbox = runtime.sandbox
    create_trip(runtime, "stopdown")
    (pid,) = seed_participants(runtime, "stopdown", 1, start=1500)
    who = digits(1500)
    failures = failed_receives(runtime, "InboundQueue")
    runtime.moto.add_fault("dynamodb.UpdateItem", THROTTLED, table="ParticipantsTable")
    # Longer than the SDK's retries: with 3 s, two receives could find the first still retrying and the
    # message would reach the DLQ before the table is back (tested above for JOIN).
    with visibility(runtime, "InboundQueue", 10):
        assert sandbox.send_inbound(from_phone=who, text="STOP") == 200
        eventually(lambda: injected(runtime) >= SDK_ATTEMPTS, 30, "the SDK to give up")
        eventually(lambda: failed_receives(runtime, "InboundQueue") > failures, 30, "the failed receive")
        assert sandbox.messages() == []  # not answered: the record failed
        runtime.moto.clear_faults()
        (reply,) = eventually(lambda: sandbox.messages(to=who), 30, "the reply")
    assert reply["body"]["text"]["body"].startswith("Anda berhenti menerima notifikasi.")
    runtime.wait_idle(timeout=30)
    assert [m["to"] for m in sandbox.messages()] == [who]  # answered once
    membership = runtime.client("dynamodb").get_item(
        TableName=runtime.table_name("ParticipantsTable"),
        Key={"trip_id": {"S": "stopdown"}, "participant_id": {"S": pid}},
        ConsistentRead=True,
    )["Item"]
    assert membership["status"]["S"] == "unsubscribed"


def test_marketing_stop_webhook_is_refused_while_contacts_cannot_be_updated(runtime):
    create_trip(runtime, "prefs")
    seed_participants(runtime, "prefs", 1, start=1600)
    preference = {
        "wa_id": digits(1600),
        "detail": "User requested to stop marketing messages",
        "category": "marketing_messages",
        "value": "stop",
        "timestamp": int(time.time()),
    }
    runtime.moto.add_fault("dynamodb.UpdateItem", THROTTLED, table="ContactsTable")
    response = post_webhook(runtime, {"user_preferences": [preference]})
    assert response.status_code == 500, response.text
    runtime.moto.clear_faults()
    response = post_webhook(runtime, {"user_preferences": [preference]})
    assert (response.status_code, response.json()["preferences"]) == (200, 1)
    contact = runtime.client("dynamodb").get_item(
        TableName=runtime.table_name("ContactsTable"), Key={"wa_key": {"S": phone(1600)}}, ConsistentRead=True
    )["Item"]
    assert contact["marketing_opt_out"] == {"BOOL": True}

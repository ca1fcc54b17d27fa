"""The sender through the local runtime, with the WhatsApp sandbox injecting failures: every recipient ends
with exactly one logged outcome; transient failures are retried, permanent ones are not; a rejected token
sends the message to the DLQ after 3 receives; a crashed sender re-sends no more than the documented bound."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from jastipin.outbound.delivery import UNLOGGED_LIMIT
from localrun.runtime import LocalRuntime
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


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    config = local_config(
        visibility_timeout=8,  # failed batches come back fast (the template's 180 s would stall the tests)
        status_callbacks=False,
        env={"SEND_CONCURRENCY": "4", "CHUNK_SIZE": "50"},
    )
    with LocalRuntime(config) as rt:
        yield rt


@pytest.fixture
def sandbox(runtime):
    runtime.sandbox.clear()
    yield runtime.sandbox
    runtime.sandbox.clear()


def digits(n: int) -> str:
    return phone(n).lstrip("+")


def by_status(items: list[dict]) -> dict[str, str]:
    return {i["participant_id"]["S"]: i["status"]["S"] for i in items}


@pytest.fixture
def lambda_visibility(runtime):
    """The template's rule (visibility ≥ the sender's timeout) for tests whose invocations wait out retries:
    the module's short visibility would hand a still-running chunk to a second sender."""
    sqs = runtime.client("sqs")
    url = runtime.queue_url("NotificationsQueue")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "60"})
    yield
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "8"})


def test_each_failure_kind_ends_in_the_right_single_outcome(runtime, sandbox, lambda_visibility):
    create_trip(runtime, "faults")
    ids = seed_participants(runtime, "faults", 6, start=100)
    sandbox.add_fault(
        {"to": digits(100), "times": 1, "http_status": 429, "code": 130429}
    )  # rate limited once
    sandbox.add_fault({"to": digits(101), "times": None, "http_status": 400, "code": 131026})  # invalid
    sandbox.add_fault({"to": digits(102), "times": 2, "http_status": 500, "code": 131000})  # 5xx twice
    sandbox.add_fault({"to": digits(103), "times": None, "http_status": 503, "code": 131000})  # always down
    sandbox.add_fault({"to": digits(104), "times": 1, "http_status": 400, "code": 131056})  # pair limit once
    job = upload_product(runtime, "faults")
    items = wait_for_log(runtime, job, 6)
    outcome = {
        i["participant_id"]["S"]: (i["status"]["S"], int(i["attempts"]["N"]), i.get("reason", {}).get("S"))
        for i in items
    }
    assert outcome[ids[0]] == ("sent", 2, None)
    assert outcome[ids[1]] == ("failed", 1, "whatsapp_error_131026")
    assert outcome[ids[2]] == ("sent", 3, None)
    assert outcome[ids[3]] == ("failed", 3, "whatsapp_error_131000")
    assert outcome[ids[4]] == ("sent", 2, None)
    assert outcome[ids[5]] == ("sent", 1, None)
    accepted = Counter(m["to"] for m in sandbox.messages())
    assert accepted == {digits(n): 1 for n in (100, 102, 104, 105)}  # each delivered exactly once


def test_rejected_token_goes_to_the_dlq_after_three_receives_and_nothing_is_lost(runtime, sandbox):
    create_trip(runtime, "token")
    seed_participants(runtime, "token", 3, start=200)
    sandbox.add_fault({"to": None, "times": None, "http_status": 401, "code": 190})
    job = upload_product(runtime, "token")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not dlq_messages(runtime, "NotificationsDLQ"):
        time.sleep(0.5)
    assert len(dlq_messages(runtime, "NotificationsDLQ")) == 1  # the chunk, with its 3 recipients
    assert sandbox.messages() == []
    assert not [i for i in log_entries(runtime, job) if i["status"]["S"] in {"sent", "failed"}]
    # The token is fixed and the operator redrives the DLQ: all three are sent, once.
    sandbox.clear()
    sqs = runtime.client("sqs")
    dlq = runtime.queue_url("NotificationsDLQ")
    for message in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]:
        sqs.send_message(QueueUrl=runtime.queue_url("NotificationsQueue"), MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    items = wait_for_log(runtime, job, 3)
    assert set(by_status(items).values()) == {"sent"}
    assert sorted(m["to"] for m in sandbox.messages()) == [digits(n) for n in (200, 201, 202)]


def test_crash_mid_batch_resends_at_most_the_unlogged_sends(runtime, sandbox):
    create_trip(runtime, "crash")
    ids = seed_participants(runtime, "crash", 40, start=300)
    sandbox.latency_ms = 40  # ~40 sends/s per 4 threads: the kill lands mid-chunk
    try:
        job = upload_product(runtime, "crash")
        eventually(lambda: len(sandbox.messages()) >= 8, 20, what="8 sends before the kill", interval=0.01)
        runtime.pools["SenderFunction"].kill_all()  # the sender dies mid-batch
        items = wait_for_log(runtime, job, 40, timeout=60)
    finally:
        sandbox.latency_ms = 0
    assert sorted(by_status(items)) == sorted(ids) and set(by_status(items).values()) == {"sent"}
    per_recipient = Counter(m["to"] for m in sandbox.messages())
    assert set(per_recipient) == {digits(n) for n in range(300, 340)}  # nobody lost
    duplicates = sum(count - 1 for count in per_recipient.values())
    assert duplicates <= UNLOGGED_LIMIT + 4  # at most one unflushed log batch plus the sends in flight


def test_window_closed_and_unsubscribed_are_skipped(runtime, sandbox):
    create_trip(runtime, "skips")
    ids = seed_participants(runtime, "skips", 2, start=400)
    old = seed_participants(runtime, "skips", 1, start=402, inbound_hours_ago=30)
    sandbox.send_inbound(from_phone=digits(401), text="STOP")
    stopped = f"+{digits(401)}"
    eventually(  # handled by the inbound function
        lambda: any("berhenti" in m["body"]["text"]["body"] for m in sandbox.messages(to=stopped)),
        30,
        what="the STOP's answer",
        interval=0.1,
    )
    job = upload_product(runtime, "skips")
    items = wait_for_log(runtime, job, 2)  # the unsubscribed one is no longer an active participant
    outcome = {i["participant_id"]["S"]: (i["status"]["S"], i.get("reason", {}).get("S")) for i in items}
    assert outcome == {ids[0]: ("sent", None), old[0]: ("skipped", "window_closed")}

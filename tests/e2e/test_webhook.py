"""The webhook through the local runtime, driven by the WhatsApp sandbox as Meta would drive it: concurrent
duplicate deliveries, statuses out of order (queued by the webhook, applied by the inbound function), a failed
status, a user without a phone number."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from localrun.runtime import LocalRuntime, RuntimeConfig, free_port
from tests.e2e.helpers import (
    create_trip,
    log_entries,
    phone,
    seed_participants,
    upload_product,
    wait_for_log,
    wait_messages,
)
from tests.harness import eventually


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    config = RuntimeConfig(
        api_port=free_port(), sandbox_port=free_port(), moto_port=free_port(), status_callbacks=False
    )
    with LocalRuntime(config) as rt:
        create_trip(rt, "hook")
        yield rt


def wait_for_status(runtime: LocalRuntime, job: str, status: str, timeout: float = 30) -> list[dict]:
    """The job's log entries once every one has the status (the inbound function applies the statuses the
    webhook queued a moment later), and no other status comes within a second."""
    eventually(
        lambda: {e["status"]["S"] for e in log_entries(runtime, job)} == {status},
        timeout,
        what=lambda: f"{status}, still {[e['status']['S'] for e in log_entries(runtime, job)]}",
        interval=0.1,
    )
    time.sleep(1)  # and no other status comes within a second
    return log_entries(runtime, job)


def test_same_message_delivered_three_times_at_once_is_answered_once(runtime):
    sandbox = runtime.sandbox
    sandbox.clear()
    message = {"id": "wamid.concurrent-join-1", "type": "text", "text": {"body": "JOIN hook"}}
    with ThreadPoolExecutor(3) as pool:
        statuses = list(
            pool.map(lambda _: sandbox.send_inbound(from_phone="6281377778888", message=message), range(3))
        )
    assert statuses == [200, 200, 200]
    replies = wait_messages(runtime, 1)
    time.sleep(2)  # a duplicate reply would have arrived by now
    assert [m["to"] for m in sandbox.messages()] == ["6281377778888"]
    assert replies[0]["body"]["text"]["body"].startswith("Terima kasih sudah join!")


def test_statuses_out_of_order_and_duplicated_end_at_the_furthest(runtime):
    sandbox = runtime.sandbox
    sandbox.clear()
    create_trip(runtime, "order")
    (pid,) = seed_participants(runtime, "order", 1, start=500)
    job = upload_product(runtime, "order")
    (entry,) = wait_for_log(runtime, job, 1)
    wamid, to = entry["provider_msg_id"]["S"], phone(500).lstrip("+")
    time.sleep(1.5)  # the entry is written; statuses now find it
    for status in ("read", "delivered", "sent", "read", "delivered"):
        assert sandbox.send_status(wamid, status, to) == 200
    (entry,) = wait_for_status(runtime, job, "read")  # the inbound function applies what was queued
    assert entry["participant_id"]["S"] == pid and entry["status"]["S"] == "read"


def test_failed_status_records_the_error_code(runtime):
    sandbox = runtime.sandbox
    sandbox.clear()
    create_trip(runtime, "failing")
    seed_participants(runtime, "failing", 1, start=501)
    job = upload_product(runtime, "failing")
    (entry,) = wait_for_log(runtime, job, 1)
    time.sleep(1.5)
    assert (
        sandbox.send_status(
            entry["provider_msg_id"]["S"], "failed", phone(501).lstrip("+"), error_code=131026
        )
        == 200
    )
    (entry,) = wait_for_status(runtime, job, "failed")
    assert (entry["status"]["S"], entry["error_code"]["N"]) == ("failed", "131026")


def test_username_user_without_phone_can_join_and_is_answered_by_user_id(runtime):
    sandbox = runtime.sandbox
    sandbox.clear()
    assert sandbox.send_inbound(from_phone=None, user_id="ID.7788", text="join HOOK") == 200
    (reply,) = wait_messages(runtime, 1)
    assert reply["body"]["recipient"] == "ID.7788" and "to" not in reply["body"]
    assert reply["body"]["text"]["body"].startswith("Terima kasih sudah join!")


def test_a_user_whose_user_id_changes_gets_the_next_product_at_the_new_id(runtime):
    """Meta reports that a username user's business-scoped user id changed (a ``system`` message): nothing
    is answered, and the next product update of the trip they joined goes to the new id, once."""
    sandbox = runtime.sandbox
    sandbox.clear()
    create_trip(runtime, "moved")
    assert sandbox.send_inbound(from_phone=None, user_id="ID.9001", text="JOIN moved") == 200
    wait_messages(runtime, 1)  # the JOIN's reply
    change = {
        "type": "system",
        "system": {
            "body": "User changed their user id",
            "type": "user_changed_user_id",
            "user_id": "ID.9002",
        },
    }
    assert sandbox.send_inbound(from_phone=None, user_id="ID.9001", message=change) == 200
    ddb = runtime.client("dynamodb")

    def user_ids() -> list[str | None]:
        members = ddb.query(
            TableName=runtime.table_name("ParticipantsTable"),
            KeyConditionExpression="trip_id = :t",
            ExpressionAttributeValues={":t": {"S": "moved"}},
            ConsistentRead=True,
        )["Items"]
        return [m.get("user_id", {}).get("S") for m in members]

    # the inbound function moves the membership
    eventually(
        lambda: user_ids() == ["ID.9002"], 30, what=lambda: f"the move, have {user_ids()}", interval=0.2
    )
    job = upload_product(runtime, "moved")
    (entry,) = wait_for_log(runtime, job, 1)
    product = [
        m
        for m in wait_messages(runtime, 2)
        if str(m["body"].get("biz_opaque_callback_data", "")).startswith(job)
    ]
    assert [m["body"]["recipient"] for m in product] == ["ID.9002"], product
    assert entry["status"]["S"] == "sent"
    assert len(sandbox.messages()) == 2  # the JOIN's reply and the product: the change was not answered

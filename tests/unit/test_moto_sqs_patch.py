"""The local moto server's SQS patches. The faster receive (``localrun.moto_server.patch_moto_sqs_receive``)
keeps moto's behaviour: a message within the queue's retention period is received, one past it is not; a
message in flight or delayed is neither received nor counted visible until its time comes. The locked delete
(``patch_moto_sqs_queue_races``) loses no message sent while others are deleted and revives none. The
cheaper send (``patch_moto_sqs_send``) counts nothing and still deduplicates a FIFO queue by content."""

from __future__ import annotations

import sys
import threading
import time
import uuid

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Message, Queue, SQSBackend

from localrun.moto_server import patch_moto_sqs_queue_races, patch_moto_sqs_receive, patch_moto_sqs_send
from tests.conftest import REGION


def _patched(monkeypatch) -> None:
    for owner, name in (
        (SQSBackend, "is_message_valid_based_on_retention_period"),
        (Message, "visible"),
        (Message, "delayed"),
    ):
        monkeypatch.setattr(owner, name, owner.__dict__[name])  # restored after the test
    patch_moto_sqs_receive()


def test_the_patched_receive_still_drops_a_message_past_its_retention_period(monkeypatch) -> None:
    _patched(monkeypatch)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="fresh")
        sqs.send_message(QueueUrl=url, MessageBody="old")
        from moto.sqs.models import sqs_backends

        queue = sqs_backends["123456789012"][REGION].get_queue("q")
        old = next(m for m in queue._messages if m.body == "old")
        old.sent_timestamp -= 61_000  # sent 61 s before the 60 s retention period ends
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in received] == ["fresh"]


def test_in_flight_and_delayed_messages_stay_hidden_until_their_time(monkeypatch) -> None:
    _patched(monkeypatch)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="now")
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)["Messages"]
        assert [m["Body"] for m in first] == ["now"]
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert counts["ApproximateNumberOfMessages"] == "0"
        assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"
        assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
        assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages") is None
        time.sleep(1.1)
        again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert sorted(m["Body"] for m in again) == ["later", "now"]


def _sends_during_deletes() -> tuple[int, int]:
    """One thread sends 400 messages while two delete 200 in-flight ones, switching threads as often as the
    interpreter allows; returns (sent messages lost, deleted messages back in the queue)."""
    queue = Queue("q", region=REGION, account_id="123456789012")
    held = []
    for i in range(200):
        message = Message(str(uuid.uuid4()), f"held {i}")
        message.mark_received(visibility_timeout=600)
        queue.add_message(message)
        held.append(message)
    sent: list[Message] = []

    def send() -> None:
        for i in range(400):
            message = Message(str(uuid.uuid4()), f"new {i}")
            queue.add_message(message)
            sent.append(message)

    def delete(messages: list[Message]) -> None:
        for message in messages:
            queue.delete_message(message.receipt_handle)

    threads = [threading.Thread(target=send)]
    threads += [threading.Thread(target=delete, args=(held[k::2],)) for k in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    left = {id(m) for m in queue._messages}
    return sum(id(m) not in left for m in sent), sum(id(m) in left for m in held)


def test_stock_moto_loses_and_revives_messages_when_sends_and_deletes_interleave(monkeypatch) -> None:
    """What the patch is for (if a moto upgrade fixes it, this fails and the patch can go)."""
    current = Queue.__dict__["delete_message"]
    monkeypatch.setattr(Queue, "delete_message", getattr(current, "stock", current))
    lost, revived = _sends_during_deletes()
    if not (lost or revived):
        pytest.fail("moto's delete no longer races its sends: drop patch_moto_sqs_queue_races")


def test_with_the_locked_delete_no_message_is_lost_or_revived(monkeypatch) -> None:
    monkeypatch.setattr(Queue, "delete_message", Queue.__dict__["delete_message"])  # restored after
    patch_moto_sqs_queue_races()
    for _ in range(3):
        assert _sends_during_deletes() == (0, 0)


def test_the_locked_delete_keeps_moto_answers(monkeypatch) -> None:
    monkeypatch.setattr(Queue, "delete_message", Queue.__dict__["delete_message"])
    patch_moto_sqs_queue_races()
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        for body in ("a", "b", "c"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
        again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        by_body = {m["Body"]: m for m in again}
        old_handle = next(m["ReceiptHandle"] for m in first if m["Body"] == "b")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=old_handle)  # an earlier receive's handle still works
        sqs.delete_message(QueueUrl=url, ReceiptHandle=by_body["b"]["ReceiptHandle"])  # deleted twice: fine
        result = sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "a", "ReceiptHandle": by_body["a"]["ReceiptHandle"]},
                {"Id": "x", "ReceiptHandle": "not-a-handle"},
            ],
        )
        assert [e["Id"] for e in result["Successful"]] == ["a"]
        assert [(e["Id"], e["Code"]) for e in result["Failed"]] == [("x", "ReceiptHandleIsInvalid")]
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"  # only "c" is left


def _patched_send(monkeypatch) -> None:
    monkeypatch.setattr(SQSBackend, "send_message", SQSBackend.__dict__["send_message"])
    monkeypatch.setattr(Queue, "attributes", Queue.__dict__["attributes"])
    patch_moto_sqs_send()


def test_a_send_to_a_standard_queue_counts_nothing(monkeypatch) -> None:
    _patched_send(monkeypatch)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="one")
        counted = []
        stock = Queue.__dict__["approximate_number_of_messages"]
        monkeypatch.setattr(
            Queue, "approximate_number_of_messages", property(lambda q: counted.append(q) or stock.fget(q))
        )
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(10)])
        assert counted == []
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert counts["Attributes"]["ApproximateNumberOfMessages"] == "11" and counted


def test_a_fifo_queue_still_deduplicates_by_content(monkeypatch) -> None:
    _patched_send(monkeypatch)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(
            QueueName="q.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        for _ in range(2):
            sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert counts["ApproximateNumberOfMessages"] == "1" and counts["ContentBasedDeduplication"] == "true"

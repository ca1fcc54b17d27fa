"""The local moto server's faster SQS (``localrun.moto_server.patch_moto_sqs_receive``) keeps moto's
behaviour: a message within the queue's retention period is received, one past it is not; a message in flight
or delayed is neither received nor counted visible until its time comes."""

from __future__ import annotations

import time

import boto3
from moto import mock_aws
from moto.sqs.models import Message, SQSBackend

from localrun.moto_server import patch_moto_sqs_receive
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

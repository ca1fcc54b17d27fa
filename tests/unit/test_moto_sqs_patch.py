"""The local moto server's faster ReceiveMessage (``localrun.moto_server.patch_moto_sqs_receive``) keeps
moto's behaviour: a message within the queue's retention period is received, one past it is not."""

from __future__ import annotations

import boto3
from moto import mock_aws
from moto.sqs.models import SQSBackend

from localrun.moto_server import patch_moto_sqs_receive
from tests.conftest import REGION


def test_the_patched_receive_still_drops_a_message_past_its_retention_period(monkeypatch) -> None:
    monkeypatch.setattr(
        SQSBackend,
        "is_message_valid_based_on_retention_period",
        SQSBackend.is_message_valid_based_on_retention_period,
    )  # restored after the test
    patch_moto_sqs_receive()
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

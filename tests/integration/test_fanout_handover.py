"""A trip far larger than one sender invocation can read: the fan-out hands its cursor on before the
deadline, continuations finish it, a redriven fan-out resumes from its progress, and every participant ends
with exactly one outcome. The sender handler runs against a moto server over HTTP, each message in its own
invocation with only a sliver of time (as if the function's timeout were tiny)."""

from __future__ import annotations

import boto3

from tests.conftest import REGION
from tests.harness import FakeContext, sqs_event
from tests.integration.test_api import create_trip, upload

PARTICIPANTS = 1_500
# The sender keeps 5 s as its safety margin and hands over with 4 s more left: an invocation with 9 s reads
# one page (100 participants) and hands over; deterministic, whatever the machine's speed.
TINY_TIMEOUT_SECONDS = 9.0


def seed(ctx, trip: str, count: int) -> set[str]:
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    table = ctx.stack.tables["ParticipantsTable"]
    ids = set()
    for start in range(0, count, 25):
        requests = []
        for n in range(start, min(start + 25, count)):
            pid, phone = f"p_{n:016d}", f"+62812{n:07d}"
            ids.add(pid)
            item = {
                "trip_id": {"S": trip},
                "participant_id": {"S": pid},
                "wa_key": {"S": phone},
                "phone": {"S": phone},
                "status": {"S": "active"},
                "joined_at": {"S": "2026-12-01T00:00:00.000000+0000"},
                "last_active_at": {"S": "2026-12-01T00:00:00.000000+0000"},
            }
            requests.append({"PutRequest": {"Item": item}})
        ddb.batch_write_item(RequestItems={table: requests})
    return ids


def run_queue(ctx, seconds: float, max_invocations: int = 200) -> tuple[int, int]:
    """Each message of the notifications queue in its own invocation with ``seconds`` to live, as the
    template's event source (batch size 1) delivers them; returns (invocations, fan-out invocations)."""
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    queue = ctx.stack.queues["NotificationsQueue"]
    invocations = fan_outs = 0
    while invocations < max_invocations:
        messages = sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=1).get("Messages", [])
        if not messages:
            return invocations, fan_outs
        (m,) = messages
        fan_outs += '"participants"' not in m["Body"]
        event = sqs_event([m], queue.arn)
        response = ctx.sender.handler(event, FakeContext(seconds))
        invocations += 1
        assert response == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError(f"the queue did not drain in {max_invocations} invocations")


def outcomes(ctx, job_id: str) -> list[dict]:
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    pages = ddb.get_paginator("query").paginate(
        TableName=ctx.stack.tables["NotificationsLogTable"],
        KeyConditionExpression="job_id = :j",
        ExpressionAttributeValues={":j": {"S": job_id}},
    )
    return [item for page in pages for item in page["Items"]]


def progress(ctx, job_id: str) -> dict:
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    return ddb.get_item(TableName=ctx.stack.tables["JobsTable"], Key={"job_id": {"S": job_id}})["Item"]


def test_every_participant_gets_one_outcome_when_one_invocation_cannot_read_the_trip(ctx):
    create_trip(ctx)
    members = seed(ctx, "jpn25", PARTICIPANTS)
    status, body = upload(ctx, {"name": "Action Figure A", "price": 450000})
    assert status == 202
    invocations, fan_outs = run_queue(ctx, TINY_TIMEOUT_SECONDS)
    entries = outcomes(ctx, body["job_id"])
    assert sorted(e["participant_id"]["S"] for e in entries) == sorted(members)  # each exactly once
    # Nobody has written to the business: outside the 24-hour window a product update is skipped, with why.
    assert {(e["status"]["S"], e["reason"]["S"]) for e in entries} == {("skipped", "window_closed")}
    done = progress(ctx, body["job_id"])
    assert done["done"]["BOOL"] is True and int(done["recipients"]["N"]) == PARTICIPANTS
    assert int(done["continuations"]["N"]) == fan_outs - 1 == PARTICIPANTS // 100, (invocations, fan_outs)
    assert int(done["next_chunk"]["N"]) == invocations - fan_outs  # every chunk job ran once


def test_a_redriven_fan_out_resumes_from_its_cursor_not_from_the_beginning(ctx):
    create_trip(ctx)
    seed(ctx, "jpn25", PARTICIPANTS)
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    queue = ctx.stack.queues["NotificationsQueue"]
    status, body = upload(ctx, {"name": "Action Figure A", "price": 450000})
    assert status == 202
    (original,) = sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=1)["Messages"]
    # It had got part of the way before (say) its invocation was killed; later an operator redrives the
    # original message from the DLQ: it carries no cursor, but the stored progress does.
    event = sqs_event([original], queue.arn)
    assert ctx.sender.handler(event, FakeContext(TINY_TIMEOUT_SECONDS)) == {"batchItemFailures": []}
    sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=original["ReceiptHandle"])
    reached = int(progress(ctx, body["job_id"])["next_chunk"]["N"])
    assert reached == 1  # one page
    sqs.send_message(QueueUrl=queue.url, MessageBody=original["Body"])  # the redrive
    run_queue(ctx, 30)  # the redriven message, the continuation, the chunks
    entries = outcomes(ctx, body["job_id"])
    assert len(entries) == len({e["participant_id"]["S"] for e in entries}) == PARTICIPANTS
    assert int(progress(ctx, body["job_id"])["next_chunk"]["N"]) == PARTICIPANTS // 100  # no chunk twice

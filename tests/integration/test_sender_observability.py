"""What the sender handler prints (JSON logs and EMF metrics) for a real batch: the job id on every line of
that job, the per-queue / per-message-type breakdown beside the service-level metrics the alarms read, and no
phone number, name or message text anywhere."""

from __future__ import annotations

import io
import json

from tests.conftest import load_event
from tests.harness import FakeContext


def test_sender_output_has_job_ids_and_metrics_and_no_personal_data(ctx, capsys):
    good = load_event("sqs_notifications.json")["Records"][0]
    bad_body = {
        "jobId": 7,  # not a string: the record is unreadable
        "kind": "product_update",
        "tripId": "jpn25",
        "participants": [{"id": "p_1", "phone": "+6285712345678", "name": "Budi"}],
        "message": "Ada produk baru: rahasia",
    }
    bad = {**good, "messageId": "bad-1", "body": json.dumps(bad_body)}
    capsys.readouterr()
    logs_out = io.StringIO()  # the logger's stream was bound when the handler was imported
    previous = ctx.sender.logger.registered_handler.setStream(logs_out)
    try:
        response = ctx.sender.handler({"Records": [good, bad]}, FakeContext())
    finally:
        ctx.sender.logger.registered_handler.setStream(previous)

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    out = logs_out.getvalue() + capsys.readouterr().out  # JSON logs + EMF metrics (printed)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    logs = [line for line in lines if "level" in line]
    chunk = next(line for line in logs if line["message"] == "chunk processed")
    assert (chunk["job_id"], chunk["trip_id"], chunk["kind"]) == ("job_01", "jpn25", "product_update")
    unreadable = next(line for line in logs if line["message"] == "unreadable job")
    assert unreadable["message_id"] == "bad-1" and "job_id" not in unreadable  # the last job's keys are gone

    blobs = [line for line in lines if "_aws" in line]
    dimension_sets = [tuple(sorted(b["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0])) for b in blobs]
    assert ("service",) in dimension_sets  # what the alarms and the dashboard read, unchanged
    breakdown = [b for b in blobs if b.get("queue") == "notifications"]
    assert breakdown and breakdown[0]["message_type"] == "product_update"
    assert ("message_type", "queue", "service") in dimension_sets

    for secret in ("6281234567890", "6285712345678", "Ani", "Budi", "Ada produk", "rahasia"):
        assert secret not in out

"""Admin logic (``operations``): the PII-free DLQ view, redrive entries, request models, and the queue
operations against moto's in-process SQS."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from pydantic import ValidationError

from jastipin.errors import NotFound
from jastipin.operations.dlq import (
    MAX_LIST,
    ConfirmationRequired,
    QueueAdmin,
    dlq_message_view,
    redrive_entry,
)
from jastipin.operations.views import PurgeRequest, RedriveRequest

PHONE = "+6281311112222"


def body(job_id: str = "job_1", participants: int | None = 2, kind: str = "product_update") -> str:
    job = {
        "jobId": job_id,
        "kind": kind,
        "tripId": "jpn25",
        "template": "product_update",
        "message": "Halo Ani, produk baru!",
    }
    if participants is not None:
        job["participants"] = [{"id": f"p_{n}", "phone": PHONE, "name": "Ani"} for n in range(participants)]
    return json.dumps(job)


def sqs_message(message_body: str, **attributes: str) -> dict:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "Body": message_body,
        "Attributes": {"SentTimestamp": "1780282800000", "ApproximateReceiveCount": "4", **attributes},
    }


# ---------------------------------------------------------------- pure helpers


def test_dlq_view_counts_recipients_and_hides_who_and_what():
    view = dlq_message_view(sqs_message(body(participants=3)), now=1780282860.0)
    assert view.readable and view.job_id == "job_1" and view.kind == "product_update"
    assert view.trip_id == "jpn25" and view.message_type == "product_update"
    assert view.recipients == 3 and view.fan_out is False and view.receive_count == 4
    assert view.sent_at == datetime(2026, 6, 1, 3, 0, tzinfo=UTC) and view.age_seconds == 60.0
    dumped = view.model_dump_json()
    assert "6281311112222" not in dumped and "Ani" not in dumped and "Halo" not in dumped


def test_dlq_view_of_a_fan_out_job_and_of_garbage():
    fan_out = dlq_message_view(sqs_message(body(participants=None)), now=1780282800.0)
    assert fan_out.fan_out is True and fan_out.recipients is None
    garbage = dlq_message_view(sqs_message(f'{{"phone": "{PHONE}"}}'), now=1780282800.0)
    assert garbage.readable is False and garbage.job_id is None and PHONE not in garbage.model_dump_json()
    no_body = dlq_message_view({"MessageId": "m", "Attributes": {}}, now=0)
    assert no_body.readable is False and no_body.sent_at is None and no_body.age_seconds is None


def test_redrive_entry_standard_queue_is_the_body_as_it_was():
    message = sqs_message(body())
    message["MessageAttributes"] = {
        "origin": {"DataType": "String", "StringValue": "x", "StringListValues": []}
    }
    assert redrive_entry(message, 3, fifo=False) == {
        "Id": "3",
        "MessageBody": message["Body"],
        "MessageAttributes": {"origin": {"DataType": "String", "StringValue": "x"}},
    }


def test_redrive_entry_fifo_keeps_the_group_with_a_fresh_deduplication_id():
    message = sqs_message(body(), MessageGroupId="jpn25", MessageDeduplicationId="job_1-c0")
    first, second = redrive_entry(message, 0, fifo=True), redrive_entry(message, 0, fifo=True)
    assert first["MessageGroupId"] == "jpn25"
    assert first["MessageDeduplicationId"].startswith("redrive-")
    assert first["MessageDeduplicationId"] != second["MessageDeduplicationId"] != "job_1-c0"


@pytest.mark.parametrize(
    "payload", [{}, {"all": False}, {"message_ids": []}, {"all": True, "message_ids": ["a"]}, {"all": 1}]
)
def test_redrive_request_needs_exactly_ids_or_all(payload):
    with pytest.raises(ValidationError):
        RedriveRequest.model_validate(payload)


def test_redrive_request_limits_ids_and_rejects_unknown_fields():
    assert RedriveRequest.model_validate({"message_ids": ["a", "b"]}).message_ids == ["a", "b"]
    with pytest.raises(ValidationError):
        RedriveRequest.model_validate({"message_ids": [str(n) for n in range(101)]})
    with pytest.raises(ValidationError):
        RedriveRequest.model_validate({"all": True, "force": True})


# ---------------------------------------------------------------- against moto


@pytest.fixture
def queues(settings):
    return QueueAdmin(boto3.client("sqs"), settings, clock=lambda: 1780282800.0)


def test_missing_dlq_url_fails_loudly(settings):
    with pytest.raises(RuntimeError, match="BROADCAST_DLQ_URL"):
        QueueAdmin(boto3.client("sqs"), settings.model_copy(update={"broadcast_dlq_url": ""}))


def test_unknown_queue_is_not_found(queues):
    with pytest.raises(NotFound):
        queues.list_dlq("bulk")


def test_listing_stops_at_the_limit_and_says_so(queues, settings):
    sqs = boto3.client("sqs")
    for n in range(MAX_LIST + 5):
        sqs.send_message(
            QueueUrl=settings.notifications_dlq_url, MessageBody=body(f"job_{n}", participants=1)
        )
    listing = queues.list_dlq("notifications", limit=500)
    assert len(listing.messages) == MAX_LIST and listing.complete is False
    small = queues.list_dlq("notifications", limit=3)
    assert len(small.messages) == 3 and small.complete is False
    assert queues.counts(settings.notifications_dlq_url).visible == MAX_LIST + 5  # all released


def test_redrive_all_stops_when_time_runs_out(queues, settings):
    sqs = boto3.client("sqs")
    for n in range(25):
        sqs.send_message(QueueUrl=settings.proof_notify_dlq_url, MessageBody=body(f"job_{n}", kind="proof"))
    budget = iter([60.0, 60.0, 0.0])  # two rounds of 10, then the invocation is nearly over
    result = queues.redrive("proof_notify", RedriveRequest(all=True), time_left=lambda: next(budget))
    assert result.moved == 20 and result.remaining == 5 and result.done is False
    again = queues.redrive("proof_notify", RedriveRequest(all=True))
    assert again.moved == 5 and again.done is True and again.remaining == 0


def test_purge_refuses_without_the_queue_name(queues, settings):
    boto3.client("sqs").send_message(
        QueueUrl=settings.broadcast_dlq_url,
        MessageBody=body(),
        MessageGroupId="g",
        MessageDeduplicationId="d",
    )
    with pytest.raises(ConfirmationRequired) as refused:
        queues.purge("broadcast", "dlq", PurgeRequest(confirm="notifications"))
    assert refused.value.status_code == 422 and refused.value.field == "confirm"
    result = queues.purge("broadcast", "dlq", PurgeRequest(confirm="broadcast"))
    assert result.deleted == 1 and result.done is True and result.target == "dlq"


def test_secrets_are_read_from_ssm_one_by_one_on_first_use(aws, monkeypatch):
    from aws_lambda_powertools.utilities import parameters

    from jastipin.settings import get_settings
    from tests.conftest import settings_env

    env = settings_env(aws, SECRETS_SSM_PREFIX="/jastipin/test", API_TOKEN="from-env")
    for name in ("ADMIN_TOKEN", "WA_ACCESS_TOKEN", "WA_APP_SECRET", "WA_VERIFY_TOKEN"):
        env.pop(name)
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parameters.clear_caches()
    get_settings.cache_clear()
    try:
        settings = get_settings()  # no parameter exists yet: reading the settings asks SSM for nothing
        ssm = boto3.client("ssm")
        for name in ("admin_token", "api_token"):
            ssm.put_parameter(Name=f"/jastipin/test/{name}", Value=f"ssm-{name}", Type="SecureString")
        assert settings.secret("admin_token") == "ssm-admin_token"
        assert settings.secret("api_token") == "from-env"  # an env var wins
        with pytest.raises(RuntimeError, match="/jastipin/test/wa_access_token"):
            settings.secret("wa_access_token")
        # Cached for SECRET_MAX_AGE_SECONDS: a rotated value is seen once the cache expires.
        ssm.put_parameter(
            Name="/jastipin/test/admin_token", Value="rotated", Type="SecureString", Overwrite=True
        )
        assert settings.secret("admin_token") == "ssm-admin_token"
        parameters.clear_caches()
        assert settings.secret("admin_token") == "rotated"
        with pytest.raises(ValueError, match="unknown secret"):
            settings.secret("trips_table")
    finally:
        parameters.clear_caches()
        get_settings.cache_clear()

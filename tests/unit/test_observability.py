"""Observability: PII scrubbing for Sentry, Sentry reporting to a local fake server (only when a DSN is
set), the per-queue / per-message-type metrics breakdown and send latency, and logs without phones or text."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jastipin.operations import observability
from jastipin.outbound.jobs import (
    AudienceFilter,
    BroadcastJob,
    Job,
    JobKind,
    ProductUpdateJob,
    ProofJob,
    Recipient,
    TemplateRef,
)
from tests.conftest import ROOT

PHONE = "+6281311112222"
TEXT = "Halo Ani, ini pesan rahasia"


# ---------------------------------------------------------------- scrubbing


@pytest.mark.parametrize(
    "text",
    [
        "send to +6281311112222 failed",
        "send to 6281311112222 failed",
        "nomor 0812-3456-7890 salah",
        "nomor +62 812 3456 7890 salah",
        "wa_id 6285712345678",
    ],
)
def test_phone_numbers_are_redacted(text):
    scrubbed = observability.scrub_text(text)
    assert "[redacted]" in scrubbed
    assert not any(run in scrubbed for run in ("81311112222", "3456", "85712345678"))


def test_dates_codes_and_ids_stay_readable():
    text = "on 2026-06-01 code 131026 job_1a2b trip jpn25 http 429"
    assert observability.scrub_text(text) == text


def test_pydantic_input_values_and_personal_json_fields_are_redacted():
    error = (
        "1 validation error for Job\nparticipants.0.id\n  Field required [type=missing, "
        "input_value={'phone': '+6281311112222', 'name': 'Ani'}, input_type=dict]"
    )
    scrubbed = observability.scrub_text(error)
    assert "Ani" not in scrubbed and "6281311112222" not in scrubbed
    assert "participants.0.id" in scrubbed and "Field required" in scrubbed
    assert observability.scrub_text('{"message": "Halo Ani", "job": "j1"}') == (
        '{"message": "[redacted]", "job": "j1"}'
    )


def test_scrub_event_keeps_the_error_and_drops_personal_data():
    event = {
        "exception": {
            "values": [
                {
                    "type": "WhatsAppError",
                    "value": f"recipient {PHONE} unknown",
                    "stacktrace": {"frames": [{"function": "send", "lineno": 3, "vars": {"to": PHONE}}]},
                }
            ]
        },
        "request": {
            "url": "https://api/x",
            "data": TEXT,
            "query_string": "hub.verify_token=secret",
            "headers": {"Authorization": "Bearer t", "Content-Type": "application/json"},
        },
        "user": {"ip_address": "1.2.3.4"},
        "extra": {"phone": PHONE, "job_id": "job_1", "nested": {"text": TEXT, "note": f"to {PHONE}"}},
        "breadcrumbs": {"values": [{"message": f"sending to {PHONE}", "data": {"body": TEXT}}]},
        "logentry": {"message": "failed for %s", "params": [PHONE]},
    }
    scrubbed = observability.scrub_event(event)
    dumped = json.dumps(scrubbed)
    assert "6281311112222" not in dumped and "rahasia" not in dumped and "secret" not in dumped
    assert "Bearer" not in dumped and "1.2.3.4" not in dumped
    exception = scrubbed["exception"]["values"][0]
    assert exception["type"] == "WhatsAppError" and exception["value"] == "recipient [redacted] unknown"
    assert exception["stacktrace"]["frames"] == [{"function": "send", "lineno": 3}]
    assert scrubbed["request"] == {"url": "https://api/x", "headers": {"Content-Type": "application/json"}}
    assert scrubbed["extra"]["job_id"] == "job_1"


# ---------------------------------------------------------------- Sentry, end to end against a local fake


class FakeSentry:
    """A Sentry ingest endpoint on 127.0.0.1 that keeps every envelope (decompressed)."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                fake.envelopes.append(raw.decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def events(self) -> list[dict]:
        found = []
        for envelope in self.envelopes:
            lines = envelope.splitlines()
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    fake = FakeSentry()
    yield fake
    fake.server.shutdown()


REPORTING_SCRIPT = """
import logging, sys
from jastipin.operations import observability
from jastipin.outbound.jobs import parse_job

assert observability.init_sentry(sys.argv[1]) and observability.sentry_enabled()
logging.getLogger("jastipin").warning("about to send to +6281311112222")  # a breadcrumb

@observability.report_errors
def handler(event, context):
    to = "+6281311112222"  # a local variable Sentry must not collect
    parse_job('{"jobId": "j1", "kind": "product_update", "tripId": "jpn25", '
                  '"message": "Halo Ani, ini pesan rahasia", '
                  '"participants": [{"phone": "+6281311112222", "name": "Ani"}]}')

try:
    handler({"body": "+6281311112222"}, None)
except Exception:
    pass
observability.flush_sentry(10)
"""


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'layers' / 'common'}{os.pathsep}{ROOT}",
        "SENTRY_DSN": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, timeout=60
    )


def test_an_error_reaches_sentry_without_phone_numbers_or_text(fake_sentry):
    result = run_python(REPORTING_SCRIPT, fake_sentry.dsn)
    assert result.returncode == 0, result.stderr
    events = fake_sentry.events()
    errors = [e for e in events if e.get("exception")]
    assert errors, fake_sentry.envelopes
    exception = errors[0]["exception"]["values"][-1]
    assert exception["type"] == "ValidationError" and "participants.0.id" in exception["value"]
    assert errors[0]["breadcrumbs"]["values"][-1]["message"] == "about to send to [redacted]"
    everything = "\n".join(fake_sentry.envelopes)
    for secret in ("6281311112222", "81311112222", "rahasia", "Ani"):
        assert secret not in everything
    assert not any("vars" in f for f in exception["stacktrace"]["frames"])


def test_sentry_stays_off_and_unimported_without_a_dsn():
    code = (
        "import sys\n"
        "from jastipin.operations import observability\n"
        "assert observability.init_sentry('') is False and not observability.sentry_enabled()\n"
        "observability.capture_exception(ValueError('x'))\n"
        "assert 'sentry_sdk' not in sys.modules\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- metrics


def emf_blobs(output: str) -> list[dict]:
    blobs = []
    for line in output.splitlines():
        if line.startswith("{") and "_aws" in line:
            blobs.append(json.loads(line))
    return blobs


def job(kind: JobKind = JobKind.PRODUCT_UPDATE, template: str | None = "product_update") -> Job:
    if kind is JobKind.BROADCAST:
        since = datetime(2026, 5, 25, tzinfo=UTC)
        return BroadcastJob(
            job_id="job_1",
            trip_id="jpn25",
            template=template,
            template_ref=TemplateRef(name="trip_reminder"),
            audience=AudienceFilter(active_since=since),
        )
    if kind is JobKind.PROOF:
        return ProofJob(
            job_id="job_1",
            trip_id="jpn25",
            template=template,
            participants=[],
            media_id="m",
            caption="x",
            template_ref=TemplateRef(name="proof_received"),
        )
    return ProductUpdateJob(job_id="job_1", trip_id="jpn25", template=template, message="x")


def test_breakdown_publishes_per_queue_and_message_type(capsys):
    breakdown = observability.MetricsBreakdown()
    breakdown.count(job(), "NotificationSent", 3)
    breakdown.count(job(), "NotificationSent", 2)
    breakdown.count(job(JobKind.BROADCAST, "trip_reminder"), "NotificationFailed", 1)
    breakdown.count(job(), "NotificationSkipped", 0)  # nothing to say: nothing published
    breakdown.latencies(job(JobKind.PROOF, None), [12.5])  # a chunk's WhatsApp call latencies
    breakdown.flush()
    blobs = {(b["queue"], b["message_type"]): b for b in emf_blobs(capsys.readouterr().out)}
    assert set(blobs) == {
        ("notifications", "product_update"),
        ("broadcast", "trip_reminder"),
        ("proof_notify", "proof"),
    }
    sent = blobs[("notifications", "product_update")]
    assert sent["NotificationSent"] in (5.0, [5.0]) and "NotificationSkipped" not in sent
    (directive,) = sent["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Jastipin"
    assert sorted(directive["Dimensions"][0]) == ["message_type", "queue", "service"]
    latency = blobs[("proof_notify", "proof")]
    assert latency["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "WhatsAppSendLatency", "Unit": "Milliseconds"}
    ]
    assert breakdown.pending() == {}
    breakdown.flush()
    assert emf_blobs(capsys.readouterr().out) == []
    observability.Metrics().clear_metrics()  # the service-level latency this added


# ---------------------------------------------------------------- the sender: metrics and logs


@pytest.fixture
def seeded(settings):
    from jastipin.data.models import Contact, Participant, Trip, utcnow

    Trip("jpn25", title="Jastip Jepang", owner_phone="+6281234567890").save()
    recipients = []
    for n, phone in enumerate(["+6281311112222", "+6285712345678"]):
        Participant("jpn25", f"p_{n}", wa_key=phone, phone=phone, name=f"Ani {n}").save()
        Contact(
            phone, participant_id=f"p_{n}", phone=phone, last_inbound_at=utcnow() - timedelta(hours=1)
        ).save()
        recipients.append(Recipient(id=f"p_{n}", phone=phone, name=f"Ani {n}"))
    return recipients


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_sender_counts_per_queue_and_type_times_sends_and_logs_no_pii(
    settings, seeded, whatsapp_client, graph, no_sleep, capsys
):
    from aws_lambda_powertools import Metrics

    from jastipin.outbound.delivery import Deadline, Sender
    from tests.unit.limiters import TokenBucket

    observability.breakdown.clear()
    Metrics().clear_metrics()
    graph.fail("6285712345678", (400, 131026))  # an invalid number: failed, no retry
    capture = LogCapture()
    logging.getLogger("jastipin").addHandler(capture)
    try:
        sender = Sender(
            settings, None, whatsapp_client, TokenBucket(10_000), sleep=no_sleep, clock=no_sleep.clock
        )  # type: ignore[arg-type]
        chunk = ProductUpdateJob(
            job_id="job_9",
            kind=JobKind.PRODUCT_UPDATE,
            trip_id="jpn25",
            participants=seeded,
            template="product_update",
            message=TEXT,
        )
        sender.send_chunk(chunk, Deadline(None))
    finally:
        logging.getLogger("jastipin").removeHandler(capture)

    pending = observability.breakdown.pending()
    assert set(pending) == {("notifications", "product_update")}
    counts = pending[("notifications", "product_update")]
    assert counts["NotificationSent"] == 1 and counts["NotificationFailed"] == 1
    assert len(counts["WhatsAppSendLatency"]) == 2 and all(ms >= 0 for ms in counts["WhatsAppSendLatency"])
    service_level = Metrics().metric_set  # what the alarms read: dimension "service" only
    assert service_level["NotificationSent"]["Value"] == [1.0]
    assert len(service_level["WhatsAppSendLatency"]["Value"]) == 2
    assert Metrics().dimension_set.keys() <= {"service"}

    observability.breakdown.flush()
    Metrics().flush_metrics()
    output = capsys.readouterr().out + "\n".join(f"{r.getMessage()} {r.__dict__}" for r in capture.records)
    for secret in ("6281311112222", "6285712345678", "Ani", "rahasia"):
        assert secret not in output

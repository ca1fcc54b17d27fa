"""Observability shared by every handler: Sentry (only when ``SENTRY_DSN`` is set, with PII scrubbed before
anything leaves the process) and the per-queue / per-message-type metrics breakdown with send latency.

Metrics: the service-level metrics (``NotificationSent``, ``NotificationFailed``, ``NotificationSkipped``,
``NotificationRetried``, ``WhatsAppAuthError``, ...) keep exactly the ``service`` dimension: the alarms and
the dashboard depend on it. ``breakdown`` adds the same counts, plus ``WhatsAppSendLatency`` (ms), under the
dimensions ``service, queue, message_type``: a different dimension set is a separate CloudWatch metric, so
the alarms' series do not change. The breakdown goes out as its own EMF blobs (Powertools
``EphemeralMetrics``, which does not share the ``Metrics`` singleton's dimensions) when the sender flushes.

Sentry: ``init_sentry()`` once per container (each handler module calls it at import); errors are reported by
the AWS Lambda integration on AWS and by ``report_errors`` (handler decorator) / ``capture_exception`` (a
failed SQS record, which the batch processor swallows). No phone numbers, names or message text may reach
Sentry: local variables and request bodies are never collected, and ``scrub_event`` /
``scrub_breadcrumb`` redact phone-like numbers, pydantic input values and known personal fields."""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from jastipin.outbound.jobs import QUEUE_OF_KIND, Job

F = TypeVar("F", bound=Callable[..., Any])

REDACTED = "[redacted]"
# 9 to 15 digits, optionally with a leading + and single spaces/dashes/dots between digits: E.164 numbers,
# Indonesian 08… numbers, WhatsApp ids. (8-digit dates such as 2026-05-01 stay readable.)
PHONE_LIKE = re.compile(r"(?<![\w.])\+?\d(?:[ .-]?\d){8,14}(?![\w])")
# pydantic's "input_value='…'" in validation errors can carry a whole queue body (phones, message text).
PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=|\]$|$)", re.DOTALL)
# JSON-ish "field": "value" pairs of personal fields inside exception or log text.
PERSONAL_JSON_FIELD = re.compile(
    r"(?P<key>[\"'](?:phone|owner_phone|name|message|text|body|caption|to|from|wa_id|user_id)[\"']\s*:\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')",
    re.IGNORECASE,
)
PERSONAL_KEYS = frozenset(
    {
        "phone",
        "owner_phone",
        "name",
        "message",
        "text",
        "body",
        "caption",
        "to",
        "from",
        "wa_id",
        "wa_key",
        "user_id",
        "participants",
        "contacts",
        "recipient",
        "authorization",
        "x-hub-signature-256",
        "cookie",
    }
)
SAFE_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-amzn-trace-id", "host"})

_sentry_lock = threading.Lock()
_sentry_on = False


# ---------------------------------------------------------------------------------------------- scrubbing
def scrub_text(text: str) -> str:
    """Redact what may identify a person in free text (exception values, log messages)."""
    text = PYDANTIC_INPUT.sub(f"input_value={REDACTED}", text)
    text = PERSONAL_JSON_FIELD.sub(lambda m: f'{m.group("key")}"{REDACTED}"', text)
    return PHONE_LIKE.sub(REDACTED, text)


def scrub_value(value: Any, key: str | None = None) -> Any:
    """Recursively scrub a JSON-like value; values under personal keys are replaced whole."""
    if key is not None and key.lower() in PERSONAL_KEYS:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v) for v in value]
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry ``before_send``: keep the stack and the error's type; drop or redact anything personal."""
    for exception in (event.get("exception") or {}).get("values") or []:
        if isinstance(exception.get("value"), str):
            exception["value"] = scrub_text(exception["value"])
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    if isinstance(event.get("message"), str):
        event["message"] = scrub_text(event["message"])
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for field in ("message", "formatted"):
            if isinstance(logentry.get(field), str):
                logentry[field] = scrub_text(logentry[field])
        if logentry.get("params"):
            logentry["params"] = scrub_value(logentry["params"])
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("data", "query_string", "cookies", "env"):
            request.pop(field, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if k.lower() in SAFE_HEADERS}
    event.pop("user", None)
    for field in ("extra", "tags"):
        if event.get(field):
            event[field] = scrub_value(event[field])
    breadcrumbs = event.get("breadcrumbs")
    if isinstance(breadcrumbs, dict) and breadcrumbs.get("values"):
        breadcrumbs["values"] = [scrub_breadcrumb(b) for b in breadcrumbs["values"]]
    return event


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    if isinstance(crumb.get("message"), str):
        crumb["message"] = scrub_text(crumb["message"])
    if crumb.get("data"):
        crumb["data"] = scrub_value(crumb["data"])
    return crumb


# ---------------------------------------------------------------------------------------------- Sentry
def init_sentry(dsn: str | None = None) -> bool:
    """Initialise Sentry once per container when a DSN is configured; returns whether Sentry is on.

    ``dsn`` defaults to the ``SENTRY_DSN`` env var, read directly (each handler module calls this at import,
    which must need no other setting and no network); sentry-sdk is imported only when a DSN is set."""
    global _sentry_on
    if dsn is None:
        dsn = os.environ.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    with _sentry_lock:
        if _sentry_on:
            return True
        import sentry_sdk
        from sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration

        sentry_sdk.init(
            dsn=dsn,
            integrations=[AwsLambdaIntegration(timeout_warning=True)],
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            before_send=scrub_event,  # type: ignore[arg-type]  # plain dicts in, as sentry_sdk passes them
            before_breadcrumb=scrub_breadcrumb,
            traces_sample_rate=0,  # tracing is X-Ray's job
        )
        _sentry_on = True
    return True


def sentry_enabled() -> bool:
    return _sentry_on


def capture_exception(exc: BaseException) -> None:
    """Report a handled error (e.g. a failed SQS record going back to its queue); no-op without Sentry."""
    if _sentry_on:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)


def flush_sentry(timeout: float = 2.0) -> None:
    if _sentry_on:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)


def report_errors(handler: F) -> F:
    """Handler decorator: report an escaping error to Sentry (deduplicated with the Lambda integration's own
    report), flush, re-raise; publish the metrics breakdown whatever happens."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        except Exception as exc:
            capture_exception(exc)
            flush_sentry()
            raise
        finally:
            breakdown.flush()

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- metrics
class MetricsBreakdown:
    """Counts and send latencies per (queue, message type), published as EMF blobs with those dimensions.

    Thread-safe. The sender hands a chunk's send latencies over when the chunk ends; they also go to the
    service-level ``Metrics`` (dimension ``service`` only), flushed with the handler's other metrics."""

    LATENCY = "WhatsAppSendLatency"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], dict[str, float]] = {}
        self._latencies: dict[tuple[str, str], list[float]] = {}
        self._service_metrics = Metrics()

    @staticmethod
    def dimensions(job: Job) -> tuple[str, str]:
        """(queue, message_type) of a job; message_type is what the notifications log records."""
        return QUEUE_OF_KIND[job.kind].value, job.template or job.kind.value

    def count(self, job: Job, name: str, value: float = 1) -> None:
        if not value:
            return
        key = self.dimensions(job)
        with self._lock:
            counts = self._counts.setdefault(key, {})
            counts[name] = counts.get(name, 0) + value

    def latencies(self, job: Job, milliseconds: list[float]) -> None:
        """A chunk's WhatsApp call latencies, handed over at once when the chunk ends (the sender's hot path
        adds no metric per send)."""
        if not milliseconds:
            return
        with self._lock:
            self._latencies.setdefault(self.dimensions(job), []).extend(milliseconds)
            for value in milliseconds:
                self._service_metrics.add_metric(name=self.LATENCY, unit=MetricUnit.Milliseconds, value=value)

    def pending(self) -> dict[tuple[str, str], dict[str, Any]]:
        """What the next flush publishes, by (queue, message_type) (for tests and debugging)."""
        with self._lock:
            found: dict[tuple[str, str], dict[str, Any]] = {k: dict(v) for k, v in self._counts.items()}
            for key, values in self._latencies.items():
                found.setdefault(key, {})[self.LATENCY] = list(values)
            return found

    def flush(self) -> None:
        """Print one EMF blob per (queue, message_type) and forget them."""
        with self._lock:
            counts, self._counts = self._counts, {}
            latencies, self._latencies = self._latencies, {}
        for queue, message_type in sorted(set(counts) | set(latencies)):
            metrics = EphemeralMetrics()
            metrics.add_dimension(name="queue", value=queue)
            metrics.add_dimension(name="message_type", value=message_type)
            for name, value in counts.get((queue, message_type), {}).items():
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
            for milliseconds in latencies.get((queue, message_type), []):
                # add_metric prints a blob by itself at 100 values (EMF's limit per metric)
                metrics.add_metric(name=self.LATENCY, unit=MetricUnit.Milliseconds, value=milliseconds)
            if metrics.metric_set:
                metrics.flush_metrics()

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._latencies.clear()


breakdown = MetricsBreakdown()

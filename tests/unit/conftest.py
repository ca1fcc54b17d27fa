"""Unit-test fixtures: moto's in-process ``mock_aws`` with the template's tables and queues, and a WhatsApp
API faked with ``httpx.MockTransport``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from moto import mock_aws

from localrun.stack import LocalStack
from tests.conftest import REGION, ROOT, settings_env


@pytest.fixture
def aws() -> Iterator[LocalStack]:
    with mock_aws():
        stack = LocalStack(ROOT / "template.yaml", endpoint_url=None, region=REGION).create()  # type: ignore[arg-type]
        yield stack


@pytest.fixture
def settings(aws: LocalStack, monkeypatch: pytest.MonkeyPatch):
    from jastipin.data.models import bind_tables
    from jastipin.settings import Settings

    for name, value in settings_env(aws, WA_API_BASE_URL="https://graph.test").items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # type: ignore[call-arg]
    bind_tables(settings)
    return settings


@dataclass
class FakeGraph:
    """Answers like the Cloud API; `script` maps a recipient to a list of responses (one per attempt)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    counter: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "headers": dict(request.headers), "json": body})
        to = body.get("to") or body.get("recipient")
        planned = self.script.get(to)
        if planned:
            status, payload = planned.pop(0)
            return httpx.Response(status, json=payload)
        self.counter += 1
        return httpx.Response(
            200,
            json={
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.test{self.counter}"}],
            },
        )

    def fail(self, to: str, *responses: tuple[int, int]) -> None:
        """Script failures for a recipient: (http_status, graph_code) per attempt."""
        self.script[to] = [
            (status, {"error": {"message": "scripted", "code": code}}) for status, code in responses
        ]

    def sent_to(self) -> list[str]:
        return [r["json"].get("to") or r["json"].get("recipient") for r in self.requests]


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


def graph_client(handler: Callable[[httpx.Request], httpx.Response]):
    """A WhatsApp client whose requests ``handler`` answers (phone number id 123, token "tok")."""
    from jastipin.outbound.whatsapp import WhatsAppClient

    return WhatsAppClient(
        base_url="https://graph.test",
        version="v23.0",
        phone_number_id="123",
        access_token="tok",
        transport=httpx.MockTransport(handler),
    )


@pytest.fixture
def whatsapp_client(graph: FakeGraph):
    client = graph_client(graph.handler)
    yield client
    client.close()


class RecordingQueues:
    """The job queues, recording what is sent (job, dedup suffix, delay) instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, str, int]] = []

    def send(self, job: Any, *, dedup_suffix: str = "", delay_seconds: int = 0) -> None:
        self.sent.append((job, dedup_suffix, delay_seconds))

    def send_many(self, jobs, *, dedup_suffixes=None, delay_seconds: int = 0) -> int:
        for job, suffix in zip(jobs, dedup_suffixes or [""] * len(jobs), strict=False):
            self.sent.append((job, suffix, delay_seconds))
        return 1


@pytest.fixture
def sender(settings, whatsapp_client, no_sleep):
    """A Sender on the scripted WhatsApp client, recording queues, a local token bucket and a test clock that
    moves only by the sleeps it is asked for."""
    from jastipin.outbound.delivery import Sender
    from tests.unit.limiters import TokenBucket

    return Sender(
        settings,
        RecordingQueues(),
        whatsapp_client,
        TokenBucket(10_000),
        sleep=no_sleep,
        clock=no_sleep.clock,
    )


@pytest.fixture
def no_sleep() -> Callable[[float], None]:
    """A sleep that records what it was asked to wait and moves ``sleep.clock`` (a monotonic clock that
    stands still otherwise) on by as much, without waiting."""
    waits: list[float] = []
    now = [1000.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    sleep.waits = waits  # type: ignore[attr-defined]
    sleep.clock = lambda: now[0]  # type: ignore[attr-defined]
    return sleep


os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Jastipin")

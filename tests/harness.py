"""What the tests share to drive the functions as Lambda drives them: a handler module loaded from
``functions/<name>/app.py``, a Lambda context with a deadline, SQS events built from received messages, and
``eventually`` (poll a condition until it holds) instead of fixed sleeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, TypeVar

from localrun import project
from localrun.poller import sqs_record
from tests.conftest import REGION

T = TypeVar("T")


def load_function(name: str, alias: str | None = None) -> ModuleType:
    """``functions/<name>/app.py`` imported as Lambda does (``localrun.project.load_function``)."""
    return project.load_function(name, alias)


class FakeContext:
    """A Lambda context: a fresh request id, and a deadline ``seconds`` from its creation."""

    memory_limit_in_mb = 256
    function_version = "$LATEST"

    def __init__(self, seconds: float = 30, function_name: str = "test") -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.time() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.time()) * 1000)


def sqs_event(messages: Iterable[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Messages received from a queue (``ReceiveMessage``'s answer) as Lambda's event source mapping hands
    them to the function."""
    return {
        "Records": [
            sqs_record(
                {**m, "Attributes": m.get("Attributes") or {"ApproximateReceiveCount": "1"}},
                queue_arn,
                REGION,
            )
            for m in messages
        ]
    }


def eventually(
    condition: Callable[[], T],
    timeout: float = 5.0,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail after ``timeout`` seconds
    naming what was awaited (``what``, or what it returns then: the state the wait ended in)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {described}")
        time.sleep(interval)

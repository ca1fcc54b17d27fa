"""The local runtime's environments and pollers: provisioned-like prewarming, the queue consumers' lower CPU
priority, and a poller that hands on what it received when a later receive of the same batch fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from localrun.lambdas import FunctionPool
from localrun.poller import EventSourceMapping
from localrun.stack import FunctionSpec, Queue

HANDLER = """
import os

def handler(event, context):
    return {"pid": os.getpid(), "nice": os.nice(0)}
"""


def _spec(tmp_path: Path) -> FunctionSpec:
    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    return FunctionSpec(
        logical_id="NiceFunction",
        code_uri=tmp_path,
        handler="app.handler",
        timeout=10,
        memory_mb=128,
        reserved_concurrency=None,
        environment={},
    )


def test_prewarm_starts_every_environment_before_the_first_invocation(tmp_path: Path) -> None:
    pool = FunctionPool(_spec(tmp_path), {}, [], max_concurrency=3)
    try:
        pool.prewarm()
        assert pool.cold_starts == 3 and len(pool.pids()) == 3
        served = {pool.invoke({})["pid"] for _ in range(6)}
        assert served <= set(pool.pids())
        assert pool.cold_starts == 3  # no invocation started an environment
        pool.prewarm()  # all there already: nothing more starts
        assert pool.cold_starts == 3
    finally:
        pool.close()


@pytest.mark.parametrize("nice", [0, 10])
def test_environments_run_at_the_pools_lower_priority(tmp_path: Path, nice: int) -> None:
    pool = FunctionPool(_spec(tmp_path), {}, [], max_concurrency=1, nice=nice)
    try:
        assert pool.invoke({})["nice"] == min(19, os.nice(0) + nice)
    finally:
        pool.close()


class _FlakySqs:
    """Hands out two messages, then fails the batch's next receive."""

    def __init__(self) -> None:
        self.calls = 0

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            messages = [{"MessageId": str(i), "ReceiptHandle": f"r{i}", "Body": "{}"} for i in (1, 2)]
            return {"Messages": messages}
        raise ConnectionError("the queue went away")


def test_a_failed_receive_hands_on_the_messages_the_batch_already_holds(tmp_path: Path, capfd) -> None:
    mapping = EventSourceMapping(
        queue=Queue("SomeQueue", "some", "http://127.0.0.1:1/q", "arn:aws:sqs:local:1:some", 30),
        pool=FunctionPool(_spec(tmp_path), {}, [], max_concurrency=1),
        endpoint_url="http://127.0.0.1:1",
        region="ap-southeast-3",
        batch_size=10,
        batching_window=5.0,  # would keep receiving to fill the batch
        max_concurrency=1,
        report_failures=True,
    )
    mapping._sqs = _FlakySqs()  # type: ignore[assignment]
    messages = mapping._receive_batch()
    assert [m["MessageId"] for m in messages] == ["1", "2"]
    complaint = "SomeQueue poller: a receive failed (ConnectionError: the queue went away)"
    assert complaint in capfd.readouterr().err

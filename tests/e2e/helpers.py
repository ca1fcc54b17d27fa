"""Helpers for the end-to-end tests: waiting on and asserting outcomes, and ``python -m localrun`` as a
separate process. Driving a LocalRuntime (trips, participants, product updates, the log) is
``localrun.client``'s, re-exported here."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from localrun.client import (
    API_AUTH,
    create_trip,
    local_config,
    log_entries,
    phone,
    rebuild_audience,
    seed_participants,
    three_queue_backlog,
    three_queue_config,
    upload_product,
    wait_for_sandbox,
)
from localrun.runtime import LocalRuntime, free_port
from tests.harness import eventually

__all__ = [
    "API_AUTH",
    "create_trip",
    "dlq_messages",
    "local_config",
    "log_entries",
    "phone",
    "rebuild_audience",
    "runtime_process",
    "seed_participants",
    "three_queue_backlog",
    "three_queue_config",
    "upload_product",
    "wait_for_log",
    "wait_for_sandbox",
]


def wait_for_log(
    runtime: LocalRuntime, job_id: str, count: int, *, final: bool = True, timeout: float = 60
) -> list[dict]:
    finals = {"sent", "delivered", "read", "failed", "skipped"}

    def enough() -> list[dict]:
        items = log_entries(runtime, job_id)
        done = [i for i in items if not final or i["status"]["S"] in finals]
        return items if len(done) >= count else []

    return eventually(
        enough,
        timeout,
        what=lambda: f"{job_id}: {count} outcomes, have {log_entries(runtime, job_id)}",
        interval=0.2,
    )


def dlq_messages(runtime: LocalRuntime, queue: str) -> list[dict]:
    sqs = runtime.client("sqs")
    attrs = sqs.get_queue_attributes(
        QueueUrl=runtime.queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
    )
    return [{}] * int(attrs["Attributes"]["ApproximateNumberOfMessages"])


@contextlib.contextmanager
def runtime_process(*extra_args: str) -> Iterator[tuple[dict[str, str], str]]:
    """Start ``python -m localrun`` as a newcomer would (a separate process, free ports); yields the base
    URLs ({"api", "sandbox", "moto", "dynamodb"}) and the banner it printed; stops it with Ctrl-C, checks a
    clean exit."""
    root = Path(__file__).resolve().parents[2]
    ports = {"api": free_port(), "sandbox": free_port(), "moto": free_port(), "dynamodb": free_port()}
    env = {**os.environ, "PYTHONPATH": f"{root / 'layers' / 'common'}:{root}"}
    args = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    process = subprocess.Popen(
        [sys.executable, "-m", "localrun", *args, *extra_args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(banner)
    # Keep reading the runtime's output so that its pipe never fills up and blocks it.
    threading.Thread(target=lambda: sum(1 for _ in process.stdout), daemon=True).start()  # type: ignore[union-attr]
    try:
        assert "running locally" in text, text
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        if "DynamoDB" not in text:  # no local DynamoDB of its own (no Node here): moto serves DynamoDB too
            urls["dynamodb"] = urls["moto"]
        yield urls, text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()


def wait_messages(runtime: LocalRuntime, count: int, timeout: float = 60) -> list[dict]:
    """The sandbox's messages, once it has at least ``count``."""
    sandbox = runtime.sandbox
    assert sandbox is not None
    return eventually(
        lambda: found if len(found := sandbox.messages()) >= count else [],
        timeout,
        what=lambda: f"{count} messages, have {len(sandbox.messages())}",
        interval=0.1,
    )

"""The local HTTP API answers a function's failure as API Gateway would, and says what happened: a function
that outlives its timeout is killed and the caller gets 504; one that raises gets 500. Each leaves a line
naming the route and the function on stderr (the runtime's log), not a bare status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localrun.api import LocalHttpApi, Route
from localrun.lambdas import FunctionPool
from localrun.runtime import free_port
from localrun.stack import FunctionSpec

HANDLER = """
import time

def handler(event, context):
    path = event["rawPath"]
    if path == "/slow":
        time.sleep(30)
    if path == "/boom":
        raise ValueError("boom")
    return {"statusCode": 200, "body": "ok"}
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    spec = FunctionSpec(
        logical_id="SlowFunction",
        code_uri=tmp_path,
        handler="app.handler",
        timeout=1,
        memory_mb=128,
        reserved_concurrency=None,
        environment={},
    )
    pool = FunctionPool(spec, {}, [], max_concurrency=2)
    server = LocalHttpApi(
        [Route("GET", path, pool) for path in ("/slow", "/boom", "/fine")], port=free_port()
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        pool.close()


def test_a_function_past_its_timeout_is_a_504_with_a_log_line(api: str, capfd: pytest.CaptureFixture[str]):
    response = httpx.get(f"{api}/slow", timeout=20)
    assert response.status_code == 504 and response.json() == {"message": "Gateway Timeout"}
    assert "GET /slow: SlowFunction: task timed out after 1s" in capfd.readouterr().err
    assert httpx.get(f"{api}/fine", timeout=20).text == "ok"  # a fresh environment serves the next call


def test_a_function_that_raises_is_a_500_with_a_log_line(api: str, capfd: pytest.CaptureFixture[str]):
    response = httpx.get(f"{api}/boom", timeout=20)
    assert response.status_code == 500 and response.json() == {"message": "Internal Server Error"}
    assert "GET /boom: SlowFunction: ValueError: boom" in capfd.readouterr().err

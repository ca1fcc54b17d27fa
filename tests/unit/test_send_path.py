"""The sender's asyncio send path over real HTTP on 127.0.0.1 (aiohttp, as in production): how many sends
are in flight at once, what a request carries, and how a timeout or a dropped connection is classified. The
tables are moto's (``mock_aws``), which does not touch aiohttp's traffic."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from jastipin.outbound.delivery import Deadline, Sender
from jastipin.outbound.whatsapp import Address, Unanswered, WhatsAppClient, text_message
from tests.unit.conftest import RecordingQueues, graph_client
from tests.unit.test_delivery import log_of, product_job, seed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Graph:
    """A Graph API on 127.0.0.1 (its own thread and event loop) answering each POST after ``delay``
    seconds, counting the requests in flight at once."""

    def __init__(self, delay: float = 0.0, handler: Handler | None = None, path: str = "") -> None:
        self.delay = delay
        self.path = path or "/{version}/{phone}/messages"
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._handler = handler or self._answer
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.bodies.append(await request.json())
            self.headers.append(dict(request.headers))
            await asyncio.sleep(self.delay)
            return web.json_response({"messages": [{"id": f"wamid.{len(self.bodies)}"}]})
        finally:
            self.in_flight -= 1

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post(self.path, self._handler)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Graph:  # noqa: PYI034
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def client(url: str, timeout: float = 10.0) -> WhatsAppClient:
    return WhatsAppClient(
        base_url=url, version="v23.0", phone_number_id="123", access_token="tok", timeout=timeout
    )


@pytest.fixture
def slow_graph() -> Iterator[Graph]:
    with Graph(delay=0.2) as graph:
        yield graph


def test_a_chunk_keeps_send_concurrency_requests_in_flight(settings, slow_graph):
    """With every answer taking 200 ms, a chunk of 96 keeps all 32 of its workers' requests in flight at once:
    a slow Graph does not hold the sender to one request per thread. Each recipient is sent once and logged
    once."""
    recipients = seed(96)
    sender = Sender(
        settings.model_copy(update={"send_concurrency": 32}),
        RecordingQueues(),
        client(slow_graph.url),
        _unlimited(),
    )
    try:
        result = sender.send_chunk(product_job(recipients), Deadline(None))
    finally:
        sender.close()
    assert slow_graph.most_in_flight == 32
    assert sorted(b["to"] for b in slow_graph.bodies) == sorted(r.phone.lstrip("+") for r in recipients)
    assert result.count("sent") == 96
    assert {e.status for e in log_of("job_1").values()} == {"sent"} and len(log_of("job_1")) == 96


def test_the_async_path_posts_what_the_sync_path_posts(slow_graph):
    """The same message, the same callback data, the bearer token and JSON, whichever path sends it."""
    sent: list[bytes] = []

    def handler(request):
        import httpx

        sent.append(request.content)
        return httpx.Response(200, json={"messages": [{"id": "wamid.sync"}]})

    to, message = Address(phone="+628120000001"), text_message("Ada produk baru")
    assert graph_client(handler).send(to, message, "job|p1") == "wamid.sync"
    aio = client(slow_graph.url)

    async def send() -> str:
        try:
            return await aio.asend(to, message, "job|p1")
        finally:
            await aio.aclose()

    assert asyncio.run(send()) == "wamid.1"
    assert slow_graph.bodies == [json.loads(sent[0])]
    assert slow_graph.headers[0]["Authorization"] == "Bearer tok"
    assert slow_graph.headers[0]["Content-Type"] == "application/json"


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def _drop(request: web.Request) -> web.Response:
    await request.read()
    assert request.transport is not None
    request.transport.close()  # the connection ends without an answer
    return web.json_response({})


@pytest.mark.parametrize("handler", [_hang, _drop], ids=["timeout", "dropped connection"])
def test_no_answer_is_an_ambiguous_retryable_error(handler):
    """A send that got no answer may have reached Meta: ``Unanswered`` (retryable, ambiguous), never a
    permanent failure."""
    with Graph(handler=handler) as graph:
        aio = client(graph.url, timeout=0.5)

        async def send() -> None:
            try:
                await aio.asend(Address(phone="+628120000001"), text_message("Halo"))
            finally:
                await aio.aclose()

        with pytest.raises(Unanswered) as raised:
            asyncio.run(send())
    assert raised.value.retryable and raised.value.ambiguous


def _unlimited():
    from jastipin.outbound.rate_limit import NoRateLimit

    return NoRateLimit()


def test_a_throttled_or_failing_dynamodb_call_is_retried_then_answered():
    """The outcome writes' DynamoDB calls retry what botocore retries (throttling, 5xx), each request signed,
    and give up with botocore's ``ClientError`` after 4 attempts; a condition that fails is not retried."""
    from types import SimpleNamespace

    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError

    from jastipin.data.async_dynamodb import AsyncDynamoDB

    answers = [
        (400, {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow down"}),
        (500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError"}),
        (200, {"Attributes": {"status": {"S": "sent"}}}),
    ]
    seen: list[tuple[str, str]] = []

    async def dynamodb(request: web.Request) -> web.Response:
        seen.append((request.headers["X-Amz-Target"], request.headers["Authorization"][:16]))
        status, body = answers.pop(0)
        return web.json_response(body, status=status)

    with Graph(handler=dynamodb, path="/") as server:
        botocore_client = SimpleNamespace(
            meta=SimpleNamespace(endpoint_url=server.url, region_name="ap-southeast-3")
        )
        client = AsyncDynamoDB(botocore_client, Credentials("AKID", "secret"))

        async def calls() -> dict:
            try:
                found = await client.call("UpdateItem", {"TableName": "log"})
                answers.extend(
                    [(400, {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"})]
                )
                with pytest.raises(ClientError) as raised:
                    await client.call("UpdateItem", {"TableName": "log"})
                assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
                answers.extend([(503, {})] * 4)
                with pytest.raises(ClientError) as raised:
                    await client.call("UpdateItem", {"TableName": "log"})
                assert raised.value.response["Error"]["Code"] == "HTTP503"
                return found
            finally:
                await client.close()

        assert asyncio.run(calls()) == {"Attributes": {"status": {"S": "sent"}}}
    assert len(seen) == 3 + 1 + 4  # retried twice, then answered; the condition once; 503 four times
    assert all(target == "DynamoDB_20120810.UpdateItem" for target, _ in seen)
    assert all(auth == "AWS4-HMAC-SHA256" for _, auth in seen)

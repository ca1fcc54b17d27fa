"""Tests for localrun.sandbox: the local WhatsApp Cloud API sandbox, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from localrun.sandbox import WhatsAppSandbox, sign

TOKEN = "test-access-token"
PHONE_ID = "106540352242922"
SECRET = "test-app-secret"
TO = "6281234567890"


def text_body(to: str = TO, body: str = "Halo!", **extra: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}, **extra}


class Receiver:
    """A tiny webhook endpoint that records (headers, raw body) and answers a fixed status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.gate: threading.Event | None = None  # when set: hold each webhook call until the gate opens
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.gate is not None:
                    receiver.gate.wait(5)
                with receiver._cond:
                    receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 3.0) -> list[tuple[dict[str, str], bytes]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= n, timeout=timeout)
            return list(self.calls)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[WhatsAppSandbox]:
    # One server for the plain tests (starting one per test costs more than the tests); reset by `sandbox`.
    sb = WhatsAppSandbox(access_token=TOKEN, phone_number_id=PHONE_ID).start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(shared_sandbox: WhatsAppSandbox) -> Iterator[WhatsAppSandbox]:
    shared_sandbox.clear()
    yield shared_sandbox
    shared_sandbox.clear()


@pytest.fixture(scope="module")
def shared_client(shared_sandbox: WhatsAppSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=shared_sandbox.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5, trust_env=False
    ) as c:
        yield c


@pytest.fixture
def client(sandbox: WhatsAppSandbox, shared_client: httpx.Client) -> httpx.Client:
    return shared_client


def post_message(client: httpx.Client, body: Any, phone_id: str = PHONE_ID, **kwargs: Any) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return client.post(f"/v23.0/{phone_id}/messages", content=body, **kwargs)
    return client.post(f"/v23.0/{phone_id}/messages", json=body, **kwargs)


def assert_graph_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]
    return error


def verify(headers: dict[str, str], raw: bytes, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-hub-signature-256", ""), expected)


def change_value(raw: bytes) -> dict[str, Any]:
    payload = json.loads(raw)
    assert payload["object"] == "whatsapp_business_account"
    (entry,) = payload["entry"]
    assert isinstance(entry["id"], str) and entry["id"]
    (change,) = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {"display_phone_number": "15550000000", "phone_number_id": PHONE_ID}
    return value


# ---- sending --------------------------------------------------------------------------------------


def test_text_message_success_shape_and_record(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    body = text_body(to="+" + TO, recipient_type="individual")
    before = time.time()
    response = post_message(client, body)
    after = time.time()

    assert response.status_code == 200, response.text
    data = response.json()
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+" + TO, "wa_id": TO}]
    (message,) = data["messages"]
    assert message["id"].startswith("wamid.") and len(message["id"]) > 20

    (record,) = sandbox.messages()
    assert record["id"] == message["id"]
    assert record["to"] == TO
    assert record["type"] == "text"
    assert record["body"] == body
    assert before <= record["received_at"] <= after
    assert sandbox.messages(to=TO) == [record]
    assert sandbox.messages(to="+" + TO) == [record]
    assert sandbox.messages(to="6289999999999") == []
    assert sandbox.requests_count() == 1

    listed = client.get("/_sandbox/messages", params={"to": TO})
    assert listed.status_code == 200
    assert listed.json() == {"messages": [record]}
    assert client.get("/_sandbox/messages", params={"to": "6289999999999"}).json() == {"messages": []}
    assert client.get(f"/_sandbox/messages?to=+{TO}").json() == {"messages": [record]}  # unencoded +


def test_messages_get_unique_ids_in_arrival_order(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    ids = [post_message(client, text_body(body=f"pesan {i}")).json()["messages"][0]["id"] for i in range(5)]
    assert len(set(ids)) == 5
    assert [m["id"] for m in sandbox.messages()] == ids
    assert [m["body"]["text"]["body"] for m in sandbox.messages()] == [f"pesan {i}" for i in range(5)]


def test_concurrent_sends_are_all_recorded(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    def send(i: int) -> str:
        response = post_message(client, text_body(to=f"62812000000{i:02d}"))
        assert response.status_code == 200
        return response.json()["messages"][0]["id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(send, range(32)))
    assert len(set(ids)) == 32
    assert sorted(m["id"] for m in sandbox.messages()) == sorted(ids)
    assert sandbox.requests_count() == 32


def test_callback_data_is_echoed_in_statuses(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sent = post_message(client, text_body(biz_opaque_callback_data="job_1|p_1")).json()["messages"][0]["id"]
    plain = post_message(client, text_body()).json()["messages"][0]["id"]

    def status_of(wamid: str) -> dict[str, Any]:
        payload = sandbox._status_payload(wamid, "delivered", TO, None)
        return payload["entry"][0]["changes"][0]["value"]["statuses"][0]

    assert status_of(sent)["biz_opaque_callback_data"] == "job_1|p_1"
    assert "biz_opaque_callback_data" not in status_of(plain)
    too_long = post_message(client, text_body(biz_opaque_callback_data="x" * 513))
    assert_graph_error(too_long, 400, 100)


def test_stats_count_accepted_messages_and_all_requests(
    sandbox: WhatsAppSandbox, client: httpx.Client
) -> None:
    post_message(client, text_body())
    post_message(client, {"messaging_product": "whatsapp", "to": "6281234567890", "type": "text"})  # invalid
    assert client.get("/_sandbox/stats").json() == {"messages": 1, "requests": 2}


def test_messages_returns_copies(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    post_message(client, text_body())
    sandbox.messages()[0]["body"]["text"]["body"] = "changed"
    assert sandbox.messages()[0]["body"]["text"]["body"] == "Halo!"


def test_recipient_business_scoped_user_id(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    body = {"messaging_product": "whatsapp", "recipient": "ID.1234567890123", "text": {"body": "Hai"}}
    response = post_message(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["contacts"] == [{"input": "ID.1234567890123", "user_id": "ID.1234567890123"}]
    (record,) = sandbox.messages(to="ID.1234567890123")
    assert record["to"] == "ID.1234567890123"
    assert record["type"] == "text"  # type defaults to text


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"type": "text", "text": {"body": "x" * 4096, "preview_url": True}}, id="text-max-len"),
        pytest.param(
            {
                "type": "template",
                "template": {
                    "name": "order_ready",
                    "language": {"code": "id", "policy": "deterministic"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "JP-001"}]},
                        {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": []},
                    ],
                },
            },
            id="template",
        ),
        pytest.param(
            {"type": "template", "template": {"name": "hi", "language": {"code": "en_US"}}}, id="tpl-min"
        ),
        pytest.param(
            {"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "c" * 1024}},
            id="image-link",
        ),
        pytest.param({"type": "image", "image": {"id": "1234567890"}}, id="image-id"),
        pytest.param(
            {"type": "document", "document": {"link": "https://example.com/a.pdf", "filename": "nota.pdf"}},
            id="document",
        ),
        pytest.param(
            {
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "body": {"text": "Konfirmasi?"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Ya"}}]},
                },
            },
            id="interactive-button",
        ),
        pytest.param(
            {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}, id="reaction"
        ),
        pytest.param({"to": "12345678"}, id="to-8-digits"),
        pytest.param({"to": "+123456789012345"}, id="to-15-digits"),
        pytest.param({"context": {"message_id": "wamid.PREV"}}, id="reply-context"),
    ],
)
def test_valid_message_types_are_accepted(
    sandbox: WhatsAppSandbox, client: httpx.Client, extra: dict[str, Any]
) -> None:
    body = {"messaging_product": "whatsapp", "to": TO, "text": {"body": "Halo"}, **extra}
    if body.get("type", "text") != "text":
        del body["text"]
    response = post_message(client, body)
    assert response.status_code == 200, response.text
    (record,) = sandbox.messages()
    assert record["type"] == body.get("type", "text")
    assert record["body"] == body


def test_mark_as_read_is_answered_but_not_recorded(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN",
        "typing_indicator": {"type": "text"},
    }
    response = post_message(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1


# ---- auth, phone id, validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="not-bearer"),
        pytest.param({"Authorization": "Bearer"}, id="empty"),
    ],
)
def test_bearer_token_is_required(sandbox: WhatsAppSandbox, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=sandbox.url, timeout=5, trust_env=False) as anonymous:
        response = anonymous.post(f"/v23.0/{PHONE_ID}/messages", json=text_body(), headers=headers)
    error = assert_graph_error(response, 401, 190)
    assert error["type"] == "OAuthException"
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1


def test_any_graph_version_is_served(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    assert client.post(f"/v21.0/{PHONE_ID}/messages", json=text_body()).status_code == 200
    assert client.post(f"/latest/{PHONE_ID}/messages", json=text_body()).status_code == 404
    assert len(sandbox.messages()) == 1


def test_wrong_phone_number_id(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    response = post_message(client, text_body(), phone_id="999999999999999")
    error = assert_graph_error(response, 400, 100)
    assert "Unsupported post request" in error["message"]
    assert "999999999999999" in error["message"]
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _tpl(template: dict[str, Any]) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": TO, "type": "template", "template": template}


def _img(image: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": TO, "type": "image", "image": image}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"{not json", "body", id="not-json"),
        pytest.param([text_body()], "body", id="json-array"),
        pytest.param(_without(text_body(), "messaging_product"), "messaging_product", id="no-product"),
        pytest.param(text_body(messaging_product="sms"), "messaging_product", id="wrong-product"),
        pytest.param(_without(text_body(), "to"), "to", id="no-recipient"),
        pytest.param(text_body(to=6281234567890), "to", id="to-not-string"),
        pytest.param(text_body(to="62-812-3456-7890"), "to", id="to-not-digits"),
        pytest.param(text_body(to="1234567"), "to", id="to-7-digits"),
        pytest.param(text_body(to="1234567890123456"), "to", id="to-16-digits"),
        pytest.param(text_body(recipient_type="group"), "recipient_type", id="group"),
        pytest.param(text_body(type="location"), "type", id="unsupported-type"),
        pytest.param(_without(text_body(), "text"), "text", id="text-missing"),
        pytest.param(text_body(text="hi"), "text", id="text-not-object"),
        pytest.param(text_body(text={}), "text['body']", id="text-body-missing"),
        pytest.param(text_body(body=""), "text['body']", id="text-body-empty"),
        pytest.param(text_body(body="x" * 4097), "text['body']", id="text-body-too-long"),
        pytest.param(
            text_body(text={"body": "hi", "preview_url": "yes"}), "text['preview_url']", id="preview"
        ),
        pytest.param(text_body(text={"Body": "hi"}), "text['Body']", id="text-unknown-key"),
        pytest.param(_tpl({"language": {"code": "id"}}), "template['name']", id="tpl-no-name"),
        pytest.param(_tpl({"name": "x"}), "template['language']", id="tpl-no-language"),
        pytest.param(_tpl({"name": "x", "language": {}}), "template['language']['code']", id="tpl-no-code"),
        pytest.param(
            _tpl({"name": "x", "language": {"code": "id"}, "components": {}}),
            "template['components']",
            id="tpl-components-not-list",
        ),
        pytest.param(_img({"caption": "x"}), "image['link']", id="image-no-link-or-id"),
        pytest.param(
            _img({"link": "https://e.com/a.jpg", "id": "1"}), "image['link']", id="image-link-and-id"
        ),
        pytest.param(_img({"link": "ftp://e.com/a.jpg"}), "image['link']", id="image-not-http"),
        pytest.param(
            _img({"id": "1", "caption": "x" * 1025}), "image['caption']", id="image-caption-too-long"
        ),
        pytest.param(
            {"messaging_product": "whatsapp", "to": TO, "type": "reaction", "reaction": {"emoji": "x"}},
            "reaction['message_id']",
            id="reaction-no-message-id",
        ),
        pytest.param(
            {
                "messaging_product": "whatsapp",
                "to": TO,
                "type": "interactive",
                "interactive": {"type": "button", "body": {"text": "?"}, "action": {"buttons": []}},
            },
            "interactive['action']['buttons']",
            id="interactive-no-buttons",
        ),
    ],
)
def test_validation_errors(sandbox: WhatsAppSandbox, client: httpx.Client, body: Any, field: str) -> None:
    response = post_message(client, body)
    error = assert_graph_error(response, 400, 100)
    assert field in error["message"], error["message"]
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1


# ---- faults ---------------------------------------------------------------------------------------


def test_fault_status_code_and_times_exhaustion(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault(
        {"to": "+" + TO, "times": 2, "http_status": 429, "code": 130429, "message": "Rate limit hit"}
    )

    other = post_message(client, text_body(to="6289999999999"))
    assert other.status_code == 200  # other recipients are unaffected

    for _ in range(2):
        error = assert_graph_error(post_message(client, text_body()), 429, 130429)
        assert error["message"] == "Rate limit hit"
        assert error["type"] == "OAuthException"
        assert error["error_data"]["messaging_product"] == "whatsapp"
        assert error["error_data"]["details"]

    assert post_message(client, text_body()).status_code == 200
    assert sandbox.requests_count() == 4
    assert [m["to"] for m in sandbox.messages()] == ["6289999999999", TO]


def test_forever_fault_until_cleared(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault({"to": None, "times": None, "http_status": 500, "code": 131000})
    for to in (TO, "6289999999999", TO, TO):
        error = assert_graph_error(post_message(client, text_body(to=to)), 500, 131000)
        assert "131000" in error["message"]
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 4

    sandbox.clear()
    assert sandbox.requests_count() == 0
    assert post_message(client, text_body()).status_code == 200


def test_first_matching_fault_wins(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault({"to": "6289999999999", "times": None, "http_status": 400, "code": 131026})
    sandbox.add_fault({"to": None, "times": 1, "http_status": 503, "code": 131016})
    sandbox.add_fault({"to": TO, "times": 1, "http_status": 429, "code": 130429})
    assert_graph_error(post_message(client, text_body()), 503, 131016)
    assert_graph_error(post_message(client, text_body()), 429, 130429)
    assert post_message(client, text_body()).status_code == 200
    assert_graph_error(post_message(client, text_body(to="6289999999999")), 400, 131026)


def test_fault_latency_then_normal_answer(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault({"to": TO, "times": 1, "latency_ms": 300})
    start = time.monotonic()
    assert post_message(client, text_body()).status_code == 200
    slow = time.monotonic() - start
    start = time.monotonic()
    assert post_message(client, text_body()).status_code == 200
    fast = time.monotonic() - start
    assert slow >= 0.3
    assert fast < 0.2
    assert len(sandbox.messages()) == 2


def test_error_fault_with_latency(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault({"times": 1, "http_status": 503, "code": 131016, "latency_ms": 250})
    start = time.monotonic()
    assert_graph_error(post_message(client, text_body()), 503, 131016)
    assert time.monotonic() - start >= 0.25


def test_global_latency_applies_to_every_request() -> None:
    with (
        WhatsAppSandbox(access_token=TOKEN, phone_number_id=PHONE_ID, latency_ms=200) as sb,
        httpx.Client(base_url=sb.url, timeout=5, trust_env=False) as c,
    ):
        sb.add_fault({"times": 1, "http_status": 429, "code": 130429})
        for expected in (429, 200):
            start = time.monotonic()
            response = c.post(
                f"/v23.0/{PHONE_ID}/messages",
                json=text_body(),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == expected
            assert time.monotonic() - start >= 0.2


def test_timeout_fault_read_timeout(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    sandbox.add_fault({"to": TO, "times": 1, "timeout": True, "latency_ms": 2000})
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post_message(client, text_body(), timeout=0.2)
    assert time.monotonic() - start < 1.5
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1
    assert post_message(client, text_body()).status_code == 200  # times exhausted


def test_timeout_fault_closes_connection_without_answer(
    sandbox: WhatsAppSandbox, client: httpx.Client
) -> None:
    sandbox.add_fault({"to": None, "times": 1, "timeout": True, "latency_ms": 50})
    with pytest.raises(httpx.RemoteProtocolError):
        post_message(client, text_body(), timeout=2)
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 1


def test_malformed_faults_are_rejected(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    for bad in ({"tiems": 1}, {"times": 0}, {"http_status": 302}, {"timeout": "yes"}, {"latency_ms": -1}):
        with pytest.raises(ValueError):
            sandbox.add_fault(bad)
        assert client.post("/_sandbox/faults", json=bad).status_code == 400
    assert post_message(client, text_body()).status_code == 200


def test_faults_over_http(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    created = client.post(
        "/_sandbox/faults", json={"to": TO, "times": None, "http_status": 429, "code": 130429}
    )
    assert created.status_code == 201
    assert_graph_error(post_message(client, text_body()), 429, 130429)
    assert client.delete("/_sandbox/faults").status_code == 204
    assert post_message(client, text_body()).status_code == 200
    assert sandbox.requests_count() == 2  # DELETE /_sandbox/faults keeps messages and counters


def test_clear_over_http(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    post_message(client, text_body())
    sandbox.add_fault({"to": "6289999999999", "http_status": 500})
    assert client.delete("/_sandbox/messages").status_code == 204
    assert sandbox.messages() == []
    assert sandbox.requests_count() == 0
    assert post_message(client, text_body(to="6289999999999")).status_code == 200  # faults forgotten too


def test_health_and_unknown_path(sandbox: WhatsAppSandbox, client: httpx.Client) -> None:
    assert client.get("/_sandbox/health").json() == {"ok": True}
    assert client.get("/_sandbox/nope").status_code == 404


def test_stop_is_prompt_with_a_request_in_flight() -> None:
    sb = WhatsAppSandbox(access_token=TOKEN, phone_number_id=PHONE_ID).start()
    sb.add_fault({"timeout": True})  # default: hold the request for 10 s
    url = sb.url
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with httpx.Client(timeout=5, trust_env=False) as c:
                c.post(
                    f"{url}/v23.0/{PHONE_ID}/messages",
                    json=text_body(),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while sb.requests_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    sb.stop()
    assert time.monotonic() - start < 1.0
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert errors  # the held request was dropped, not answered
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sandbox/health", timeout=1, trust_env=False)
    sb.stop()  # idempotent


# ---- webhooks -------------------------------------------------------------------------------------


def test_sign_matches_known_hmac_vector() -> None:
    # RFC-style HMAC-SHA256 test vector (key "key", the quick brown fox).
    assert sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


@pytest.fixture
def hooked(receiver: Receiver) -> Iterator[WhatsAppSandbox]:
    sb = WhatsAppSandbox(
        access_token=TOKEN, phone_number_id=PHONE_ID, app_secret=SECRET, webhook_url=receiver.url
    ).start()
    yield sb
    sb.stop()


def test_inbound_text_is_signed_and_meta_shaped(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    status = hooked.send_inbound(from_phone="+" + TO, text="JOIN jpn25 ✈️", name="Ani")
    assert status == 200
    ((headers, raw),) = receiver.wait_for(1)
    assert headers["content-type"] == "application/json"
    assert verify(headers, raw)
    assert not verify(headers, raw + b" ")
    assert raw.isascii()  # Meta escapes non-ASCII; the signature covers these exact bytes

    value = change_value(raw)
    assert value["contacts"] == [{"profile": {"name": "Ani"}, "wa_id": TO}]
    (message,) = value["messages"]
    assert message["from"] == TO
    assert message["id"].startswith("wamid.")
    assert message["type"] == "text"
    assert message["text"] == {"body": "JOIN jpn25 ✈️"}
    assert message["timestamp"].isdigit()
    assert abs(int(message["timestamp"]) - time.time()) < 5
    assert "from_user_id" not in message


def test_inbound_returns_webhook_status() -> None:
    rejecting = Receiver(status=403)
    try:
        with WhatsAppSandbox(
            access_token=TOKEN, phone_number_id=PHONE_ID, app_secret="other", webhook_url=rejecting.url
        ) as sb:
            assert sb.send_inbound(from_phone=TO, text="hi") == 403
    finally:
        rejecting.close()


def test_inbound_with_user_id_only(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    hooked.send_inbound(from_phone=None, user_id="ID.1234567890123", text="halo")
    ((headers, raw),) = receiver.wait_for(1)
    assert verify(headers, raw)
    value = change_value(raw)
    assert value["contacts"] == [{"profile": {"name": "Penitip"}, "user_id": "ID.1234567890123"}]
    (message,) = value["messages"]
    assert message["from_user_id"] == "ID.1234567890123"
    assert "from" not in message


def test_inbound_with_phone_and_user_id(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    hooked.send_inbound(from_phone=TO, user_id="ID.1", text="halo")
    value = change_value(receiver.wait_for(1)[0][1])
    assert value["contacts"][0]["wa_id"] == TO and value["contacts"][0]["user_id"] == "ID.1"
    assert value["messages"][0]["from"] == TO and value["messages"][0]["from_user_id"] == "ID.1"


def test_inbound_message_override(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    image = {"type": "image", "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "caption": "nota"}}
    hooked.send_inbound(from_phone=TO, message=image)
    (message,) = change_value(receiver.wait_for(1)[0][1])["messages"]
    assert message["type"] == "image" and message["image"] == image["image"]
    assert "text" not in message
    assert message["from"] == TO and message["id"].startswith("wamid.")


def test_inbound_argument_errors(hooked: WhatsAppSandbox) -> None:
    with pytest.raises(ValueError):
        hooked.send_inbound(from_phone=None, text="x")
    with pytest.raises(ValueError):
        hooked.send_inbound(from_phone=TO)


def test_inbound_over_http(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    with httpx.Client(base_url=hooked.url, timeout=5, trust_env=False) as c:
        response = c.post("/_sandbox/inbound", json={"from": TO, "text": "JOIN jpn25", "name": "Ani"})
        assert response.status_code == 200
        assert response.json() == {"webhook_status": 200}
        assert c.post("/_sandbox/inbound", json={"text": "no sender"}).status_code == 400
    ((headers, raw),) = receiver.wait_for(1)
    assert verify(headers, raw)
    value = change_value(raw)
    assert value["messages"][0]["text"]["body"] == "JOIN jpn25"
    assert value["contacts"][0]["profile"]["name"] == "Ani"


def test_unreachable_webhook_does_not_crash_the_server(receiver: Receiver) -> None:
    dead = Receiver()
    dead_url = dead.url
    dead.close()
    with WhatsAppSandbox(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        app_secret=SECRET,
        webhook_url=dead_url,
        status_callbacks=True,
    ) as sb:
        assert sb.send_inbound(from_phone=TO, text="hi") == 0
        with httpx.Client(base_url=sb.url, timeout=5, trust_env=False) as c:
            assert c.post("/_sandbox/inbound", json={"from": TO, "text": "hi"}).json() == {
                "webhook_status": 0
            }
            sent = c.post(
                f"/v23.0/{PHONE_ID}/messages", json=text_body(), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert sent.status_code == 200
            time.sleep(0.1)  # let the callback worker fail
            assert c.get("/_sandbox/health").json() == {"ok": True}


def test_send_status_failed_has_errors(hooked: WhatsAppSandbox, receiver: Receiver) -> None:
    assert hooked.send_status("wamid.ABC", "failed", "+" + TO, error_code=131026) == 200
    ((headers, raw),) = receiver.wait_for(1)
    assert verify(headers, raw)
    (status,) = change_value(raw)["statuses"]
    assert status["id"] == "wamid.ABC"
    assert status["status"] == "failed"
    assert status["recipient_id"] == TO
    assert status["timestamp"].isdigit()
    (error,) = status["errors"]
    assert error["code"] == 131026
    assert error["title"] == "Message undeliverable"
    with pytest.raises(ValueError):
        hooked.send_status("wamid.ABC", "seen", TO)

    with httpx.Client(base_url=hooked.url, timeout=5, trust_env=False) as c:
        answer = c.post("/_sandbox/status", json={"id": "wamid.DEF", "status": "read", "recipient_id": TO})
        assert answer.json() == {"webhook_status": 200}
        assert c.post("/_sandbox/status", json={"id": "wamid.DEF", "status": "seen"}).status_code == 400
    (read,) = change_value(receiver.wait_for(2)[1][1])["statuses"]
    assert (read["id"], read["status"], read["recipient_id"]) == ("wamid.DEF", "read", TO)
    assert "errors" not in read


def test_status_callbacks_sent_then_delivered(receiver: Receiver) -> None:
    # The webhook blocks until the gate opens: if callbacks were posted inline, /messages would time out.
    receiver.gate = threading.Event()
    template = {
        "messaging_product": "whatsapp",
        "to": TO,
        "type": "template",
        "template": {"name": "order_ready", "language": {"code": "id"}},
    }
    with WhatsAppSandbox(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        app_secret=SECRET,
        webhook_url=receiver.url,
        status_callbacks=True,
    ) as sb:
        with httpx.Client(
            base_url=sb.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1, trust_env=False
        ) as c:
            response = c.post(f"/v23.0/{PHONE_ID}/messages", json=template)
            assert response.status_code == 200
            reply = c.post(f"/v23.0/{PHONE_ID}/messages", json=text_body(to="6289999999999"))
            assert reply.status_code == 200
        assert receiver.calls == []
        receiver.gate.set()
        calls = receiver.wait_for(4)
    wamid = response.json()["messages"][0]["id"]
    assert len(calls) == 4
    later = [change_value(raw)["statuses"][0] for _, raw in calls[2:]]
    assert [(s["id"], s["status"]) for s in later] == [
        (reply.json()["messages"][0]["id"], "sent"),
        (reply.json()["messages"][0]["id"], "delivered"),
    ]
    assert later[0]["pricing"]["category"] == "service"  # a free-form reply, not a template
    calls = calls[:2]
    statuses = []
    for headers, raw in calls:
        assert verify(headers, raw)
        (status,) = change_value(raw)["statuses"]
        statuses.append(status)
    assert [s["status"] for s in statuses] == ["sent", "delivered"]
    for s in statuses:
        assert s["id"] == wamid
        assert s["recipient_id"] == TO
        assert s["timestamp"].isdigit()
        assert s["pricing"] == {
            "billable": True,
            "pricing_model": "PMP",
            "category": "utility",
            "type": "regular",
        }
        assert s["conversation"]["id"] and s["conversation"]["origin"] == {"type": "utility"}
        assert "errors" not in s
    assert "expiration_timestamp" in statuses[0]["conversation"]


def test_accepted_fault_reports_failed_status(receiver: Receiver) -> None:
    with WhatsAppSandbox(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        app_secret=SECRET,
        webhook_url=receiver.url,
        status_callbacks=True,
    ) as sb:
        sb.add_fault({"to": TO, "times": 1, "http_status": 200, "code": 131026})
        with httpx.Client(base_url=sb.url, timeout=5, trust_env=False) as c:
            response = c.post(
                f"/v23.0/{PHONE_ID}/messages", json=text_body(), headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert response.status_code == 200
        wamid = response.json()["messages"][0]["id"]
        assert [m["id"] for m in sb.messages()] == [wamid]
        ((_headers, raw),) = receiver.wait_for(1)
        time.sleep(0.1)
        assert len(receiver.calls) == 1  # only "failed", no sent/delivered
    (status,) = change_value(raw)["statuses"]
    assert status["id"] == wamid and status["status"] == "failed"
    assert status["errors"][0]["code"] == 131026


def test_status_callbacks_need_a_webhook_url() -> None:
    with pytest.raises(ValueError):
        WhatsAppSandbox(access_token=TOKEN, phone_number_id=PHONE_ID, status_callbacks=True)


def test_refused_and_stalled_sends_are_recorded_with_their_time(
    sandbox: WhatsAppSandbox, client: httpx.Client
) -> None:
    """What a fault refused is on record (a retry's timing is judged against it); accepted sends are not."""
    sandbox.add_fault({"to": TO, "times": 1, "http_status": 400, "code": 131056})
    sandbox.add_fault({"to": TO, "times": 1, "timeout": True, "latency_ms": 50})
    before = time.time()
    assert post_message(client, text_body()).status_code == 400
    with pytest.raises(httpx.RemoteProtocolError):
        post_message(client, text_body(), timeout=2)
    assert post_message(client, text_body()).status_code == 200
    refused = sandbox.refused()
    assert [(r["to"], r["code"], r["timeout"]) for r in refused] == [(TO, 131056, False), (TO, None, True)]
    assert before <= refused[0]["received_at"] <= refused[1]["received_at"] <= time.time()
    assert client.get("/_sandbox/refused", params={"to": "+" + TO}).json()["refused"] == refused
    assert sandbox.refused(to="6280000000000") == []
    sandbox.clear()
    assert sandbox.refused() == []


def test_a_send_is_timed_when_its_first_bytes_arrive_not_when_a_thread_reads_it(
    sandbox: WhatsAppSandbox,
) -> None:
    """``received_at`` is the kernel's receive time of the request's first bytes (Meta's front door), so the
    record that the rate-limit tests read does not move with the local runtime's load: here the request's
    body comes 300 ms after its first line, and the send is timed at the first line."""
    import socket

    body = json.dumps(text_body()).encode()
    head = (
        f"POST /v23.0/{PHONE_ID}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    host, port = sandbox.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        first_bytes_at = time.time()
        conn.sendall(head[:20])
        time.sleep(0.3)
        conn.sendall(head[20:] + body)
        assert b" 200 " in conn.recv(65536).split(b"\r\n", 1)[0]
    (record,) = sandbox.messages()
    assert abs(record["received_at"] - first_bytes_at) < 0.1, record["received_at"] - first_bytes_at

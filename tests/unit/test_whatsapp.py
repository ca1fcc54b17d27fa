from __future__ import annotations

import httpx
import pytest

from jastipin.outbound.whatsapp import (
    Address,
    AuthError,
    MarketingOptOut,
    PermanentError,
    RateLimited,
    RetryableError,
    WhatsAppClient,
    WindowClosed,
    classify,
)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 131026, PermanentError),
        (400, 100, PermanentError),
        (429, 130429, RateLimited),
        (400, 131056, RateLimited),
        (400, 80007, RateLimited),
        (500, 131000, RetryableError),
        (503, None, RetryableError),
        (401, 190, AuthError),
        (400, 190, AuthError),
        (400, 131047, WindowClosed),
        (400, 131050, MarketingOptOut),
    ],
)
def test_classify(status, code, kind):
    error = classify(status, {"error": {"code": code, "message": "x"}} if code is not None else None)
    assert type(error) is kind
    assert error.code == code and error.http_status == status


def test_retryable_flags():
    assert classify(429, {"error": {"code": 130429}}).retryable
    meta = {"error": {"code": 131000, "error_subcode": 2494010, "fbtrace_id": "AbC123", "message": "x"}}
    error = classify(500, meta)  # what Meta's support asks for is kept
    kept = (error.code, error.subcode, error.fbtrace_id, error.http_status)
    assert kept == (131000, 2494010, "AbC123", 500)
    assert classify(400, {"error": "not an object"}).code is None
    assert not classify(400, {"error": {"code": 131026}}).retryable
    assert not classify(400, {"error": {"code": 131047}}).retryable


def _client(handler) -> WhatsAppClient:
    return WhatsAppClient(
        base_url="https://graph.test/",
        version="v23.0",
        phone_number_id="42",
        access_token="secret-token",
        transport=httpx.MockTransport(handler),
    )


def test_a_token_function_is_read_on_every_request():
    """A rotated token (new value in SSM, seen once the settings' cache expires) needs no new client."""
    current = ["old-token"]
    seen = []

    def handler(request):
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"messages": [{"id": f"wamid.{len(seen)}"}]})

    client = WhatsAppClient(
        base_url="https://graph.test/",
        version="v23.0",
        phone_number_id="42",
        access_token=lambda: current[0],
        transport=httpx.MockTransport(handler),
    )
    client.send_text(Address(phone="+6281234567890"), "hi")
    current[0] = "new-token"
    client.send_text(Address(phone="+6281234567890"), "hi")
    assert seen == ["Bearer old-token", "Bearer new-token"]
    assert "token" not in repr(client).replace("token=***", "")


def test_timeouts_and_connection_errors_are_retryable():
    def boom(request):
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(RetryableError, match="timeout"):
        _client(boom).send_text(Address(phone="+6281234567890"), "hi")

    def reset(request):
        raise httpx.ConnectError("reset", request=request)

    with pytest.raises(RetryableError, match="transport"):
        _client(reset).send_text(Address(phone="+6281234567890"), "hi")


def test_image_and_user_id_recipient_shapes():
    seen = []

    def handler(request):
        seen.append(request.read())
        return httpx.Response(200, json={"messages": [{"id": "wamid.X"}]})

    client = _client(handler)
    assert (
        client.send_image(Address(user_id="ID.123"), link="https://x.test/p.jpg", caption="Bukti")
        == "wamid.X"
    )
    import json

    assert json.loads(seen[0]) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "recipient": "ID.123",
        "type": "image",
        "image": {"link": "https://x.test/p.jpg", "caption": "Bukti"},
    }


def test_token_is_never_in_repr():
    client = _client(lambda r: httpx.Response(200, json={}))
    assert "secret-token" not in repr(client)


def test_2xx_without_message_id_is_retryable():
    with pytest.raises(RetryableError):
        _client(lambda r: httpx.Response(200, json={"weird": True})).send_text(Address(phone="+628111"), "x")

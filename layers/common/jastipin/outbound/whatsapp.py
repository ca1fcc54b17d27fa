"""WhatsApp Cloud API client: text, template and image messages through one choke point.

Every failure becomes a typed error keyed by Graph error code and grouped by what the sender must do:
``RetryableError`` (back off and retry), ``PermanentError`` (log failed, never retry), ``AuthError`` (stop
sending and alarm), with ``WindowClosed`` and ``MarketingOptOut`` as permanent errors that carry meaning.
The token never appears in ``repr`` or logs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from jastipin import tls

# Graph error codes (Meta: "Cloud API error codes").
AUTH_CODES = frozenset({0, 190, 10, 200, 3})  # token expired/invalid, permission errors
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131048, 131056})  # app/WABA/throughput/spam/pair rate limits
RETRYABLE_CODES = RATE_LIMIT_CODES | frozenset({1, 2, 131000, 131016, 133004})  # unknown/service unavailable
WINDOW_CLOSED_CODE = 131047  # re-engagement: more than 24 h since the user's last message
MARKETING_OPT_OUT_CODE = 131050  # user stopped marketing messages
USER_ID_NOT_SUPPORTED_CODE = 131062  # this message cannot go to a business-scoped user id (no phone known)
CLEAR_REASONS = {USER_ID_NOT_SUPPORTED_CODE: "user_id_not_supported"}  # the log's reason, instead of the code


class WhatsAppError(Exception):
    """Base class: ``code`` and ``subcode`` are Meta's (``error_subcode``; None when not given),
    ``http_status`` the HTTP status (0: none), ``fbtrace_id`` the id Meta's support asks for."""

    retryable = False
    ambiguous = False  # the message may have gone out all the same (no answer came)

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int = 0,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id

    @property
    def reason(self) -> str:
        """Short, PII-free text for the notifications log."""
        if self.code in CLEAR_REASONS:
            return CLEAR_REASONS[self.code]
        if self.code is not None:
            return f"whatsapp_error_{self.code}"
        return f"http_{self.http_status}" if self.http_status else "network_error"


class RetryableError(WhatsAppError):
    retryable = True


class RateLimited(RetryableError):
    pass


class Unanswered(RetryableError):
    """No answer (a timeout or a dropped connection): Meta may have taken the message all the same."""

    ambiguous = True


class PermanentError(WhatsAppError):
    pass


class WindowClosed(PermanentError):
    pass


class MarketingOptOut(PermanentError):
    pass


class AuthError(WhatsAppError):
    """The token is expired or invalid: every further send fails the same way."""


def classify(http_status: int, body: Any) -> WhatsAppError:
    """Turn a non-2xx Graph response into the typed error the sender acts on."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    trace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    message = str(error.get("message") or f"HTTP {http_status}")[:300]
    kind: type[WhatsAppError] = PermanentError
    if http_status == 401 or code in AUTH_CODES:
        kind = AuthError
    elif code == WINDOW_CLOSED_CODE:
        kind = WindowClosed
    elif code == MARKETING_OPT_OUT_CODE:
        kind = MarketingOptOut
    elif http_status == 429 or code in RATE_LIMIT_CODES:
        kind = RateLimited
    elif http_status >= 500 or code in RETRYABLE_CODES:
        kind = RetryableError
    return kind(message, code=code, http_status=http_status, subcode=subcode, fbtrace_id=trace)


@dataclass(frozen=True)
class Address:
    """Where a message goes: a phone (E.164) or, for username users, a business-scoped user id."""

    phone: str | None = None
    user_id: str | None = None

    def as_fields(self) -> dict[str, str]:
        if self.phone:
            return {"to": self.phone.lstrip("+")}
        if self.user_id:
            return {"recipient": self.user_id}
        raise ValueError("address needs a phone or a user id")


class BearerToken(httpx.Auth):
    """``Authorization: Bearer <token>`` with the token read on every request: a rotated token (a new value in
    SSM, read through the settings' cache) is used without a new client or a cold start."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._token = token if callable(token) else (lambda: token)

    def current(self) -> str:
        return self._token()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.current()}"
        yield request


def text_message(body: str, *, preview_url: bool = False) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body, "preview_url": preview_url}}


def template_message(
    name: str,
    language: str,
    parameters: list[str] | None = None,
    *,
    header_image_url: str | None = None,
    header_image_id: str | None = None,
) -> dict[str, Any]:
    """An approved template: body parameters ({{1}}, {{2}}...) and, for an image-header template, the
    header's image (a link or an uploaded media id)."""
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    components: list[dict[str, Any]] = []
    if header_image_url or header_image_id:
        image: dict[str, Any] = {"link": header_image_url} if header_image_url else {"id": header_image_id}
        components.append({"type": "header", "parameters": [{"type": "image", "image": image}]})
    if parameters:
        components.append(
            {"type": "body", "parameters": [{"type": "text", "text": value} for value in parameters]}
        )
    if components:
        template["components"] = components
    return {"type": "template", "template": template}


def image_message(
    *, link: str | None = None, media_id: str | None = None, caption: str | None = None
) -> dict[str, Any]:
    image: dict[str, Any] = {"link": link} if link else {"id": media_id}
    if caption:
        image["caption"] = caption
    return {"type": "image", "image": image}


def _payload(to: Address, message: dict[str, Any], callback_data: str | None) -> dict[str, Any]:
    payload = {"messaging_product": "whatsapp", "recipient_type": "individual", **to.as_fields(), **message}
    if callback_data:  # comes back in the message's status webhooks (at most 512 characters)
        payload["biz_opaque_callback_data"] = callback_data[:512]
    return payload


def _answer(status: int, raw: bytes) -> str:
    """The wamid of a Graph answer, or the typed error it stands for."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if 200 <= status < 300:
        try:
            return str(body["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise RetryableError("2xx without a message id", http_status=status) from None
    raise classify(status, body)


class WhatsAppClient:
    """Sends messages to the Cloud API: ``send`` (and ``send_text``/``send_template``/``send_image``) from
    synchronous code on httpx; ``asend`` from the sender's asyncio send path, on aiohttp (the cheapest client
    per send measured, ``bench/http_clients.py``), one session per event loop. A test's ``transport`` (e.g.
    ``httpx.MockTransport``) answers both: ``asend`` then goes through an ``httpx.AsyncClient`` on it."""

    def __init__(
        self,
        *,
        base_url: str,
        version: str,
        phone_number_id: str,
        access_token: str | Callable[[], str],
        timeout: float = 10.0,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``access_token``: the token, or a function that returns the current one (called per request)."""
        self._base_url = base_url.rstrip("/")
        self._path = f"/{version}/{phone_number_id}/messages"
        self._auth = BearerToken(access_token)
        self._timeout = timeout
        self._max_connections = max_connections
        self._transport = transport
        self._http = httpx.Client(
            base_url=self._base_url,
            timeout=timeout,
            transport=transport,
            auth=self._auth,
            headers={"Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._async: dict[asyncio.AbstractEventLoop, _AsyncPoster] = {}

    def __repr__(self) -> str:
        return f"WhatsAppClient(path={self._path!r}, token=***)"

    def prepare(self) -> None:
        """Read the access token now: the first read (and one every few minutes, when the settings' cache
        expires) fetches it from SSM, which is better done before the sender takes its send slots than by
        the first send while its slot, and every other thread's, runs out."""
        self._auth.current()

    def close(self) -> None:
        self._http.close()

    async def aclose(self) -> None:
        """Close this event loop's session (its connections)."""
        poster = self._async.pop(asyncio.get_running_loop(), None)
        if poster is not None:
            await poster.close()

    def send_text(
        self, to: Address, body: str, *, preview_url: bool = False, callback_data: str | None = None
    ) -> str:
        return self.send(to, text_message(body, preview_url=preview_url), callback_data)

    def send_template(
        self,
        to: Address,
        name: str,
        language: str,
        parameters: list[str] | None = None,
        *,
        header_image_url: str | None = None,
        header_image_id: str | None = None,
        callback_data: str | None = None,
    ) -> str:
        message = template_message(
            name, language, parameters, header_image_url=header_image_url, header_image_id=header_image_id
        )
        return self.send(to, message, callback_data)

    def send_image(
        self,
        to: Address,
        *,
        link: str | None = None,
        media_id: str | None = None,
        caption: str | None = None,
        callback_data: str | None = None,
    ) -> str:
        return self.send(to, image_message(link=link, media_id=media_id, caption=caption), callback_data)

    def send(self, to: Address, message: dict[str, Any], callback_data: str | None = None) -> str:
        """POST one message (``text_message``, ``template_message``, ``image_message``); returns the wamid or
        raises a typed WhatsAppError. ``callback_data`` comes back in the message's status webhooks
        (``biz_opaque_callback_data``)."""
        try:
            response = self._http.post(self._path, json=_payload(to, message, callback_data))
        except httpx.TimeoutException as exc:
            raise Unanswered(f"timeout: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise Unanswered(f"transport: {type(exc).__name__}") from None
        return _answer(response.status_code, response.content)

    async def aprepare(self) -> None:
        """``prepare``, and the running loop's session made now (the first use imports aiohttp): neither may
        fall between a send slot and its request, where it would make the request leave late."""
        self.prepare()
        self._poster()

    async def asend(self, to: Address, message: dict[str, Any], callback_data: str | None = None) -> str:
        """``send`` from a coroutine, on the running loop's session."""
        body = json.dumps(_payload(to, message, callback_data), separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {self._auth.current()}", "Content-Type": "application/json"}
        status, raw = await self._poster().post(self._path, body, headers)
        return _answer(status, raw)

    def _poster(self) -> _AsyncPoster:
        loop = asyncio.get_running_loop()
        poster = self._async.get(loop)
        if poster is None:
            poster = self._async[loop] = (
                _HttpxPoster(self._base_url, self._timeout, self._transport)
                if isinstance(self._transport, httpx.AsyncBaseTransport)
                else _AiohttpPoster(self._base_url, self._timeout, self._max_connections)
            )
        return poster


class _AsyncPoster(Protocol):
    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(HTTP status, body); raises ``Unanswered`` when no answer came."""
        ...

    async def close(self) -> None: ...


class _AiohttpPoster:
    """aiohttp: keep-alive connections (at most ``max_connections``), one session per event loop."""

    def __init__(self, base_url: str, timeout: float, max_connections: int) -> None:
        import aiohttp  # imported by the sender only, on its first send

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ssl=tls.context()),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,  # Graph answers a few hundred bytes of JSON
        )

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(path, data=body, headers=headers) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise Unanswered(f"timeout: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise Unanswered(f"transport: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self._session.close()


class _HttpxPoster:
    """httpx's async client on a given transport (a test's ``httpx.MockTransport``)."""

    def __init__(self, base_url: str, timeout: float, transport: httpx.AsyncBaseTransport) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            response = await self._client.post(path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise Unanswered(f"timeout: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise Unanswered(f"transport: {type(exc).__name__}") from None
        return response.status_code, response.content

    async def close(self) -> None:
        await self._client.aclose()

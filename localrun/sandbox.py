"""Local WhatsApp Cloud API sandbox.

A small HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1) that speaks the part of Meta's WhatsApp
Cloud API (Graph API v23.0) that Jastipin uses, so the whole system can be run and tested with no internet:

* ``POST /{version}/{phone_number_id}/messages`` -- checks the bearer token, the phone number id and the
  request body (text, template, image, document, interactive and reaction messages, plus "mark as read"
  requests), records accepted messages and answers like Meta does (``contacts`` + ``messages[].id``).
  Errors use the Graph error body (``{"error": {"message", "type", "code", "fbtrace_id", ...}}``).
* Faults (rate limits, server errors, slow answers, dropped connections, numbers that fail after being
  accepted) can be injected per recipient, for a number of requests or forever, to test retries.
* It sends Meta-format webhooks to our webhook: inbound user messages (``send_inbound``) and message status
  callbacks (``send_status``, and automatically "sent" then "delivered" after each accepted message when
  ``status_callbacks=True``), signed with ``X-Hub-Signature-256`` like Meta signs them.
* Control routes under ``/_sandbox/`` (messages, refused sends, faults, inbound, status, health) for other
  processes.

Each accepted or refused send is recorded with ``received_at``: when the request's first bytes reached the
sandbox's socket (the kernel's receive timestamp, ``SO_TIMESTAMPNS``, where Linux gives it), as Meta's front
door would time it, and not when a sandbox thread got round to reading it. The sandbox shares a process with
the local runtime, whose load delayed that by up to ~50 ms, enough to make on-time sends look crowded into
one second on the record that the rate-limit tests read.

Faults (``add_fault`` / ``POST /_sandbox/faults``) are dicts with the keys ``to`` (recipient or null = any),
``times`` (uses, null = forever), ``http_status``, ``code``, ``message``, ``latency_ms`` and ``timeout``.
The first fault matching a /messages request (and with uses left) decides its fate:

* ``timeout: true`` -- hold the request for ``latency_ms`` (default 10 s), then close the connection
  without answering.
* ``http_status`` 4xx/5xx -- answer that status with a Graph error (``code``, default 131000).
* otherwise the message is accepted (after the fault's ``latency_ms``, if given, instead of the sandbox's);
  with a ``code`` (e.g. 131026 for an unknown number) its status callback is "failed" with that code
  instead of "sent" + "delivered", as Meta does for numbers it cannot deliver to.

Typical use::

    with WhatsAppSandbox(access_token="t", phone_number_id="123", app_secret="s",
                         webhook_url="http://127.0.0.1:3000/webhook") as sandbox:
        ...  # point the sender at sandbox.url
        assert sandbox.messages(to="6281234567890")
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import heapq
import hmac
import json
import logging
import queue
import re
import secrets
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

__all__ = ["WhatsAppSandbox", "sign"]

logger = logging.getLogger(__name__)

MESSAGE_TYPES = ("text", "template", "image", "document", "interactive", "reaction")
STATUS_VALUES = ("sent", "delivered", "read", "failed")
INTERACTIVE_TYPES = (
    "button",
    "call_permission_request",
    "catalog_message",
    "list",
    "product",
    "product_list",
    "flow",
    "cta_url",
)
MAX_TEXT_BODY = 4096
MAX_CAPTION = 1024
MAX_REQUEST_BYTES = 1_000_000
DEFAULT_TIMEOUT_FAULT_MS = 10_000.0
WEBHOOK_TIMEOUT_S = 5.0
DEFAULT_DISPLAY_PHONE_NUMBER = "15550000000"
DEFAULT_WABA_ID = "100000000000001"

_MESSAGES_PATH = re.compile(r"^/(v\d+\.\d+)/([^/]+)/messages/?$")
_PHONE = re.compile(r"^\+?(\d{8,15})$")
_FAULT_KEYS = frozenset({"to", "times", "http_status", "code", "message", "latency_ms", "timeout"})
_ERROR_TITLES = {
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131021: "Recipient cannot be sender",
    131026: "Message undeliverable",
    131031: "Account has been locked",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131051: "Unsupported message type",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Template Param Count Mismatch",
    132001: "Template does not exist",
    133010: "Phone number not registered",
}
_ERROR_DOCS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def webhook_envelope(
    value: dict[str, Any],
    *,
    phone_number_id: str,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> dict[str, Any]:
    """A Meta webhook body (``field: messages``) around ``value`` (``contacts``/``messages``/``statuses``)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }


def sign(app_secret: str, body: bytes) -> str:
    """Return Meta's ``X-Hub-Signature-256`` value for ``body``: ``"sha256=" + hex(HMAC-SHA256)``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def _fbtrace_id() -> str:
    return secrets.token_urlsafe(17)[:23]


def _error_title(code: int) -> str:
    return _ERROR_TITLES.get(code, "Error")


def _normalize_address(value: str) -> str:
    """A phone number as digits (leading + dropped); anything else (a business-scoped user id) unchanged."""
    match = _PHONE.match(value)
    return match.group(1) if match else value


class GraphError(Exception):
    """A Graph API error: HTTP status plus the ``{"error": {...}}`` body Meta sends."""

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        *,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.error_type = error_type
        self.subcode = subcode
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = _fbtrace_id()
        return {"error": error}


def _invalid(field: str, problem: str) -> GraphError:
    """Error for an invalid request parameter (Graph code 100), naming the field."""
    if problem == "is required":
        text = f"(#100) The parameter {field} is required."
    else:
        text = f"(#100) Param {field} {problem}."
    return GraphError(400, 100, text, details=text.removeprefix("(#100) "))


# ----------------------------------------------------------------------------------------------------
# Request validation (shapes from the Cloud API OpenAPI spec, v23.0)
# ----------------------------------------------------------------------------------------------------


def _require_object(parent: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise _invalid(field, "is required")
    if not isinstance(value, dict):
        raise _invalid(field, "must be a JSON object")
    return value


def _require_str(parent: dict[str, Any], key: str, field: str, *, max_len: int | None = None) -> str:
    value = parent.get(key)
    if value is None:
        raise _invalid(field, "is required")
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    if not value:
        raise _invalid(field, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise _invalid(field, f"must be at most {max_len} characters long")
    return value


def _optional_str(parent: dict[str, Any], key: str, field: str, *, max_len: int | None = None) -> None:
    if key in parent:
        value = parent[key]
        if not isinstance(value, str):
            raise _invalid(field, "must be a string")
        if max_len is not None and len(value) > max_len:
            raise _invalid(field, f"must be at most {max_len} characters long")


def _no_unknown_keys(obj: dict[str, Any], allowed: set[str], field: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _invalid(f"{field}['{key}']", "is not a valid parameter")


def _validate_text(text: dict[str, Any]) -> None:
    _no_unknown_keys(text, {"body", "preview_url"}, "text")
    _require_str(text, "body", "text['body']", max_len=MAX_TEXT_BODY)
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        raise _invalid("text['preview_url']", "must be a boolean")


def _validate_media(media: dict[str, Any], kind: str) -> None:
    allowed = {"id", "link", "caption"} | ({"filename"} if kind == "document" else set())
    _no_unknown_keys(media, allowed, kind)
    has_id, has_link = "id" in media, "link" in media
    if has_id and has_link:
        raise _invalid(f"{kind}['link']", f"must not be used together with {kind}['id']")
    if not has_id and not has_link:
        raise _invalid(f"{kind}['link'] or {kind}['id']", "is required")
    if has_id:
        _require_str(media, "id", f"{kind}['id']")
    else:
        link = _require_str(media, "link", f"{kind}['link']")
        if not link.startswith(("http://", "https://")):
            raise _invalid(f"{kind}['link']", "must be an http(s) URL")
    _optional_str(media, "caption", f"{kind}['caption']", max_len=MAX_CAPTION)
    _optional_str(media, "filename", f"{kind}['filename']")


def _validate_template(template: dict[str, Any]) -> None:
    _require_str(template, "name", "template['name']", max_len=512)
    language = _require_object(template, "language", "template['language']")
    _require_str(language, "code", "template['language']['code']")
    if "policy" in language and language["policy"] != "deterministic":
        raise _invalid("template['language']['policy']", "must be 'deterministic'")
    if "components" not in template:
        return
    components = template["components"]
    if not isinstance(components, list):
        raise _invalid("template['components']", "must be an array")
    for i, component in enumerate(components):
        field = f"template['components'][{i}]"
        if not isinstance(component, dict):
            raise _invalid(field, "must be a JSON object")
        kind = _require_str(component, "type", f"{field}['type']")
        if "parameters" in component and not isinstance(component["parameters"], list):
            raise _invalid(f"{field}['parameters']", "must be an array")
        if kind == "button":
            _require_str(component, "sub_type", f"{field}['sub_type']")
            index = component.get("index")
            if index is None:
                raise _invalid(f"{field}['index']", "is required")
            if isinstance(index, bool) or not isinstance(index, (int, str)):
                raise _invalid(f"{field}['index']", "must be a number or a string")


def _validate_interactive(interactive: dict[str, Any]) -> None:
    kind = _require_str(interactive, "type", "interactive['type']")
    if kind not in INTERACTIVE_TYPES:
        raise _invalid("interactive['type']", f"must be one of {', '.join(INTERACTIVE_TYPES)}")
    action = _require_object(interactive, "action", "interactive['action']")
    if "header" in interactive:
        header = _require_object(interactive, "header", "interactive['header']")
        _require_str(header, "type", "interactive['header']['type']")
        _optional_str(header, "text", "interactive['header']['text']", max_len=60)
    if kind != "product" or "body" in interactive:
        body = _require_object(interactive, "body", "interactive['body']")
        _require_str(body, "text", "interactive['body']['text']", max_len=1024)
    if "footer" in interactive:
        footer = _require_object(interactive, "footer", "interactive['footer']")
        _require_str(footer, "text", "interactive['footer']['text']", max_len=60)
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise _invalid("interactive['action']['buttons']", "must be an array of 1 to 3 buttons")
        for i, button in enumerate(buttons):
            field = f"interactive['action']['buttons'][{i}]"
            if not isinstance(button, dict) or button.get("type") != "reply":
                raise _invalid(f"{field}['type']", "must be 'reply'")
            reply = _require_object(button, "reply", f"{field}['reply']")
            _require_str(reply, "id", f"{field}['reply']['id']", max_len=256)
            _require_str(reply, "title", f"{field}['reply']['title']", max_len=20)
    elif kind == "list":
        _require_str(action, "button", "interactive['action']['button']", max_len=20)
        sections = action.get("sections")
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            raise _invalid("interactive['action']['sections']", "must be an array of 1 to 10 sections")


def _validate_reaction(reaction: dict[str, Any]) -> None:
    _require_str(reaction, "message_id", "reaction['message_id']")
    emoji = reaction.get("emoji")
    if emoji is None:
        raise _invalid("reaction['emoji']", "is required")
    if not isinstance(emoji, str):  # "" removes a reaction, so empty is allowed
        raise _invalid("reaction['emoji']", "must be a string")


_TYPE_VALIDATORS = {
    "text": _validate_text,
    "template": _validate_template,
    "image": lambda obj: _validate_media(obj, "image"),
    "document": lambda obj: _validate_media(obj, "document"),
    "interactive": _validate_interactive,
    "reaction": _validate_reaction,
}


def _validate_read_receipt(body: dict[str, Any]) -> None:
    if body["status"] != "read":
        raise _invalid("status", "must be 'read'")
    _require_str(body, "message_id", "message_id")
    if "typing_indicator" in body:
        indicator = _require_object(body, "typing_indicator", "typing_indicator")
        if indicator.get("type") != "text":
            raise _invalid("typing_indicator['type']", "must be 'text'")


def _validate_message(body: Any) -> tuple[str, str, str]:
    """Check a /messages request body; return (recorded recipient, input as given, type).

    For a "mark as read" request (``status: read``) the type is ``"read"`` and both addresses are empty.
    """
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    if body.get("messaging_product") is None:
        raise _invalid("messaging_product", "is required")
    if body["messaging_product"] != "whatsapp":
        raise _invalid("messaging_product", "must be 'whatsapp'")
    if "status" in body:
        _validate_read_receipt(body)
        return "", "", "read"
    if "recipient_type" in body and body["recipient_type"] != "individual":
        raise _invalid("recipient_type", "must be 'individual'")
    if body.get("to") is not None:
        given = body["to"]
        if not isinstance(given, str):
            raise _invalid("to", "must be a string")
        match = _PHONE.match(given)
        if not match:
            raise _invalid("to", "must be a phone number of 8 to 15 digits, optionally with a leading +")
        address = match.group(1)
    elif body.get("recipient") is not None:
        given = body["recipient"]
        if not isinstance(given, str) or not given or len(given) > 128 or any(c.isspace() for c in given):
            raise _invalid("recipient", "must be a business-scoped user id string")
        address = given
    else:
        raise _invalid("to", "is required")
    message_type = body.get("type", "text")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        raise _invalid("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    if "biz_opaque_callback_data" in body:
        _optional_str(body, "biz_opaque_callback_data", "biz_opaque_callback_data", max_len=512)
    if "context" in body:
        context = _require_object(body, "context", "context")
        _require_str(context, "message_id", "context['message_id']")
    _TYPE_VALIDATORS[message_type](_require_object(body, message_type, message_type))
    return address, given, message_type


# ----------------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------------


def _check_fault(fault: Any) -> dict[str, Any]:
    """Validate a fault dict and return the normalized copy that is stored."""
    if not isinstance(fault, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(fault) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    to = fault.get("to")
    if to is not None and (not isinstance(to, str) or not to):
        raise ValueError("fault 'to' must be a phone number / user id string or null")
    times = fault.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("fault 'times' must be a positive integer or null (forever)")
    timeout = fault.get("timeout", False)
    if not isinstance(timeout, bool):
        raise ValueError("fault 'timeout' must be a boolean")
    latency = fault.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0
    ):
        raise ValueError("fault 'latency_ms' must be a non-negative number")
    http_status = fault.get("http_status")
    if http_status is not None and (
        isinstance(http_status, bool)
        or not isinstance(http_status, int)
        or not (http_status == 200 or 400 <= http_status <= 599)
    ):
        raise ValueError("fault 'http_status' must be 200 or a 4xx/5xx status")
    code = fault.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise ValueError("fault 'code' must be an integer")
    message = fault.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("fault 'message' must be a string")
    if http_status is not None and http_status >= 400 and code is None:
        code = 131000
    return {
        "to": None if to is None else _normalize_address(to),
        "times": times,
        "http_status": http_status,
        "code": code,
        "message": message if message is not None else (f"(#{code}) {_error_title(code)}" if code else None),
        "latency_ms": None if latency is None else float(latency),
        "timeout": timeout,
    }


# ----------------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------------


_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python does not name it


class _Drop:
    """Route result meaning: close the connection without answering."""


_DROP = _Drop()
_Response = tuple[int, dict[str, Any] | None, dict[str, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # socketserver's default listen backlog (5) resets bursts of new connections
    sandbox: WhatsAppSandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts, closed sockets) are normal; anything else is a bug worth a trace.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WhatsAppSandbox/1.0"
    # One write per response (flushed by handle_one_request) and no Nagle: avoids 40 ms delayed-ACK stalls.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    arrived: float | None = None  # kernel receive time of the request being handled (None: not known)

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.server.sandbox._track_connection(self.connection, add=True)

    def handle_one_request(self) -> None:
        self.arrived = self._next_arrival()
        super().handle_one_request()

    def _next_arrival(self) -> float | None:
        """When the next request's first bytes reached this socket, from the kernel's receive timestamp
        (read with MSG_PEEK: the request itself is read as usual). Clients send one request at a time on a
        connection (no pipelining), so nothing of it is in ``rfile``'s buffer yet."""
        try:
            data, ancillary, _, _ = self.connection.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
        except (OSError, ValueError):
            return None
        for level, kind, value in ancillary:
            if data and level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                return seconds + nanoseconds / 1e9
        return None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._track_connection(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            self._answer((400, GraphError(400, 100, "Invalid Content-Length header").body(), {}))
            self.close_connection = True
            return
        if length > MAX_REQUEST_BYTES:
            self._answer((413, GraphError(413, 100, "Request body too large").body(), {}))
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            result = self.server.sandbox._route(method, self.path, self.headers, raw, self.arrived)
        except Exception:
            logger.exception("whatsapp sandbox: error handling %s %s", method, self.path)
            result = (
                500,
                GraphError(500, 1, "An unknown error occurred", error_type="OAuthException").body(),
                {},
            )
        if isinstance(result, _Drop):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(result)

    def _answer(self, result: _Response) -> None:
        status, payload, headers = result
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status == 204 or payload is None:
                if status != 204:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = json.dumps(payload).encode()
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # client went away
            self.close_connection = True


# ----------------------------------------------------------------------------------------------------
# The sandbox
# ----------------------------------------------------------------------------------------------------


class WhatsAppSandbox:
    """A local stand-in for the WhatsApp Cloud API (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token: str,
        phone_number_id: str,
        app_secret: str | None = None,
        webhook_url: str | None = None,
        status_callbacks: bool = False,
        latency_ms: float = 0.0,
        status_schedules: list[list[tuple[str, float]]] | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("access_token must not be empty")
        if not phone_number_id:
            raise ValueError("phone_number_id must not be empty")
        if status_callbacks and not webhook_url:
            raise ValueError("status_callbacks=True needs a webhook_url")
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self.host = host
        self.port = port
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.webhook_url = webhook_url
        self.status_callbacks = status_callbacks
        self.latency_ms = float(latency_ms)
        # With status_callbacks: the statuses posted for the n-th accepted message and when, in ms after it
        # was accepted (before our answer to the send leaves), from schedule n % len(...); None: "sent" then
        # "delivered" at once. E.g. [[("read", 0), ("delivered", 0)], [("delivered", 2000)]]: reversed, late.
        for schedule in status_schedules or []:
            for status, offset in schedule:
                if status not in STATUS_VALUES or offset < 0:
                    raise ValueError(f"bad status schedule step: {(status, offset)!r}")
        self.status_schedules = [list(s) for s in status_schedules or []]
        self._accepted = 0
        self.display_phone_number = DEFAULT_DISPLAY_PHONE_NUMBER
        self.waba_id = DEFAULT_WABA_ID

        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._refused: list[dict[str, Any]] = []  # sends a fault refused or stalled: to, code, received_at
        self._requests = 0
        self._faults: list[dict[str, Any]] = []
        self._issued_ids: set[str] = set()
        self._message_types: dict[str, str] = {}
        self._callback_data: dict[str, str] = {}  # wamid → biz_opaque_callback_data, echoed in its statuses
        self._conversations: dict[str, str] = {}
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._callbacks: queue.Queue[tuple[str, str, list[tuple[str, int | None, float]]] | None] = (
            queue.Queue()
        )
        self._callback_thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="whatsapp-sandbox", daemon=True
        )
        self._thread.start()
        if self.status_callbacks:
            self._callback_thread = threading.Thread(
                target=self._callback_worker, name="whatsapp-sandbox-callbacks", daemon=True
            )
            self._callback_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes sleeping requests, closes open connections. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._callback_thread is not None:
            self._callbacks.put(None)
            self._callback_thread.join(timeout=2)
            self._callback_thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash; 127.0.0.1 also when listening on
        0.0.0.0, every address)."""
        if self._server is None:
            raise RuntimeError("sandbox not started")
        host, port = self._server.server_address[:2]
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"

    # ---- state ------------------------------------------------------------------------------------

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """Accepted messages in arrival order (copies), optionally only those for ``to`` (``+`` ignored)."""
        wanted = None if to is None else _normalize_address(to.strip())  # "?to=+62..." decodes to " 62..."
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages if wanted is None or m["to"] == wanted]

    def refused(self, to: str | None = None) -> list[dict[str, Any]]:
        """Sends a fault refused (an error answer) or stalled (a timeout), in arrival order: ``to``,
        ``code`` (None for a timeout), ``timeout``, ``received_at`` (epoch seconds, as for messages)."""
        wanted = None if to is None else _normalize_address(to.strip())
        with self._lock:
            return [dict(r) for r in self._refused if wanted is None or r["to"] == wanted]

    def requests_count(self) -> int:
        """All POSTs to /messages so far, accepted or not."""
        with self._lock:
            return self._requests

    def clear(self) -> None:
        """Forget messages, counters and faults."""
        with self._lock:
            self._messages.clear()
            self._refused.clear()
            self._requests = 0
            self._faults.clear()
            self._message_types.clear()
            self._callback_data.clear()

    def add_fault(self, fault: dict[str, Any]) -> None:
        """Add a fault (see the module docs); raises ValueError for a malformed one."""
        checked = _check_fault(fault)
        with self._lock:
            self._faults.append(checked)

    def clear_faults(self) -> None:
        """Forget faults only (messages and counters stay)."""
        with self._lock:
            self._faults.clear()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _sleep(self, ms: float) -> None:
        if ms > 0:
            self._stopping.wait(ms / 1000.0)

    def _new_wamid(self, address: str, *, inbound: bool = False) -> str:
        # Same layout as Meta's ids: protobuf-ish bytes holding the number and a hex id, base64-encoded.
        addr = address.encode()[:255]
        with self._lock:
            while True:
                if inbound:
                    raw = b"\x1c\x18" + bytes([len(addr)]) + addr + b"\x15\x02\x00\x12\x18\x14"
                    raw += secrets.token_hex(10).upper().encode() + b"\x00"
                else:
                    raw = b"\x1c\x18" + bytes([len(addr)]) + addr + b"\x15\x02\x00\x11\x18\x12"
                    raw += secrets.token_hex(9).upper().encode() + b"\x00"
                wamid = "wamid." + base64.b64encode(raw).decode()
                if wamid not in self._issued_ids:
                    self._issued_ids.add(wamid)
                    return wamid

    def _match_fault(self, address: str) -> dict[str, Any] | None:
        """First fault for ``address`` with uses left; consumes one use. Caller holds the lock."""
        for fault in self._faults:
            if fault["to"] is not None and fault["to"] != address:
                continue
            if fault["times"] is not None:
                if fault["times"] <= 0:
                    continue
                fault["times"] -= 1
            return dict(fault)
        return None

    # ---- routing ----------------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, headers: Any, raw: bytes, arrived: float | None = None
    ) -> _Response | _Drop:
        parts = urlsplit(path)
        match = _MESSAGES_PATH.match(parts.path)
        if match and method == "POST":
            return self._handle_send(match.group(2), headers, raw, arrived)
        query = parse_qs(parts.query)
        route = (method, parts.path.rstrip("/"))
        if route == ("GET", "/_sandbox/health"):
            return 200, {"ok": True}, {}
        if route == ("GET", "/_sandbox/stats"):
            with self._lock:
                return 200, {"messages": len(self._messages), "requests": self._requests}, {}
        if route == ("GET", "/_sandbox/messages"):
            return 200, {"messages": self.messages(query.get("to", [None])[0])}, {}
        if route == ("GET", "/_sandbox/refused"):
            return 200, {"refused": self.refused(query.get("to", [None])[0])}, {}
        if route == ("DELETE", "/_sandbox/messages"):
            self.clear()
            return 204, None, {}
        if route == ("DELETE", "/_sandbox/faults"):
            self.clear_faults()
            return 204, None, {}
        if route[0] == "POST" and route[1] in ("/_sandbox/faults", "/_sandbox/inbound", "/_sandbox/status"):
            try:
                data = json.loads(raw or b"null")
            except ValueError:
                return 400, {"error": {"message": "body must be JSON"}}, {}
            try:
                if route[1] == "/_sandbox/faults":
                    self.add_fault(data)
                    return 201, {"ok": True}, {}
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                if route[1] == "/_sandbox/inbound":
                    status = self.send_inbound(
                        from_phone=data.get("from"),
                        text=data.get("text"),
                        user_id=data.get("user_id"),
                        name=data.get("name") or "Penitip",
                        message=data.get("message"),
                    )
                else:
                    status = self.send_status(
                        data.get("id", ""),
                        data.get("status", ""),
                        data.get("recipient_id", ""),
                        error_code=data.get("error_code"),
                    )
            except (ValueError, TypeError, RuntimeError) as exc:
                return 400, {"error": {"message": str(exc)}}, {}
            return 200, {"webhook_status": status}, {}
        return (
            404,
            GraphError(
                404, 100, f"Unknown path components: {parts.path}", error_type="OAuthException"
            ).body(),
            {},
        )

    def _handle_send(
        self, phone_number_id: str, headers: Any, raw: bytes, arrived: float | None = None
    ) -> _Response | _Drop:
        arrived = arrived if arrived is not None else time.time()
        with self._lock:
            self._requests += 1
        try:
            record, given, fault = self._accept(phone_number_id, headers, raw, arrived)
        except GraphError as err:
            self._sleep(self.latency_ms)
            extra = {}
            if err.code == 190:
                extra["WWW-Authenticate"] = (
                    'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"'
                )
            return err.http_status, err.body(), extra

        if fault is not None and fault["timeout"]:
            self._sleep(fault["latency_ms"] if fault["latency_ms"] is not None else DEFAULT_TIMEOUT_FAULT_MS)
            return _DROP
        delay = (
            fault["latency_ms"] if fault is not None and fault["latency_ms"] is not None else self.latency_ms
        )
        self._sleep(delay)
        if fault is not None and fault["http_status"] is not None and fault["http_status"] >= 400:
            err = GraphError(fault["http_status"], fault["code"], fault["message"], details=fault["message"])
            return err.http_status, err.body(), {}
        if record is None:  # a "mark as read" request
            return 200, {"success": True}, {}

        if self._callback_thread is not None:
            failure = fault["code"] if fault is not None else None
            now = time.monotonic()
            if failure:
                steps = [("failed", failure, now)]
            elif self.status_schedules:
                with self._lock:
                    schedule = self.status_schedules[self._accepted % len(self.status_schedules)]
                    self._accepted += 1
                steps = [(status, None, now + offset / 1000) for status, offset in schedule]
            else:
                steps = [("sent", None, now), ("delivered", None, now)]
            self._callbacks.put((record["id"], record["to"], steps))
        contact = {"input": given, "wa_id": record["to"]}
        if not _PHONE.match(given):
            contact = {"input": given, "user_id": given}
        return (
            200,
            {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": record["id"]}]},
            {},
        )

    def _accept(
        self, phone_number_id: str, headers: Any, raw: bytes, arrived: float
    ) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
        """Authenticate, validate, apply faults and record. Raises GraphError for rejected requests."""
        auth = headers.get("Authorization") or ""
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.access_token.encode()
        ):
            raise GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if phone_number_id != self.phone_number_id:
            raise GraphError(
                400,
                100,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation. Please read the "
                "Graph API documentation at https://developers.facebook.com/docs/graph-api",
                error_type="GraphMethodException",
                subcode=33,
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise _invalid("body", "must be valid JSON") from None
        address, given, message_type = _validate_message(body)

        with self._lock:
            fault = self._match_fault(address or "")
        rejected = fault is not None and (fault["timeout"] or (fault["http_status"] or 0) >= 400)
        if rejected:
            refusal = {
                "to": address,
                "code": None if fault["timeout"] else fault["code"],  # type: ignore[index]
                "timeout": bool(fault["timeout"]),  # type: ignore[index]
                "received_at": arrived,
            }
            with self._lock:
                self._refused.append(refusal)
        if rejected or message_type == "read":
            return None, given, fault
        wamid = self._new_wamid(address)
        record = {"id": wamid, "to": address, "type": message_type, "body": body, "received_at": arrived}
        with self._lock:
            self._messages.append(record)
            self._message_types[wamid] = message_type
            if isinstance(body.get("biz_opaque_callback_data"), str):
                self._callback_data[wamid] = body["biz_opaque_callback_data"]
        return copy.deepcopy(record), given, fault

    # ---- webhooks ---------------------------------------------------------------------------------

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return webhook_envelope(
            value,
            phone_number_id=self.phone_number_id,
            display_phone_number=self.display_phone_number,
            waba_id=self.waba_id,
        )

    def _post_webhook(self, payload: dict[str, Any], client: httpx.Client | None = None) -> int:
        """POST a signed webhook; returns the HTTP status, or 0 when the webhook could not be reached."""
        if not self.webhook_url:
            raise RuntimeError("no webhook_url configured")
        # Compact, ASCII-escaped JSON like Meta sends; the signature covers exactly these bytes.
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if self.app_secret is not None:
            headers["X-Hub-Signature-256"] = sign(self.app_secret, body)
        try:
            if client is not None:
                response = client.post(self.webhook_url, content=body, headers=headers)
            else:
                with httpx.Client(timeout=WEBHOOK_TIMEOUT_S, trust_env=False) as one_off:
                    response = one_off.post(self.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("whatsapp sandbox: webhook POST to %s failed: %r", self.webhook_url, exc)
            return 0
        return response.status_code

    def send_inbound(
        self,
        *,
        from_phone: str | None,
        text: str | None = None,
        user_id: str | None = None,
        name: str = "Penitip",
        message: dict[str, Any] | None = None,
    ) -> int:
        """Deliver an inbound user message to ``webhook_url`` as Meta would; returns our webhook's status.

        ``message`` replaces the generated message object (``from``/``id``/``timestamp`` are filled in when
        it leaves them out), e.g. ``{"type": "image", "image": {...}}``. Returns 0 if the webhook was
        unreachable. Raises ValueError for bad arguments and RuntimeError without a ``webhook_url``.
        """
        if from_phone is None and user_id is None:
            raise ValueError("from_phone or user_id is required")
        if text is None and message is None:
            raise ValueError("text or message is required")
        if message is not None and not isinstance(message, dict):
            raise ValueError("message must be a dict")
        for label, value in (
            ("from_phone", from_phone),
            ("user_id", user_id),
            ("text", text),
            ("name", name),
        ):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{label} must be a string")
        phone = None if from_phone is None else _normalize_address(from_phone)
        contact: dict[str, Any] = {"profile": {"name": name}}
        msg: dict[str, Any] = {}
        if phone is not None:
            contact["wa_id"] = phone
            msg["from"] = phone
        if user_id is not None:
            contact["user_id"] = user_id
            msg["from_user_id"] = user_id
        msg["id"] = self._new_wamid(phone or user_id or "", inbound=True)
        msg["timestamp"] = str(int(time.time()))
        if message is not None:
            msg.update(message)
        else:
            msg.update({"type": "text", "text": {"body": text}})
        return self._post_webhook(self._envelope({"contacts": [contact], "messages": [msg]}))

    def send_status(
        self, wamid: str, status: str, recipient_id: str, *, error_code: int | None = None
    ) -> int:
        """Deliver a status callback (sent/delivered/read/failed) for ``wamid``; returns the webhook's status.

        ``error_code`` is used for "failed" (default 131000). Returns 0 if the webhook was unreachable.
        """
        return self._post_webhook(self._status_payload(wamid, status, recipient_id, error_code))

    def _status_payload(
        self, wamid: str, status: str, recipient_id: str, error_code: int | None
    ) -> dict[str, Any]:
        if status not in STATUS_VALUES:
            raise ValueError(f"status must be one of {', '.join(STATUS_VALUES)}")
        if not isinstance(wamid, str) or not wamid:
            raise ValueError("wamid must be a non-empty string")
        if not isinstance(recipient_id, str) or not recipient_id:
            raise ValueError("recipient_id must be a non-empty string")
        if error_code is not None and (isinstance(error_code, bool) or not isinstance(error_code, int)):
            raise ValueError("error_code must be an integer")
        recipient = _normalize_address(recipient_id)
        now = int(time.time())
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(now),
            "recipient_id": recipient,
        }
        with self._lock:
            callback_data = self._callback_data.get(wamid)
        if callback_data is not None:
            entry["biz_opaque_callback_data"] = callback_data
        if status == "failed":
            code = error_code if error_code is not None else 131000
            title = _error_title(code)
            entry["errors"] = [
                {
                    "code": code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": title},
                    "href": _ERROR_DOCS,
                }
            ]
        elif status in ("sent", "delivered"):
            with self._lock:
                message_type = self._message_types.get(wamid, "template")
                conversation_id = self._conversations.setdefault(recipient, secrets.token_hex(16))
            if message_type == "template":
                pricing = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
            else:
                pricing = {
                    "billable": False,
                    "pricing_model": "PMP",
                    "category": "service",
                    "type": "free_customer_service",
                }
            conversation: dict[str, Any] = {"id": conversation_id}
            if status == "sent":
                conversation["expiration_timestamp"] = str(now + 24 * 3600)
            conversation["origin"] = {"type": pricing["category"]}
            entry["conversation"] = conversation
            entry["pricing"] = pricing
        return self._envelope({"statuses": [entry]})

    def _callback_worker(self) -> None:
        """Posts automatic status callbacks when they are due (in order of due time, then of acceptance),
        off the request threads."""
        due: list[tuple[float, int, str, str, str, int | None]] = []
        order = 0
        # Scheduled statuses are posted by several threads, as Meta posts them: one message's statuses due
        # at the same moment may then arrive in either order (their schedule is the order they are sent in).
        posters = ThreadPoolExecutor(max_workers=8 if self.status_schedules else 1)

        def post(client: httpx.Client, wamid: str, recipient: str, status: str, code: int | None) -> None:
            try:
                self._post_webhook(self._status_payload(wamid, status, recipient, code), client)
            except Exception:  # never let a callback problem kill the worker
                logger.exception("whatsapp sandbox: status callback for %s failed", wamid)

        with httpx.Client(timeout=WEBHOOK_TIMEOUT_S, trust_env=False) as client, posters:
            while True:
                wait = max(0.0, due[0][0] - time.monotonic()) if due else None
                try:
                    item = self._callbacks.get(timeout=wait)
                except queue.Empty:
                    item = ()
                if item is None or self._stopping.is_set():
                    return
                if item:
                    wamid, recipient, steps = item
                    for status, code, at in steps:
                        heapq.heappush(due, (at, order, wamid, recipient, status, code))
                        order += 1
                while due and due[0][0] <= time.monotonic():
                    _, _, wamid, recipient, status, code = heapq.heappop(due)
                    posters.submit(post, client, wamid, recipient, status, code)

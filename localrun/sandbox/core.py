"""The sandbox itself, ``WhatsAppSandbox`` (see the package docstring): its lifecycle, what it records, its
routes (the Cloud API's /messages and the ``/_sandbox/`` control routes) and the webhooks it posts, inbound
messages and status callbacks (the automatic ones from a worker thread, in the order they fall due)."""

from __future__ import annotations

import base64
import contextlib
import copy
import heapq
import hmac
import json
import logging
import queue
import re
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

from localrun.sandbox.faults import DEFAULT_TIMEOUT_FAULT_MS, _check_fault, _match_fault
from localrun.sandbox.graph_errors import _ERROR_DOCS, GraphError, _error_title
from localrun.sandbox.graph_validation import _PHONE, _invalid, _normalize_address, _validate_message
from localrun.sandbox.server import _DROP, _Drop, _Handler, _Response, _Server
from localrun.sandbox.webhooks import (
    DEFAULT_DISPLAY_PHONE_NUMBER,
    DEFAULT_WABA_ID,
    STATUS_VALUES,
    WEBHOOK_TIMEOUT_S,
    _post_signed,
    webhook_envelope,
)

logger = logging.getLogger(__name__)

_MESSAGES_PATH = re.compile(r"^/(v\d+\.\d+)/([^/]+)/messages/?$")


class WhatsAppSandbox:
    """A local stand-in for the WhatsApp Cloud API (see the package docstring)."""

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
        """Add a fault (see the package docs); raises ValueError for a malformed one."""
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
            fault = _match_fault(self._faults, address or "")
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
        return _post_signed(self.webhook_url, self.app_secret, payload, client)

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

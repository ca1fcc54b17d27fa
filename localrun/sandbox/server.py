"""The sandbox's HTTP plumbing: a threading HTTP/1.1 server on ``ThreadingHTTPServer``, whose handler reads
each request (timed by the kernel's receive timestamp where Linux gives it), hands it to the sandbox's routes
and writes the answer in one write, or drops the connection when a route says so."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from localrun.sandbox.graph_errors import GraphError

if TYPE_CHECKING:
    from localrun.sandbox.core import WhatsAppSandbox

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_000_000

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

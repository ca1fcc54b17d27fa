"""moto's server in a process of its own (AWS does not share the functions' CPU or interpreter lock, and the
local runtime's other threads should not share moto's), plus a count of the AWS API calls it served
(service.Operation → count) for the benchmarks' "AWS calls per …" figures, read over HTTP from
``/_localrun/calls``."""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

CALLS_PATH = "/_localrun/calls"
_SPAWN = multiprocessing.get_context("spawn")


def _counting_app() -> Any:
    """moto's WSGI dispatcher, counting calls, with the backend of a JSON-protocol call (X-Amz-Target
    "DynamoDB_20120810.UpdateItem", "AmazonSQS.SendMessageBatch") looked up once per target prefix instead
    of on every request (moto's lookup walks every backend's URL patterns)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    apps_by_prefix: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == CALLS_PATH:
            with lock:
                body = json.dumps(dict(calls)).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            start_response("200 OK", headers)
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            prefix, _, operation = target.partition(".")
            service = "dynamodb" if prefix.startswith("DynamoDB_") else prefix.lower()
            with lock:
                calls[f"{service}.{operation}"] += 1
            backend_app = apps_by_prefix.get(prefix)
            if backend_app is None:
                backend_app = apps_by_prefix[prefix] = dispatcher.get_application(environ)
            return backend_app(environ, start_response)
        if not path.startswith("/moto-api"):
            with lock:
                calls["other"] += 1
        return dispatcher(environ, start_response)

    return app


class _KeepAliveWSGIHandler(BaseHTTPRequestHandler):
    """A minimal HTTP/1.1 WSGI server handler that keeps connections open. Werkzeug's development server (what
    moto ships) answers every request with "Connection: close", so each SDK call paid a TCP connect, a new
    server thread and a close. Here the request body is read whole before the application runs, so the
    connection is always at a request boundary, and the response goes out with a Content-Length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    app: Any = None  # set on the subclass the server is made with

    def log_message(self, *args: Any) -> None:  # moto's per-request access log
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        body = self._body()
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        status_headers: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_headers[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = self.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        payload = b"".join(chunks)
        status, headers = status_headers
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines.append(f"Content-Length: {len(payload) if self.command != 'HEAD' else 0}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def _serve(host: str, port: int, ready: Any) -> None:
    handler = type("Handler", (_KeepAliveWSGIHandler,), {"app": staticmethod(_counting_app())})
    server = _Server((host, port), handler)
    ready.set()
    server.serve_forever()


class MotoProcess:
    """A moto server on 127.0.0.1:port in a spawned child process; state lives (and dies) with it."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self._process: Any = None

    def start(self, timeout: float = 60.0) -> MotoProcess:
        ready = _SPAWN.Event()
        self._process = _SPAWN.Process(
            target=_serve, args=(self.host, self.port, ready), name="moto", daemon=True
        )
        self._process.start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"moto server did not start on {self.url} within {timeout:.0f}s")
        deadline = time.monotonic() + timeout
        while True:  # the socket listens once make_server returned; make sure it answers
            try:
                self.snapshot()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def snapshot(self) -> Counter[str]:
        with urllib.request.urlopen(self.url + CALLS_PATH, timeout=10) as response:  # noqa: S310 - loopback
            return Counter(json.loads(response.read()))

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None

"""moto's server in a process of its own (AWS does not share the functions' CPU or interpreter lock, and the
local runtime's other threads should not share moto's), plus a count of the AWS API calls it served
(service.Operation → count) for the benchmarks' "AWS calls per …" figures, read over HTTP from
``/_localrun/calls``.

Faults: AWS itself throttles, has bad minutes and rejects calls, and moto never does, so the end-to-end tests
could not show what the functions do then. ``POST /_localrun/faults`` with a JSON body::

    {"operation": "dynamodb.UpdateItem", "table": "ContactsTable", "status": 400,
     "error": "ProvisionedThroughputExceededException", "message": "...", "times": 3}

makes the next ``times`` matching calls (null: until cleared) fail with that error, as the service's JSON
protocol shapes it, so that botocore raises a ``ClientError`` with that code — and retries it first when it is
a throttling or 5xx error (its retry mode decides how often). ``operation`` is named as in the call counts
(``dynamodb.BatchWriteItem``, ``amazonsqs.SendMessageBatch``: JSON-protocol calls only); ``table`` (optional)
is a substring of the request's ``TableName``, of a table in its ``RequestItems``, or of its ``QueueUrl``.
SQS keeps its query-protocol codes beside the JSON error's type: ``"error":
"AWS.SimpleQueueService.NonExistentQueue", "type": "QueueDoesNotExist"`` gives that code and the modeled
``QueueDoesNotExist`` exception (``type`` defaults to ``error``). ``"delay_ms": 1500`` makes the matching
calls slow, as AWS calls sometimes are: served 1.5 s late (``"error"`` null or left out) or failed that late.
``"contains": "message_type"`` narrows a fault to the calls whose JSON body holds that string (e.g. the
sender's outcome writes to the log, not the statuses' writes to the same table). ``GET`` lists the faults with
the uses left and how often each fired; ``DELETE`` clears them. The first fault that matches a call (and has
uses left) decides it."""

from __future__ import annotations

import gc
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.client import responses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

CALLS_PATH = "/_localrun/calls"
FAULTS_PATH = "/_localrun/faults"
_SPAWN = multiprocessing.get_context("spawn")
_FAULT_KEYS = {"operation", "table", "error", "type", "status", "message", "times", "delay_ms", "contains"}
# The error body's "__type" as each JSON-protocol service writes it (botocore keeps what follows the "#").
_ERROR_TYPE_PREFIX = {"dynamodb": "com.amazonaws.dynamodb.v20120810#", "amazonsqs": "com.amazonaws.sqs#"}


def _check_fault(fault: Any) -> dict[str, Any]:
    """Validate a fault (see the module docstring) and return the copy that is stored."""
    if not isinstance(fault, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(fault) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    operation, error, table = fault.get("operation"), fault.get("error"), fault.get("table")
    if not isinstance(operation, str) or "." not in operation:
        raise ValueError("fault 'operation' must be 'service.Operation', e.g. 'dynamodb.UpdateItem'")
    delay_ms = fault.get("delay_ms")
    if delay_ms is not None and (
        isinstance(delay_ms, bool) or not isinstance(delay_ms, int | float) or not 0 < delay_ms <= 60_000
    ):
        raise ValueError("fault 'delay_ms' must be a number of milliseconds above 0, at most 60000")
    if (error is not None or delay_ms is None) and (not isinstance(error, str) or not error):
        raise ValueError("fault 'error' must be an error code, e.g. 'ProvisionedThroughputExceededException'")
    if table is not None and (not isinstance(table, str) or not table):
        raise ValueError("fault 'table' must be a non-empty string or null")
    contains = fault.get("contains")
    if contains is not None and (not isinstance(contains, str) or not contains):
        raise ValueError("fault 'contains' must be a non-empty string or null")
    error_type = fault.get("type") or error
    if error_type is not None and not isinstance(error_type, str):
        raise ValueError("fault 'type' must be a string (the modeled error's name)")
    status = fault.get("status", 400)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError("fault 'status' must be a 4xx or 5xx status")
    times = fault.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("fault 'times' must be a positive integer or null (until cleared)")
    message = fault.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("fault 'message' must be a string")
    return {
        "operation": operation,
        "table": table,
        "error": error,
        "type": error_type,
        "status": status,
        "message": message if message is not None else f"{error} (injected by the local runtime)",
        "times": times,
        "delay_ms": delay_ms,
        "contains": contains,
        "injected": 0,
    }


def _request_targets(environ: dict[str, Any]) -> tuple[list[str], bytes]:
    """The table names and queue URL a JSON-protocol request names, and its body (put back for moto)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return [], body
    if not isinstance(request, dict):
        return [], body
    targets = [str(request[key]) for key in ("TableName", "QueueUrl") if key in request]
    if isinstance(request.get("RequestItems"), dict):
        targets += [str(name) for name in request["RequestItems"]]
    return targets, body


def _error_response(service: str, fault: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """The fault as the service would answer it: an AWS JSON-protocol error. SQS speaks JSON but keeps its
    query-protocol codes: botocore takes the ``ClientError`` code from the ``x-amzn-query-error`` header and
    the exception class from ``__type``."""
    error, status = fault["error"], fault["status"]
    body = json.dumps(
        {"__type": _ERROR_TYPE_PREFIX.get(service, "") + fault["type"], "message": fault["message"]}
    )
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-RequestId", f"localrun-fault-{time.monotonic_ns()}"),
        ("x-amzn-ErrorType", fault["type"]),
    ]
    if service == "amazonsqs":
        headers.append(("x-amzn-query-error", f"{error};{'Sender' if status < 500 else 'Receiver'}"))
    return f"{status} {responses.get(status, 'Error')}", headers, body.encode()


def patch_moto_sqs_receive() -> None:
    """Two of moto 5.2.5's SQS costs that made moto the local runtime's bottleneck under a webhook load
    (bench/soak.py), removed without changing what it answers:

    - ReceiveMessage checked each message it hands out against the queue's retention period by computing
      *all* the queue's attributes, approximate counts included (a pass over every message): a receive of 10
      from a queue holding 300 messages cost ~13 ms of CPU. It now reads the retention period directly.
    - Every visibility and delay check (several per message held, on each send, receive and count: SendMessage
      also computes all the queue's attributes) built two datetimes to get the time: 55% of moto's CPU in the
      soak. They now read ``time.time()``, the same clock in the same unit."""
    import time as _time

    from moto.core.utils import unix_time
    from moto.sqs.models import Message, SQSBackend

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention_period + message.sent_timestamp / 1000 > unix_time())

    def visible(self: Any) -> bool:
        return bool(_time.time() * 1000.0 > self.visible_at)

    def delayed(self: Any) -> bool:
        return bool(_time.time() * 1000.0 < self.delayed_until)

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
    Message.visible = property(visible)
    Message.delayed = property(delayed)


def patch_moto_sqs_queue_races() -> None:
    """moto 5.2.5's SQS queue is not safe under the server's threads: ``Queue.delete_message`` rebuilds the
    message list and assigns it back without a lock, so a message sent meanwhile (``add_message`` appends
    under the queue's lock) is lost, and of two deletes at once one undoes the other (the message it deleted
    reappears, in flight, after the visibility timeout, and is delivered again). Under the soak's load the
    inbound queue lost messages and held ~170 revived ones for the full visibility timeout. Real SQS does
    neither. The delete now holds the queue's own (re-entrant) lock, the one ``add_message`` takes, and
    removes the message in place: one pass that stops at it (received messages are the oldest, near the
    front) instead of two passes over the whole queue while every send waits."""
    from moto.sqs.exceptions import ReceiptHandleIsInvalid
    from moto.sqs.models import Queue

    stock_delete = Queue.delete_message
    if getattr(stock_delete, "stock", None):
        return

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return  # already deleted: moto (and SQS) accept it again
            messages = self._messages
            index = next(
                (
                    i
                    for i, m in enumerate(messages)
                    if m.receipt_handle == receipt_handle or receipt_handle in m._old_receipt_handles
                ),
                None,
            )
            if index is None:
                raise ReceiptHandleIsInvalid()
            message = messages.pop(index)
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)

    delete_message.stock = stock_delete  # type: ignore[attr-defined]
    Queue.delete_message = delete_message  # type: ignore[method-assign]


def patch_moto_sqs_send() -> None:
    """moto 5.2.5's SendMessage asks the queue for all its attributes to learn whether it deduplicates by
    content, and all the attributes include the approximate counts: three passes over every message held,
    for each message sent. Behind a backlog of 4,000 inbound messages that made each of the webhook's sends
    slower the longer the soak ran. Only a FIFO queue can deduplicate by content, so for a standard queue the
    send now skips the question (the same answer, without the counts)."""
    from moto.sqs.models import Queue, SQSBackend

    stock_send = SQSBackend.send_message
    if getattr(stock_send, "stock", None):
        return
    stock_attributes = Queue.attributes
    sending = threading.local()

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(sending, "on", False) and not self.fifo_queue:
            return {}  # what send_message reads of it: ContentBasedDeduplication, which only FIFO has
        return stock_attributes.fget(self)  # type: ignore[union-attr]

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        sending.on = True
        try:
            return stock_send(self, *args, **kwargs)
        finally:
            sending.on = False

    send_message.stock = stock_send  # type: ignore[attr-defined]
    attributes.stock = stock_attributes  # type: ignore[attr-defined]
    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]


def _counting_app() -> Any:
    """moto's WSGI dispatcher, counting calls and injecting faults, with the backend of a JSON-protocol call
    (X-Amz-Target "DynamoDB_20120810.UpdateItem", "AmazonSQS.SendMessageBatch") looked up once per target
    prefix instead of on every request (moto's lookup walks every backend's URL patterns)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    calls: Counter[str] = Counter()
    faults: list[dict[str, Any]] = []
    lock = threading.Lock()
    apps_by_prefix: dict[str, Any] = {}

    def answer(start_response: Any, status: str, payload: Any) -> list[bytes]:
        body = b"" if payload is None else json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def control_faults(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "DELETE":
            with lock:
                faults.clear()
            return answer(start_response, "204 No Content", None)
        if method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                fault = _check_fault(json.loads(environ["wsgi.input"].read(length) or b"null"))
            except ValueError as exc:
                return answer(start_response, "400 Bad Request", {"error": str(exc)})
            with lock:
                faults.append(fault)
            return answer(start_response, "201 Created", fault)
        with lock:
            return answer(start_response, "200 OK", {"faults": [dict(f) for f in faults]})

    def injected_fault(service: str, operation: str, environ: dict[str, Any]) -> dict[str, Any] | None:
        """The fault this call must fail with (one use consumed), if any. Only a call whose operation some
        fault names has its body parsed: the others pay one look at a (usually empty) list."""
        name = f"{service}.{operation}"
        with lock:
            if not any(f["operation"] == name for f in faults):
                return None
        targets, body = _request_targets(environ)
        with lock:
            for fault in faults:
                if fault["operation"] != name or fault["times"] == 0:
                    continue
                if fault["table"] is not None and not any(fault["table"] in t for t in targets):
                    continue
                if fault["contains"] is not None and fault["contains"].encode() not in body:
                    continue
                if fault["times"] is not None:
                    fault["times"] -= 1
                fault["injected"] += 1
                return dict(fault)
        return None

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == CALLS_PATH:
            with lock:
                return answer(start_response, "200 OK", dict(calls))
        if path == FAULTS_PATH:
            return control_faults(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            prefix, _, operation = target.partition(".")
            service = "dynamodb" if prefix.startswith("DynamoDB_") else prefix.lower()
            with lock:
                calls[f"{service}.{operation}"] += 1
            fault = injected_fault(service, operation, environ) if faults else None
            if fault is not None and fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000)  # a slow call (the server is threaded)
            if fault is not None and fault["error"] is not None:
                status, headers, body = _error_response(service, fault)
                start_response(status, [*headers, ("Content-Length", str(len(body)))])
                return [body]
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


def _serve(host: str, port: int, report: Any) -> None:
    """The moto process: listen, send ``None`` on ``report`` once ready (or the bind error's errno and
    text, at once, and end), then serve."""
    # Ctrl-C at a terminal reaches the whole process group; the parent stops this process in its turn.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    handler: Any = type("Handler", (_KeepAliveWSGIHandler,), {})
    try:
        server = _Server((host, port), handler)
    except OSError as exc:
        report.send((exc.errno, exc.strerror))
        return
    patch_moto_sqs_receive()
    patch_moto_sqs_queue_races()
    patch_moto_sqs_send()
    handler.app = staticmethod(_counting_app())
    # moto's modules are ~70,000 objects that never die: out of the collector's sight, and collections made
    # rarer, a full collection no longer stalls every call in flight for tens of milliseconds.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    report.send(None)
    server.serve_forever()


def _exit_with_parent() -> None:
    """End the moto process once its parent has ended, however it ended (even killed, so never stopped)."""
    parent = multiprocessing.parent_process()
    assert parent is not None
    parent.join()
    os._exit(0)


class ControlSurface:
    """The calls counter and fault injection of a local AWS server (``CALLS_PATH``, ``FAULTS_PATH``), as
    tests and benchmarks drive them; the server is at ``self.url``. Shared by ``MotoProcess`` and
    ``localrun.dynamo_local.DynaliteProcess``."""

    url: str

    def snapshot(self) -> Counter[str]:
        """Calls served so far, as ``service.Operation`` → count."""
        with urllib.request.urlopen(self.url + CALLS_PATH, timeout=10) as response:  # noqa: S310 - loopback
            return Counter(json.loads(response.read()))

    def add_fault(
        self,
        operation: str,
        error: str | None,
        *,
        table: str | None = None,
        error_type: str | None = None,
        status: int = 400,
        message: str | None = None,
        times: int | None = None,
        delay_ms: float | None = None,
        contains: str | None = None,
    ) -> dict[str, Any]:
        """Fail the next ``times`` calls of ``operation`` (None: until cleared) with ``error``, or (``error``
        None, ``delay_ms`` given) serve them ``delay_ms`` late; ``table``, a substring of the table name or
        queue URL, narrows it, and so does ``contains``, a string the request's body must hold (see the module
        docstring). Returns the fault."""
        fault: dict[str, Any] = {
            "operation": operation,
            "table": table,
            "error": error,
            "status": status,
            "times": times,
        }
        if delay_ms is not None:
            fault["delay_ms"] = delay_ms
        if contains is not None:
            fault["contains"] = contains
        if error_type is not None:
            fault["type"] = error_type
        if message is not None:
            fault["message"] = message
        _check_fault(fault)
        return self._faults_call("POST", fault)

    def faults(self) -> list[dict[str, Any]]:
        """The faults with their uses left (``times``) and how often each fired (``injected``)."""
        return self._faults_call("GET")["faults"]

    def clear_faults(self) -> None:
        self._faults_call("DELETE")

    def _wait_until_answering(self, timeout: float) -> None:
        """Poll the calls counter until the server answers (it listens already); raise after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.snapshot()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _faults_call(self, method: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + FAULTS_PATH, data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ValueError(exc.read().decode(errors="replace")) from None
        return json.loads(body) if body else None


class MotoProcess(ControlSurface):
    """A moto server on host:port (127.0.0.1 by default) in a spawned child process; state lives (and dies)
    with it. ``url`` names 127.0.0.1 when the host is 0.0.0.0 (every address)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        self._process: Any = None

    def start(self, timeout: float = 60.0) -> MotoProcess:
        """Start the server and wait until it answers. Raises OSError (errno EADDRINUSE: the port is taken)
        as soon as the server fails to listen; the child process has ended then."""
        reader, writer = _SPAWN.Pipe(duplex=False)
        self._process = _SPAWN.Process(
            target=_serve, args=(self.host, self.port, writer), name="moto", daemon=True
        )
        try:
            self._process.start()
            writer.close()  # the child holds the only writer now: its death reads as EOF
            if not reader.poll(timeout):
                raise RuntimeError(f"moto server did not start on {self.url} within {timeout:.0f}s")
            try:
                error = reader.recv()
            except EOFError:
                raise RuntimeError(f"moto server on {self.url} exited while starting") from None
            if error is not None:
                raise OSError(error[0], f"moto server cannot listen on {self.host}:{self.port}: {error[1]}")
            self._wait_until_answering(timeout)  # the socket listens; make sure the server answers
            return self
        except BaseException:
            self.stop()
            raise
        finally:
            reader.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None

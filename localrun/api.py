"""The HTTP API as API Gateway (HTTP API, payload format 2.0) serves it: routes from template.yaml, each
request turned into the v2 event the function receives, the function's answer turned back into HTTP."""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from localrun.lambdas import FunctionError, FunctionPool, FunctionTimeout

MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway HTTP API payload limit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # socketserver's default listen backlog (5) resets bursts of new connections


class Route:
    def __init__(self, method: str, path: str, pool: FunctionPool) -> None:
        self.method, self.path, self.pool = method, path, pool
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        self.regex = re.compile(f"^{pattern}$")

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


class LocalHttpApi:
    def __init__(self, routes: list[Route], host: str = "127.0.0.1", port: int = 3000) -> None:
        self.routes = routes
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
            # delayed ACK (~40 ms on Linux) on every keep-alive request.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet: the functions log for themselves
                pass

            def _serve(self) -> None:
                api.serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve  # noqa: N815

        self.server = _Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL; it names 127.0.0.1 when the server listens on 0.0.0.0 (every address)."""
        host, port = self.server.server_address[:2]
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"

    def start(self) -> LocalHttpApi:
        self._thread = threading.Thread(target=self.server.serve_forever, name="http-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; also for a server that never started."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.method == method:
                found = route.regex.match(path)
                if found:
                    return route, found.groupdict()
        return None

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD:
            self._reply(
                request, 413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}'
            )
            return
        body = request.rfile.read(length) if length else b""
        url = urlsplit(request.path)
        matched = self.match(request.command, url.path)
        if matched is None:
            self._reply(request, 404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        route, path_params = matched
        event = build_event(
            route, request.command, url.path, url.query, dict(request.headers.items()), body, path_params
        )
        try:
            result = route.pool.invoke(event)
        except FunctionTimeout as exc:
            # As API Gateway answers when the integration does not answer in time; said where it happened.
            print(f"{request.command} {url.path}: {exc}", file=sys.stderr, flush=True)
            self._reply(request, 504, {"content-type": "application/json"}, b'{"message":"Gateway Timeout"}')
            return
        except FunctionError as exc:
            print(f"{request.command} {url.path}: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
            self._reply(
                request, 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
            )
            return
        status, headers, payload = parse_result(result)
        self._reply(request, status, headers, payload)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)


def build_event(
    route: Route,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    path_params: dict[str, str],
) -> dict[str, Any]:
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": lowered.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": is_b64,
    }
    if params:
        event["queryStringParameters"] = params
    if path_params:
        event["pathParameters"] = path_params
    if body:
        event["body"] = text
    return event


def build_function_url_event(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    url_id: str = "localfunctionurl",
    region: str = "ap-southeast-3",
) -> dict[str, Any]:
    """The event a Lambda function URL sends (Meta's webhook in production, template.yaml ``WebhookUrl``):
    payload format 2.0 like the HTTP API's, but with route key ``$default``, the URL's own domain and no path
    parameters; the function routes on ``rawPath``. Locally the webhook is served on the HTTP API's route;
    tests and the cost report use this to invoke the handler exactly as the function URL does."""
    event = build_event(Route(method, path, None), method, path, query, headers, body, {})  # type: ignore[arg-type]
    event["routeKey"] = "$default"
    context = event["requestContext"]
    context.update(
        routeKey="$default",
        apiId=url_id,
        domainPrefix=url_id,
        domainName=f"{url_id}.lambda-url.{region}.on.aws",
        authentication=None,
    )
    return event


def parse_result(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Payload format 2.0: a dict with statusCode is a full response; anything else is a 200 JSON body."""
    if isinstance(result, dict) and "statusCode" in result:
        headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = ",".join(str(v) for v in values)
        body = result.get("body") or ""
        payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return int(result["statusCode"]), headers, payload
    return 200, {"content-type": "application/json"}, json.dumps(result).encode()

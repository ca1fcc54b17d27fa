"""moto's threaded server, plus a count of the AWS API calls it served (service.Operation → count), for the
benchmarks' "AWS calls per recipient" figures."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class CountingMotoServer(ThreadedMotoServer):
    def __init__(self, ip_address: str = "127.0.0.1", port: int = 5000) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET")
            if target:  # JSON protocols: "DynamoDB_20120810.BatchWriteItem", "AmazonSQS.SendMessageBatch"
                service, _, operation = target.partition(".")
                name = f"{'dynamodb' if service.startswith('DynamoDB') else service.lower()}.{operation}"
            else:
                name = "other" if not environ.get("PATH_INFO", "").startswith("/moto-api") else ""
            if name:
                with self._calls_lock:
                    self.calls[name] += 1
            return app(environ, start_response)

        self._server = make_server(
            self._ip_address, self._port, counting, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def snapshot(self) -> Counter[str]:
        with self._calls_lock:
            return Counter(self.calls)

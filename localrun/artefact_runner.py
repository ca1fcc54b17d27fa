"""One function of the built artefact in a bare interpreter, as Lambda's runtime would load it.

Run as ``python -I -S -B artefact_runner.py FUNCTION_DIR LAYER_DIR HANDLER TIMEOUT``: no site-packages, no
PYTHONPATH, no user site, no ``__pycache__`` written (Lambda's code directories are read-only). ``sys.path``
is the function's directory, the layer's ``python/`` directory and the standard library, nothing else, so a
package that the artefact does not ship cannot be imported. The environment is the caller's (the template's
variables). This file uses the standard library only.

Protocol, one JSON object per line: on start it writes ``{"ready": true, "import_seconds": ...,
"import_connects": [...]}`` (the network connections the import attempted, seen by an audit hook) or
``{"init_error": traceback}``; then for each line read from stdin,
``{"event": path}``, it invokes the handler and writes ``{"result": ...}`` or ``{"error": traceback}``. The
protocol has its own file descriptor: the handler's own stdout (Powertools' JSON logs) goes to stderr."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid


class LambdaContext:
    def __init__(self, name: str, timeout: float, memory_mb: str) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(memory_mb)
        self.invoked_function_arn = f"arn:aws:lambda:local:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "artefact"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    function_dir, layer_dir, handler_name, timeout = sys.argv[1:5]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's prints and logs go to stderr
    sys.stdout = sys.stderr
    sys.path[:0] = [function_dir, layer_dir]
    module_name, _, func_name = handler_name.rpartition(".")
    connects: list[str] = []  # every network address the import tried to reach (it should reach none)
    importing = True

    def audit(event: str, args: tuple) -> None:
        if importing and event in ("socket.connect", "socket.getaddrinfo"):
            target = args[1] if event == "socket.connect" else args[:2]
            connects.append(f"{event} {target!r}")

    sys.addaudithook(audit)
    try:
        started = time.perf_counter()
        module = __import__(module_name)
        handler = getattr(module, func_name)
        import_seconds = time.perf_counter() - started
    except BaseException:
        protocol.write(json.dumps({"init_error": traceback.format_exc(), "import_connects": connects}) + "\n")
        return 1
    importing = False
    protocol.write(
        json.dumps({"ready": True, "import_seconds": import_seconds, "import_connects": connects}) + "\n"
    )
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", module_name)
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        with open(request["event"], encoding="utf-8") as f:
            event = json.load(f)
        # As Lambda's runtime sets it per invocation (X-Ray's Lambda context reads it).
        os.environ["_X_AMZN_TRACE_ID"] = (
            f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=1"
        )
        try:
            result = handler(event, LambdaContext(name, float(timeout), memory))
            reply = {"result": result}
        except BaseException:
            reply = {"error": traceback.format_exc()}
        protocol.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

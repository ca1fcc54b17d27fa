"""Lambda as the cost report bills it: each function's invocations, billed time and log bytes, the stream
that counts what its handlers log, and the context a handler is invoked with (its deadline on the virtual
clock)."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

from bench.cost.clock import VirtualClock


@dataclass
class FunctionUse:
    memory_mb: int
    invocations: int = 0
    billed_ms: int = 0
    log_bytes: int = 0


class CountingStream(io.TextIOBase):
    """Stands in for stdout while handlers run: counts what Lambda would ship to CloudWatch Logs."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


class LambdaContext:
    def __init__(self, name: str, timeout: int, clock: VirtualClock, region: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{name}"
        self.function_version = "$LATEST"
        self.aws_request_id = str(uuid.uuid4())
        self._clock = clock
        self._deadline = clock.time() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.time()) * 1000))

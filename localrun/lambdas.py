"""Lambda-like execution of the template's functions, without Docker.

Each function gets a pool of worker processes ("execution environments"): a worker starts on demand (cold
start), imports the handler once with exactly the function's environment variables, then serves one
invocation at a time. The pool never runs more workers than the function's reserved concurrency. An
invocation that outlives the function's timeout kills its worker, as Lambda does."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from localrun.stack import FunctionSpec

_SPAWN = multiprocessing.get_context("spawn")


class FunctionError(RuntimeError):
    """The handler raised, the worker died, or the invocation timed out."""


class FunctionTimeout(FunctionError):
    """The invocation outlived the function's timeout (its worker was killed, as Lambda does)."""


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def _worker_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Runs in the worker process: import the handler once, then serve invocations until told to stop."""
    import importlib.util
    import sys

    if spec["nice"]:
        os.nice(spec["nice"])
    os.environ.clear()
    os.environ.update(spec["env"])
    for path in reversed(spec["sys_path"]):
        sys.path.insert(0, path)
    module_name, _, func_name = spec["handler"].rpartition(".")
    try:
        location = Path(spec["code_uri"]) / (module_name.replace(".", "/") + ".py")
        module_spec = importlib.util.spec_from_file_location(module_name, location)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        handler = getattr(module, func_name)
        conn.send(("ready", None))
    except BaseException:
        conn.send(("init_error", traceback.format_exc()))
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        event, context_fields = message
        context = LambdaContext(**context_fields)
        try:
            result = handler(event, context)
            conn.send(("ok", result))
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class _Worker:
    def __init__(self, spec: dict[str, Any], start_timeout: float) -> None:
        self.conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=_worker_main, args=(child, spec), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(start_timeout):
            self.kill()
            raise FunctionError(f"{spec['name']}: init did not finish in {start_timeout:.0f}s")
        try:
            status, detail = self.conn.recv()
        except (EOFError, OSError):  # the worker died while importing (killed, or the runtime stopping)
            self.kill()
            raise FunctionError(f"{spec['name']}: worker died during init") from None
        if status != "ready":
            self.kill()
            raise FunctionError(f"{spec['name']}: init failed\n{detail}")

    def kill(self) -> None:
        """Idempotent: a crash test's ``kill_all`` and the invocation that sees the death both call it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


class FunctionPool:
    def __init__(
        self,
        spec: FunctionSpec,
        extra_env: dict[str, str],
        sys_path: list[Path],
        max_concurrency: int,
        nice: int = 0,
    ) -> None:
        """``nice``: how much lower the environments' CPU priority is (``os.nice``; 0: the runtime's own)."""
        self.spec = spec
        self.name = spec.logical_id
        self.max_concurrency = max_concurrency
        env = {**_base_env(), **spec.environment, **extra_env}
        env["AWS_LAMBDA_FUNCTION_NAME"] = spec.logical_id
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(spec.memory_mb)
        env["AWS_LAMBDA_FUNCTION_TIMEOUT"] = str(spec.timeout)
        self._worker_spec = {
            "name": spec.logical_id,
            "env": env,
            "sys_path": [str(spec.code_uri), *(str(p) for p in sys_path)],
            "code_uri": str(spec.code_uri),
            "handler": spec.handler,
            "nice": nice,
        }
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_concurrency)
        self.invocations = 0
        self.cold_starts = 0
        self.errors = 0

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run one invocation; blocks while all `max_concurrency` environments are busy."""
        with self._slots:
            worker = self._take()
            context = {
                "function_name": self.name,
                "memory_limit_in_mb": self.spec.memory_mb,
                "invoked_function_arn": f"arn:aws:lambda:local:123456789012:function:{self.name}",
                "aws_request_id": str(uuid.uuid4()),
                "deadline": time.time() + self.spec.timeout,
            }
            with self._lock:
                self.invocations += 1
            try:
                worker.conn.send((event, context))
                if not worker.conn.poll(self.spec.timeout + 1):
                    self._discard(worker)
                    raise FunctionTimeout(f"{self.name}: task timed out after {self.spec.timeout}s")
                status, result = worker.conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._discard(worker)
                with self._lock:
                    self.errors += 1
                raise FunctionError(f"{self.name}: worker died ({exc!r})") from None
            self._idle.put(worker)
            if status == "error":
                with self._lock:
                    self.errors += 1
                raise FunctionError(f"{self.name}: {result}")
            return result

    def prewarm(self) -> None:
        """Start every environment the pool may run, side by side, before any invocation (as provisioned
        concurrency does): a measurement then sees no cold start."""
        with self._lock:
            missing = self.max_concurrency - len(self._all)
        started: list[_Worker] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                worker = _Worker(self._worker_spec, start_timeout=60)
            except BaseException as exc:  # reported below, in the caller's thread
                errors.append(exc)
                return
            with self._lock:
                started.append(worker)

        threads = [threading.Thread(target=start, daemon=True) for _ in range(missing)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            self._all += started
            self.cold_starts += len(started)
        for worker in started:
            self._idle.put(worker)
        if errors:
            raise errors[0]

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker(self._worker_spec, start_timeout=60)
            with self._lock:
                self._all.append(worker)
                self.cold_starts += 1
            return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid]

    def kill_all(self) -> None:
        """Kill every environment at once (a crash, for fault tests); the next invocation cold-starts."""
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.kill()
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in workers:
            worker.process.join(timeout=2)
            worker.kill()


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT", "PYTHONHASHSEED")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": os.environ.get("POWERTOOLS_DEV", "false"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env

"""One sender instance, sized for Lambda: its CPU per recipient all-in, next to the least a Python process
spends on the same sends, and the sends per second it makes in the CPU share Lambda gives 256 MB and 1,769 MB.

The instance is one process built as the sender function builds itself: ``jastipin.runtime.services(
SenderSettings).sender``, from the function's environment (template.yaml's variables, pointed by localrun at a
moto server for SQS, dynalite for DynamoDB and the WhatsApp sandbox for Graph), the global rate limiter on
(its limit set too high to bind), each outcome written to the notifications log. A product upload goes
through the local runtime's API; the instance takes the fan-out job from the notifications queue
(``Sender.fan_out``, which queues the chunk jobs), then every chunk job (``Sender.send_chunk``), one message
per invocation as the function's batch size of 1 has it, each invocation with the function's timeout as its
deadline. The instance receives and deletes the messages itself (the event source mapping's part): those
calls are left out of its figures, which cover ``parse_job`` and ``fan_out``/``send_chunk`` of each message.

1. CPU per recipient, all-in, warm: a 10,000-participant trip (30,000 participants of other trips in the
   same tables), the sandbox answering after 20 ms; the instance has sent a 500-participant trip's update
   first, so its pools, threads, connections and event loop are started. The instance's own CPU
   (``getrusage(RUSAGE_SELF)``, every thread) over its invocations, divided by the recipients; the wall time
   of those invocations gives recipients/s. Every recipient must have exactly one SENT entry in the log, and
   the sandbox exactly one request per recipient for the job.
2. The floor, in the same run: a minimal asyncio HTTP/1.1 client (``bench/http_clients.py``'s floor) posting
   the bodies the sender posted (taken from the sandbox's record), with the same token, to the same sandbox
   at the same concurrency, in a fresh process of its own. Rounds alternate floor, sender; medians.
3. Sizing: sends/s of one instance with the sandbox answering after 200 ms, the instance confined to the CPU
   Lambda gives (1 vCPU at 1,769 MB, in proportion below: 256 MB is 0.1447 vCPU) by a cgroup v1 CPU quota
   (``cpu.cfs_quota_us`` over a 100 ms period), per size and per concurrency (sends in flight), each run's
   trip sized to last about 25 s. The instance is warmed outside the cgroup (its imports and first requests
   are not what this measures), then moved into it. Without a writable cgroup the figure is computed from
   part 1's CPU per recipient, and the report says so.

    PYTHONPATH=layers/common:. .venv/bin/python -m bench.sender_instance [--recipients N] [--concurrency C]
        [--quick]

About 6 minutes by default; writes bench/results/sender_instance.md (``--quick``: a smaller smoke run that
writes nothing unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import multiprocessing
import os
import resource
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from bench.common import machine, peak_rss_mb, table  # noqa: E402

LATENCY_MS = 20.0  # parts 1 and 2
SIZING_LATENCY_MS = 200.0  # part 3
FULL_VCPU_MB = 1769  # Lambda gives one vCPU at 1,769 MB, in proportion to memory below it
SIZES_MB = (256, 1769)
CFS_PERIOD_US = 100_000
RATE_LIMIT = 100_000  # msg/s: the limiter runs (reservations, DynamoDB writes) but never makes a send wait
TARGET_CPU_MS = 0.5
TARGET_SENDS_256 = 80
WARM_RECIPIENTS = 500  # part 1's warm-up trip
SIZING_WARM_RECIPIENTS = 200  # each sizing instance's warm-up trip (two chunks)
OTHER_TRIPS = ("alpha", "other", "zulu")  # trip ids before, between and after the measured trips'
MIN_SIZING_SECONDS = 20.0


# ---------------------------------------------------------------------------------------------------------
# The instance: a fresh interpreter with the sender function's environment, driven over stdin/stdout.


def serve_instance(log_path: str) -> int:
    """The instance process: builds the production Sender, then serves ``consume`` commands (one JSON line
    each on stdin, the answer one JSON line on the original stdout; the function's own output, its logs,
    goes to ``log_path``)."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)

    def answer(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        import boto3
        from aws_lambda_powertools import Logger

        from jastipin.outbound.delivery import Deadline
        from jastipin.outbound.jobs import parse_job
        from jastipin.runtime import services
        from jastipin.settings import SenderSettings

        # The function's own logger (functions/sender/app.py's): the modules' child loggers write through it.
        function_logger = Logger()
        svc = services(SenderSettings)
        sender = svc.sender
        settings = sender.settings
        poller = boto3.client("sqs")  # the event source mapping's part, not the function's
        timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "30"))
    except Exception:
        answer({"error": traceback.format_exc()})
        return 1
    answer(
        {
            "pid": os.getpid(),
            "send_concurrency": settings.send_concurrency,
            "chunk_size": settings.chunk_size,
            "rate_limit_per_second": settings.rate_limit_per_second,
            "limiter": type(sender.limiter).__name__,
            "whatsapp": f"{type(sender.whatsapp).__module__}.{type(sender.whatsapp).__name__}",
            "timeout": timeout,
            "logger": function_logger.service,
        }
    )

    # SENDER_INSTANCE_PROFILE=FILE: the invocations' CPU profile (the event loop's thread: cProfile sees no
    # other), written as pstats to FILE.<pid> when the instance exits.
    profile_path = os.environ.get("SENDER_INSTANCE_PROFILE")
    profiler = cProfile.Profile(time.process_time) if profile_path else None
    # SENDER_INSTANCE_SAMPLE=FILE: every thread's CPU by function (bench/cpu_sampler.py) over the invocations,
    # per recipient sent, written to FILE.<pid> when the instance exits.
    sample_path = os.environ.get("SENDER_INSTANCE_SAMPLE")
    sampler = None
    if sample_path:
        from bench.cpu_sampler import CpuSampler

        sampler = CpuSampler()
        sampler.start()
    sampled_recipients = 0

    def consume(queue_url: str, limit_seconds: float) -> dict[str, Any]:
        """Every message of the queue, one invocation each, until the queue is empty; the figures cover the
        invocations only."""
        nonlocal sampled_recipients
        found: dict[str, Any] = {
            "cpu": 0.0,
            "wall": 0.0,
            "fan_out_cpu": 0.0,
            "fan_out_wall": 0.0,
            "fan_outs": 0,
            "chunks": 0,
            "queued": 0,
            "sent": 0,
            "outcomes": Counter(),
            "requeued": 0,
        }
        limiter = sender.limiter
        calls, dropped = getattr(limiter, "calls", None), getattr(limiter, "dropped", None)
        give_up = time.monotonic() + limit_seconds
        while True:
            if time.monotonic() > give_up:
                raise TimeoutError(f"queue not empty after {limit_seconds:.0f} s")
            messages = poller.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not messages:
                attributes = poller.get_queue_attributes(
                    QueueUrl=queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                )["Attributes"]
                if not any(int(v) for v in attributes.values()):
                    break
                continue
            for message in messages:
                ends = time.time() + timeout  # this invocation's deadline

                def remaining_ms(ends: float = ends) -> int:
                    return max(0, int((ends - time.time()) * 1000))

                before = resource.getrusage(resource.RUSAGE_SELF)
                started = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                if sampler is not None:
                    sampler.active = True
                job = parse_job(message["Body"])
                if job.is_fan_out:
                    found["queued"] += sender.fan_out(job, Deadline(remaining_ms))
                else:
                    result = sender.send_chunk(job, Deadline(remaining_ms))
                if profiler is not None:
                    profiler.disable()
                if sampler is not None:
                    sampler.active = False
                wall = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                found["cpu"] += cpu
                found["wall"] += wall
                if job.is_fan_out:
                    found["fan_outs"] += 1
                    found["fan_out_cpu"] += cpu
                    found["fan_out_wall"] += wall
                else:
                    found["chunks"] += 1
                    found["outcomes"].update(str(o.status) for o in result.outcomes)
                    found["sent"] += sum(1 for o in result.outcomes if o.status == "sent")
                    sampled_recipients += len(result.outcomes)
                    found["requeued"] += len(result.requeued)
                poller.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if calls is not None:
            found["limiter_calls"] = getattr(limiter, "calls", 0) - calls
        if dropped is not None:
            found["limiter_dropped"] = getattr(limiter, "dropped", 0) - dropped
        found["outcomes"] = dict(found["outcomes"])
        # What the sends have imported by now (the WhatsApp client may import its HTTP library on first use).
        found["http_libraries"] = sorted(m for m in ("aiohttp", "httpx", "urllib3") if m in sys.modules)
        return found

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            if profiler is not None and profile_path:
                profiler.dump_stats(f"{profile_path}.{os.getpid()}")
            if sampler is not None and sample_path:
                sampler.stop()
                Path(f"{sample_path}.{os.getpid()}").write_text(sampler.report(max(1, sampled_recipients)))
            break
        try:
            answer(consume(command["queue_url"], command["limit_seconds"]))
        except Exception:
            answer({"error": traceback.format_exc()})
    return 0


class Instance:
    """The harness's end of a sender instance (see ``serve_instance``)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._stderr = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sender_instance", "--serve-instance", str(log_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.info = self._answer(120)

    @property
    def pid(self) -> int:
        return self.process.pid

    def consume(self, queue_url: str, limit_seconds: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        command = {"op": "consume", "queue_url": queue_url, "limit_seconds": limit_seconds}
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()
        return self._answer(limit_seconds + 60)

    def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            raise TimeoutError(
                f"the sender instance did not answer in {timeout:.0f} s (log: {self.log_path})"
            )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sender instance exited (log: {self.log_path})")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the sender instance failed (log: {self.log_path}):\n{message['error']}")
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "exit"}\n')
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._stderr.close()


# ---------------------------------------------------------------------------------------------------------
# The floor: bench/http_clients.py's minimal asyncio HTTP/1.1 client, at a given concurrency and bodies.


def floor_sends(port: int, path: str, token: str, bodies: list[bytes], concurrency: int, count: int) -> None:
    """``count`` POSTs of ``bodies`` in turn over ``concurrency`` keep-alive connections."""
    from bench.http_clients import asyncio_floor

    asyncio_floor(port, path, token, lambda n: bodies[n % len(bodies)], concurrency, count)


def measure_floor(
    port: int, path: str, token: str, bodies: list[bytes], concurrency: int, count: int
) -> tuple[float, float]:
    """In a fresh process: (CPU seconds, wall seconds) of ``count`` sends, a warm-up of a tenth left out."""
    floor_sends(port, path, token, bodies, concurrency, max(concurrency, count // 10))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    floor_sends(port, path, token, bodies, concurrency, count)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


# ---------------------------------------------------------------------------------------------------------
# The CPU share: a cgroup v1 CPU quota.


def cpu_hierarchy() -> Path | None:
    """The mount point of the cgroup v1 hierarchy with the ``cpu`` controller, if any."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "cgroup" and "cpu" in fields[3].split(","):
                return Path(fields[1])
    return None


class CpuShare:
    """A cgroup whose processes share ``vcpu`` CPUs' worth of time: ``round(vcpu * 100000)`` µs per 100 ms
    period. Removed on exit (its processes moved back to the root group first)."""

    def __init__(self, vcpu: float) -> None:
        root = cpu_hierarchy()
        if root is None:
            raise OSError("no cgroup v1 hierarchy with the cpu controller")
        self.root = root
        self.path = root / f"jastipin-sender-instance-{os.getpid()}-{time.monotonic_ns()}"
        self.quota_us = round(vcpu * CFS_PERIOD_US)

    def __enter__(self) -> CpuShare:  # noqa: PYI034
        self.path.mkdir()
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def stats(self) -> dict[str, int]:
        found = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            found[name] = int(value)
        return found

    def remove(self) -> None:
        if not self.path.exists():
            return
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.root / "cgroup.procs").write_text(pid)
        self.path.rmdir()


def cgroups_writable() -> str | None:
    """None when a CPU quota can be set here, else why not."""
    try:
        with CpuShare(0.5) as share:
            share.stats()
    except OSError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------------------
# The harness.


@dataclass
class Trip:
    trip_id: str
    ids: set[str]


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.stack = contextlib.ExitStack()
        self.trips: dict[str, Trip] = {}
        self.next_phone = 2_000_000
        self.notes: list[str] = []

    # -- the system around the instance -------------------------------------------------------------------
    def start(self) -> None:
        from bench.sender_bench import SandboxProcess
        from localrun.runtime import LocalRuntime, RuntimeConfig, free_port

        self.sandbox = self.stack.enter_context(SandboxProcess(LATENCY_MS))
        self.slow_sandbox = self.stack.enter_context(SandboxProcess(SIZING_LATENCY_MS))
        self.config = RuntimeConfig(
            api_port=free_port(),
            sandbox_port=free_port(),
            moto_port=free_port(),
            dynamodb="dynalite",
            dynamodb_port=free_port(),
            whatsapp_url=self.sandbox.url,  # the runtime starts no sandbox of its own
            status_callbacks=False,
            enable_pollers=False,  # the instance takes its messages itself
            env={"RATE_LIMIT_PER_SECOND": str(self.args.rate_limit), "POWERTOOLS_LOG_LEVEL": "WARNING"},
        )
        self.runtime = self.stack.enter_context(LocalRuntime(self.config))
        self.spec = self.runtime.stack.functions()["SenderFunction"]  # type: ignore[union-attr]
        self.queue_url = self.runtime.queue_url("NotificationsQueue")

    def instance_env(self, whatsapp_url: str, concurrency: int | None, memory_mb: int) -> dict[str, str]:
        """What the sender function's environment is locally (localrun.lambdas.FunctionPool), with the
        benchmark's limit, concurrency and sandbox; its log level is the template's."""
        from localrun import project
        from localrun.lambdas import _base_env

        env = {
            **_base_env(),
            **self.spec.environment,
            **project.function_env(
                self.config,
                self.runtime.stack,  # type: ignore[arg-type]
                whatsapp_url=whatsapp_url,
                moto_url=self.runtime.moto_url,
                dynamodb_url=self.runtime.dynamodb_url,
            ),
        }
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": self.spec.logical_id,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.spec.timeout),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "common"), str(ROOT)]),
                "POWERTOOLS_LOG_LEVEL": self.spec.environment.get("POWERTOOLS_LOG_LEVEL", "INFO"),
            }
        )
        if concurrency:
            env["SEND_CONCURRENCY"] = str(concurrency)
        for name in ("SENDER_INSTANCE_PROFILE", "SENDER_INSTANCE_SAMPLE"):  # where it writes its CPU profile
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def instance(self, name: str, whatsapp_url: str, concurrency: int | None, memory_mb: int) -> Instance:
        instance = Instance(
            self.instance_env(whatsapp_url, concurrency, memory_mb), self.work / f"{name}.log"
        )
        self.stack.callback(instance.close)
        return instance

    def trip(self, trip_id: str, count: int, start: int | None = None) -> Trip:
        from localrun.client import create_trip, seed_participants

        if start is None:
            start, self.next_phone = self.next_phone, self.next_phone + count
        create_trip(self.runtime, trip_id)
        trip = Trip(trip_id, set(seed_participants(self.runtime, trip_id, count, start=start)))
        self.trips[trip_id] = trip
        return trip

    def trip_of(self, count: int) -> Trip:
        for trip in self.trips.values():
            if len(trip.ids) == count and (trip.trip_id == "bench" or trip.trip_id.startswith("size-")):
                return trip
        return self.trip(f"size-{count}", count)

    # -- one product update through one instance ---------------------------------------------------------
    def update(self, instance: Instance, trip: Trip, sandbox: Any, limit_seconds: float) -> dict[str, Any]:
        """Upload a product to ``trip`` and have ``instance`` fan it out and send it; returns the instance's
        figures with the log's and the sandbox's account of the job."""
        from localrun.client import upload_product

        sandbox.clear()
        calls_before = self.runtime.moto.snapshot()
        job_id = upload_product(self.runtime, trip.trip_id, "Action Figure A", 450000)
        found = instance.consume(self.queue_url, limit_seconds)
        calls = self.runtime.moto.snapshot() - calls_before
        found["job_id"] = job_id
        found["recipients"] = len(trip.ids)
        found["dynamodb_calls"] = sum(n for name, n in calls.items() if name.startswith("dynamodb."))
        found["sqs_sends"] = sum(n for name, n in calls.items() if name.startswith("amazonsqs.SendMessage"))
        found.update(self.check(job_id, trip, sandbox))
        return found

    def check(self, job_id: str, trip: Trip, sandbox: Any) -> dict[str, Any]:
        """The log's entries for the job and the sandbox's requests: exactly one SENT entry and one request
        per recipient?"""
        from localrun.client import log_entries

        entries = log_entries(self.runtime, job_id)
        statuses = Counter(e["status"]["S"] for e in entries)
        sent = [e["participant_id"]["S"] for e in entries if e["status"]["S"] == "sent"]
        retried = sum(1 for e in entries if int(e.get("attempts", {}).get("N", "1")) > 1)
        stats = sandbox.http.get("/_sandbox/stats").json()
        messages = [
            m
            for m in sandbox.messages()
            if str(m["body"].get("biz_opaque_callback_data", "")).startswith(f"{job_id}|")
        ]
        to = Counter(m["to"] for m in messages)
        n = len(trip.ids)
        ok = (
            len(entries) == n
            and len(sent) == n
            and set(sent) == trip.ids
            and stats["requests"] == n
            and len(messages) == n
            and len(to) == n
        )
        return {
            "ok": ok,
            "log_entries": len(entries),
            "log_sent": len(sent),
            "log_sent_distinct": len(set(sent)),
            "log_statuses": dict(statuses),
            "log_missing": len(trip.ids - set(sent)),
            "log_retried": retried,
            "sandbox_requests": stats["requests"],
            "sandbox_messages": len(messages),
            "sandbox_duplicates": sum(c - 1 for c in to.values() if c > 1),
            "bodies": [json.dumps(m["body"]).encode() for m in messages[:500]],
        }

    def note_check(self, label: str, found: dict[str, Any]) -> None:
        if not found["ok"]:
            self.notes.append(
                f"{label}: {found['recipients']:,} recipients, log {found['log_entries']:,} entries "
                f"{found['log_statuses']} ({found['log_sent_distinct']:,} distinct SENT, "
                f"{found['log_missing']:,} without SENT); sandbox {found['sandbox_requests']:,} requests, "
                f"{found['sandbox_messages']:,} for the job, {found['sandbox_duplicates']:,} duplicates"
            )
        if found.get("requeued"):
            self.notes.append(f"{label}: {found['requeued']:,} recipients re-queued by send_chunk")
        if found.get("log_retried"):
            self.notes.append(f"{label}: {found['log_retried']:,} log entries with more than one attempt")
        if found.get("fan_outs", 1) != 1:
            self.notes.append(f"{label}: {found['fan_outs']} fan-out invocations (continuations)")


def run_floor(port: int, path: str, token: str, bodies: list[bytes], concurrency: int, count: int) -> tuple:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_floor, (port, path, token, bodies, concurrency, count))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def per_send(found: dict[str, Any], key: str) -> str:
    """The limiter's count ``key`` per recipient, if the limiter keeps it."""
    value = found.get(key)
    return "—" if value is None else f"{value / found['recipients']:.3f}"


def details(part: dict[str, Any], sizing: list[dict[str, Any]]) -> list[str]:
    """The rounds and the sizing runs one by one."""
    lines = [
        "Rounds (sandbox 20 ms):",
        "",
        "| round | floor CPU/send | floor sends/s | sender CPU/recipient | of which fan-out | recipients/s | "
        "SENT entries | sandbox requests | limiter calls/send | slots dropped/send |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (floor, found) in enumerate(zip(part["floors"], part["rounds"], strict=True)):
        n = found["recipients"]
        lines.append(
            f"| {i + 1} | {ms(floor['cpu'])} | {floor['rate']:,.0f} | {ms(found['cpu'] / n)} | "
            f"{ms(found['fan_out_cpu'] / n)} | {n / found['wall']:,.0f} | {found['log_sent']:,} | "
            f"{found['sandbox_requests']:,} | {per_send(found, 'limiter_calls')} | "
            f"{per_send(found, 'limiter_dropped')} |"
        )
    measured = [f for f in sizing if "computed" not in f]
    if measured:
        lines += [
            "",
            "Sizing runs (sandbox 200 ms, CPU quota per 100 ms period):",
            "",
            "| MB | vCPU | concurrency | recipients | seconds | sends/s | bound | CPU/recipient "
            "| vCPU used | periods throttled | limiter calls/send | slots dropped/send | peak MB | SENT "
            "entries |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in measured:
            n, throttle = f["recipients"], f["throttle"]
            lines.append(
                f"| {f['memory_mb']:,} | {f['vcpu']:.4f} | {f['concurrency']} | {n:,} | {f['wall']:.1f} | "
                f"{n / f['wall']:.1f} | {f['bound']:.0f} | {ms(f['cpu'] / n)} | {f['cpu'] / f['wall']:.3f} | "
                f"{throttle.get('nr_throttled', 0):,} of {throttle.get('nr_periods', 0):,} | "
                f"{per_send(f, 'limiter_calls')} | {per_send(f, 'limiter_dropped')} | {f['peak_mb']:.0f} | "
                f"{f['log_sent']:,} |"
            )
    return [*lines, ""]


def git_state() -> str:
    """The commit measured, and the files of the layer changed on top of it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "layers/common/jastipin"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    files = [line[3:].removeprefix("layers/common/jastipin/") for line in changed if line.strip()]
    return head + (
        f" with uncommitted changes to {', '.join(files)} (layers/common/jastipin)" if files else ""
    )


def measure_rounds(bench: Bench, args: argparse.Namespace, measured: Trip, warm: Trip) -> dict[str, Any]:
    """Parts 1 and 2: one instance, warmed, then rounds of floor and sender at the 20 ms sandbox."""
    from localrun.project import LOCAL_SECRETS

    limit = 60 + args.recipients / 20
    instance = bench.instance("part1", bench.sandbox.url, args.concurrency, 256)
    info = instance.info
    concurrency = int(info["send_concurrency"])
    print(f"instance: {info}", flush=True)
    warmed = bench.update(instance, warm, bench.sandbox, limit)
    bench.note_check("warm-up", warmed)
    bodies = warmed["bodies"]
    if not bodies:
        raise RuntimeError("the warm-up sent nothing: no bodies for the floor")
    env = bench.spec.environment
    path = f"/{env['WA_API_VERSION']}/{env['WA_PHONE_NUMBER_ID']}/messages"
    port = int(bench.sandbox.url.rsplit(":", 1)[1])
    token = LOCAL_SECRETS["WA_ACCESS_TOKEN"]
    rounds, floors = [], []
    for r in range(args.rounds):
        bench.sandbox.clear()
        cpu, wall = run_floor(port, path, token, bodies, concurrency, args.floor_sends)
        floors.append({"cpu": cpu / args.floor_sends, "rate": args.floor_sends / wall})
        found = bench.update(instance, measured, bench.sandbox, limit)
        bench.note_check(f"round {r + 1}", found)
        rounds.append(found)
        print(
            f"round {r + 1}: floor {ms(floors[-1]['cpu'])}/send, {floors[-1]['rate']:.0f}/s; sender "
            f"{ms(found['cpu'] / found['recipients'])}/recipient (fan-out "
            f"{ms(found['fan_out_cpu'] / found['recipients'])}), {found['recipients'] / found['wall']:.0f} "
            f"recipients/s, log SENT {found['log_sent']:,}, sandbox {found['sandbox_requests']:,} requests",
            flush=True,
        )
    peak_mb = peak_rss_mb(instance.pid)
    instance.close()
    return {
        "info": {**info, "http_libraries": rounds[-1]["http_libraries"] if rounds else []},
        "concurrency": concurrency,
        "rounds": rounds,
        "floors": floors,
        "peak_mb": peak_mb,
        "body_bytes": statistics.median(len(b) for b in bodies),
    }


def measure_sizing(
    bench: Bench,
    args: argparse.Namespace,
    cpu_per_recipient: float,
    concurrencies: list[int],
    cgroup_problem: str | None,
) -> list[dict[str, Any]]:
    """Part 3: a fresh instance per size and concurrency, at the 200 ms sandbox, in its CPU share."""
    sizing = []
    warm = bench.trip("warm-sizing", SIZING_WARM_RECIPIENTS, start=950_000)
    for memory_mb in args.sizes:
        vcpu = memory_mb / FULL_VCPU_MB
        # Each run's trip is sized to last about --sizing-seconds: from the CPU per recipient the last run at
        # this size measured (part 1's, with a margin for the longer latency, the first time).
        cpu_guess = cpu_per_recipient * 1.6
        for c in concurrencies:
            bound = c / (SIZING_LATENCY_MS / 1000)
            row: dict[str, Any] = {"memory_mb": memory_mb, "vcpu": vcpu, "concurrency": c, "bound": bound}
            if cgroup_problem:
                sizing.append({**row, "computed": min(bound, vcpu / cpu_per_recipient)})
                continue
            expected = min(bound * 0.85, vcpu * 0.9 / cpu_guess)
            count = max(500, min(args.recipients, math.ceil(expected * args.sizing_seconds / 100) * 100))
            trip = bench.trip_of(count)
            label = f"{memory_mb} MB c={c}"
            instance = bench.instance(f"size-{memory_mb}-c{c}", bench.slow_sandbox.url, c, memory_mb)
            bench.note_check(f"{label} warm-up", bench.update(instance, warm, bench.slow_sandbox, 120))
            with CpuShare(vcpu) as share:
                share.add(instance.pid)
                found = bench.update(instance, trip, bench.slow_sandbox, 60 + count / 5)
                throttle = share.stats()
            row.update(found, throttle=throttle, peak_mb=peak_rss_mb(instance.pid))
            instance.close()
            cpu_guess = found["cpu"] / found["recipients"]
            bench.note_check(label, row)
            if found["wall"] < MIN_SIZING_SECONDS <= args.sizing_seconds:
                bench.notes.append(
                    f"{label}: the run lasted {found['wall']:.1f} s, under {MIN_SIZING_SECONDS:.0f} s"
                )
            sizing.append(row)
            print(
                f"{label} ({vcpu:.4f} vCPU): {found['recipients'] / found['wall']:.1f} sends/s over "
                f"{found['wall']:.1f} s, {ms(cpu_guess)} CPU/recipient, throttled "
                f"{throttle.get('nr_throttled', 0)}/{throttle.get('nr_periods', 0)} periods, "
                f"log SENT {found['log_sent']:,}",
                flush=True,
            )
    return sizing


def part1_rows(args: argparse.Namespace, part: dict[str, Any]) -> list[tuple[str, str, str]]:
    n, c, rounds, floors = args.recipients, part["concurrency"], part["rounds"], part["floors"]
    cpu = [f["cpu"] / f["recipients"] for f in rounds]
    fan_out = [f["fan_out_cpu"] / f["recipients"] for f in rounds]
    rate = [f["recipients"] / f["wall"] for f in rounds]
    floor_cpu = [f["cpu"] for f in floors]
    floor_rate = [f["rate"] for f in floors]
    med = statistics.median
    calls = med(f["dynamodb_calls"] / f["recipients"] for f in rounds)
    limiter_calls = [f.get("limiter_calls") for f in rounds]
    dropped = [f.get("limiter_dropped") for f in rounds]
    limiter = ""
    if None not in limiter_calls and None not in dropped:
        limiter = (
            f"; the limiter's {med(x / n for x in limiter_calls):.3f} per send, "  # type: ignore[operator]
            f"{med(dropped):,.0f} slots dropped per round"  # type: ignore[type-var]
        )
    checks = "**yes**, every round"
    if not all(f["ok"] for f in rounds):
        checks = "**no**: " + "; ".join(
            f"round {i + 1}: {f['log_sent']:,} SENT, {f['sandbox_requests']:,} requests"
            for i, f in enumerate(rounds)
        )
    ms_each = ", ".join(f"{v * 1000:.2f}" for v in cpu)
    return [
        (
            f"sender CPU per recipient, all-in (fan-out, sends, limiter, log writes), warm; {n:,} "
            f"recipients, sandbox {LATENCY_MS:.0f} ms, SEND_CONCURRENCY {c}; median of "
            f"{plural(len(rounds), 'round')}",
            f"**{ms(med(cpu))}** ({ms_each})",
            f"≤ {TARGET_CPU_MS} ms",
        ),
        ("… of which the fan-out", ms(med(fan_out)), "—"),
        (
            f"floor CPU per send (minimal asyncio HTTP/1.1, the sender's bodies, {c} connections)",
            f"{ms(med(floor_cpu))} ({', '.join(f'{v * 1000:.2f}' for v in floor_cpu)})",
            "—",
        ),
        ("sender CPU per recipient ÷ floor CPU per send", f"**{med(cpu) / med(floor_cpu):.1f}**", "—"),
        (
            f"recipients/s of the instance ÷ floor sends/s (bound: {c} ÷ {LATENCY_MS:.0f} ms = "
            f"{c / LATENCY_MS * 1000:,.0f}/s)",
            f"{med(rate):,.0f} ({', '.join(f'{v:,.0f}' for v in rate)}) ÷ {med(floor_rate):,.0f} "
            f"= **{med(rate) / med(floor_rate):.2f}**",
            "—",
        ),
        (
            "every recipient exactly one SENT log entry, the sandbox exactly one request each for the job",
            checks,
            f"{n:,} and {n:,}",
        ),
        (
            "DynamoDB calls per recipient (dynalite-counted: fan-out pages, limiter, log reads and writes)",
            f"{calls:.3f}{limiter}",
            "—",
        ),
        (
            "instance peak memory (VmHWM) after the warm-up and the rounds",
            f"{part['peak_mb']:.0f} MB",
            "< 256 MB",
        ),
    ]


def sizing_rows(sizing: list[dict[str, Any]], cpu_per_recipient: float) -> list[tuple[str, str, str]]:
    rows = []
    for found in sizing:
        memory_mb, vcpu, c, bound = found["memory_mb"], found["vcpu"], found["concurrency"], found["bound"]
        label = (
            f"sends/s at {memory_mb:,} MB ({vcpu:.4f} vCPU), sandbox {SIZING_LATENCY_MS:.0f} ms, "
            f"SEND_CONCURRENCY {c}"
        )
        target = f"≥ {TARGET_SENDS_256}" if memory_mb == 256 else "—"
        if "computed" in found:
            measured = (
                f"**{found['computed']:.0f}** computed, not measured: min({bound:.0f}, "
                f"{vcpu:.4f} ÷ {ms(cpu_per_recipient)})"
            )
            rows.append((label, measured, target))
            continue
        rate = found["recipients"] / found["wall"]
        throttle = found["throttle"]
        checks = "checks ok" if found["ok"] else f"log SENT {found['log_sent']:,} of {found['recipients']:,}"
        measured = (
            f"**{rate:.1f}** ({found['recipients']:,} recipients in {found['wall']:.0f} s; bound {c} ÷ "
            f"{SIZING_LATENCY_MS / 1000:g} s = {bound:.0f}; {ms(found['cpu'] / found['recipients'])} CPU per "
            f"recipient, {found['cpu'] / found['wall']:.3f} vCPU used, throttled in "
            f"{throttle.get('nr_throttled', 0):,} of {throttle.get('nr_periods', 0):,} periods; {checks})"
        )
        rows.append((label, measured, target))
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, help="participants of the measured trip (10,000)")
    parser.add_argument("--other", type=int, help="participants of other trips around it (30,000)")
    parser.add_argument("--concurrency", type=int, help="SEND_CONCURRENCY (default: the function's)")
    parser.add_argument("--rounds", type=int, help="floor and sender rounds (3)")
    parser.add_argument("--floor-sends", type=int, help="floor sends per round (5,000)")
    parser.add_argument("--rate-limit", type=float, default=RATE_LIMIT, help="RATE_LIMIT_PER_SECOND")
    parser.add_argument("--sizing-concurrency", help="comma-separated (default: 8, part 1's, 32, 64)")
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(m) for m in v.split(",")],
        default=list(SIZES_MB),
        help="comma-separated function memory sizes in MB (default: 256,1769)",
    )
    parser.add_argument("--sizing-seconds", type=float, help="aimed length of a sizing run (25)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small, one round, no file")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve-instance", metavar="LOG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {
        "recipients": 10_000,
        "other": 30_000,
        "rounds": 3,
        "floor_sends": 5_000,
        "sizing_seconds": 25.0,
    }
    if args.quick:
        defaults = {
            "recipients": 2_000,
            "other": 4_000,
            "rounds": 1,
            "floor_sends": 2_000,
            "sizing_seconds": 10.0,
        }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None and not args.quick:
        args.out = ROOT / "bench" / "results" / "sender_instance.md"
    return args


def main() -> int:
    args = parse_args()
    if args.serve_instance:
        return serve_instance(args.serve_instance)
    from jastipin.settings import SenderSettings

    command = shlex.join([".venv/bin/python", "-m", "bench.sender_instance", *sys.argv[1:]])
    command = f"PYTHONPATH=layers/common:. {command}"
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_start = time.monotonic()
    bench = Bench(args, Path(tempfile.mkdtemp(prefix="sender_instance_")))
    cgroup_problem = cgroups_writable()
    settings_concurrency = SenderSettings.model_fields["send_concurrency"].default
    with bench.stack:
        bench.start()
        template_concurrency = bench.spec.environment.get("SEND_CONCURRENCY")
        print(
            f"SEND_CONCURRENCY: SenderSettings' default {settings_concurrency}, the function's "
            f"{template_concurrency} (template), --concurrency {args.concurrency}; RATE_LIMIT_PER_SECOND "
            f"{args.rate_limit:g}; instance logs in {bench.work}",
            flush=True,
        )
        # The measured trip's participants between other trips' in the same tables.
        for n, trip_id in enumerate(OTHER_TRIPS):
            share = args.other // len(OTHER_TRIPS) + (1 if n < args.other % len(OTHER_TRIPS) else 0)
            bench.trip(trip_id, share, start=1_000_000 + n * 1_000_000)
        measured = bench.trip("bench", args.recipients, start=0)
        warm = bench.trip("warm", WARM_RECIPIENTS, start=900_000)
        print(f"seeded {args.other + args.recipients + WARM_RECIPIENTS:,} participants", flush=True)
        part = measure_rounds(bench, args, measured, warm)
        cpu_per_recipient = statistics.median(f["cpu"] / f["recipients"] for f in part["rounds"])
        if args.sizing_concurrency:
            concurrencies = [int(c) for c in args.sizing_concurrency.split(",")]
        elif args.quick:
            concurrencies = [part["concurrency"]]
        else:
            concurrencies = sorted({8, part["concurrency"], 32, 64})
        sizing = measure_sizing(bench, args, cpu_per_recipient, concurrencies, cgroup_problem)

    info, c = part["info"], part["concurrency"]
    if cgroup_problem:
        bench.notes.append(f"sizing computed, not measured: cgroups are not writable here ({cgroup_problem})")
    if str(settings_concurrency) != str(template_concurrency) and args.concurrency is None:
        bench.notes.append(
            f"SenderSettings' default SEND_CONCURRENCY ({settings_concurrency}) is not the template's "
            f"({template_concurrency}); the function's (the template's) was measured"
        )
    lines = [
        f"Sender instance benchmark, {started_at}; {machine()}; {(time.monotonic() - t_start) / 60:.1f} min.",
        "",
        f"Command: `{command}`",
        "",
        f"Code: {git_state()}. The instance's WhatsApp client {info['whatsapp']} (HTTP libraries "
        f"imported after its sends: {', '.join(info['http_libraries']) or 'none'}), limiter "
        f"{info['limiter']}; SEND_CONCURRENCY {c} (SenderSettings' default {settings_concurrency}, the "
        f"template's {template_concurrency}), CHUNK_SIZE {info['chunk_size']}, RATE_LIMIT_PER_SECOND "
        f"{args.rate_limit:g} (SenderSettings bound it below only, ge=0, and the template's "
        "RateLimitPerSecond has no MaxValue), the function's timeout "
        f"({info['timeout']:g} s) as each invocation's deadline; request bodies of {part['body_bytes']:.0f} "
        "bytes.",
        "",
        f"Parts 1 and 2: {args.other:,} participants of other trips, the measured trip's "
        f"{args.recipients:,}; the instance sent a {WARM_RECIPIENTS}-participant trip's update first; then "
        f"{plural(args.rounds, 'round')} of floor ({args.floor_sends:,} sends, a fresh process each) and "
        "sender (a new product each). Part 3: a fresh instance per row, warmed with a "
        f"{SIZING_WARM_RECIPIENTS}-participant trip outside the cgroup, then moved into a cgroup with "
        "cpu.cfs_quota_us = vCPU × "
        f"{CFS_PERIOD_US:,} per {CFS_PERIOD_US:,} µs period, its trip sized for about "
        f"{args.sizing_seconds:g} s.",
        "",
        table(part1_rows(args, part) + sizing_rows(sizing, cpu_per_recipient)),
        "",
        *details(part, sizing),
    ]
    if bench.notes:
        lines += ["Seen:", *(f"- {note}" for note in bench.notes), ""]
    report = "\n".join(lines)
    if args.out is not None:
        args.out.write_text(report, encoding="utf-8")
    print(report)
    shutil.rmtree(bench.work, ignore_errors=True)  # the instances' logs; kept when the run fails
    return 0


if __name__ == "__main__":
    sys.exit(main())

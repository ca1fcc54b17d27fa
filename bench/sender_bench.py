"""Sender benchmark (issue: reliable, rate-limited delivery at 10,000 participants).

Part 1 — throughput, CPU, memory, AWS calls: a 10,000-participant fan-out through the local runtime (API →
queue → sender workers → WhatsApp sandbox with a fixed simulated latency), rate limit lifted, next to a
fair floor: as many of the sender's requests, posted to the same sandbox by the minimal asyncio client of
``bench/http_clients.py``. Each recipient must be sent exactly once.
Part 2 — rate limit: a fan-out with the limit on (50 msg/s, 3 concurrent senders): the most sends the
sandbox saw in any 1-second window, and the mean rate, each divided by the limit.

    PYTHONPATH=layers/common:. .venv/bin/python bench/sender_bench.py [--recipients 10000] [--latency-ms 20]

Writes bench/results/sender.md. Ratios are measured in one run (the machine is shared and noisy)."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "layers" / "common"),
]

from bench.common import cpu_seconds, machine, max_in_window, peak_rss_mb, table  # noqa: E402
from localrun.client import create_trip, seed_participants, upload_product  # noqa: E402
from localrun.project import LOCAL_SECRETS  # noqa: E402
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port  # noqa: E402

SEND_CONCURRENCY = 32  # SenderSettings' default
SENDERS = 5  # NotificationsQueue's MaximumConcurrency in template.yaml


def floor(sandbox_url: str, count: int) -> tuple[float, float]:
    """The fair floor, in a fresh process: (sends per second, CPU seconds per send) of the minimal asyncio
    HTTP/1.1 client of ``bench/http_clients.py`` (40 keep-alive connections) posting the sender's template
    request to the same sandbox."""
    from bench.http_clients import measure

    port = int(sandbox_url.rsplit(":", 1)[1])
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        cpu, wall = pool.apply(measure, ("asyncio streams", port, count))
    return count / wall, cpu / count


def sender_pids(runtime: LocalRuntime) -> list[int]:
    return runtime.pools["SenderFunction"].pids()


PHONE_NUMBER_ID = "000000000000000"


def _serve_sandbox(port: int, latency_ms: float, ready) -> None:
    from localrun.sandbox import WhatsAppSandbox

    WhatsAppSandbox(
        port=port,
        access_token=LOCAL_SECRETS["WA_ACCESS_TOKEN"],
        phone_number_id=PHONE_NUMBER_ID,
        latency_ms=latency_ms,
    ).start()
    ready.set()
    while True:
        time.sleep(3600)


class SandboxProcess:
    """The WhatsApp sandbox in a process of its own: its work and its arrival times must not wait on the GIL
    of the process that hosts moto and the pollers (that would measure the harness, not the system)."""

    def __init__(self, latency_ms: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = ctx.Process(target=_serve_sandbox, args=(port, latency_ms, ready), daemon=True)
        self.process.start()
        if not ready.wait(30):
            raise RuntimeError("sandbox did not start")
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def __enter__(self) -> SandboxProcess:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.process.kill()

    def count(self) -> int:
        return int(self.http.get("/_sandbox/stats").json()["messages"])

    def clear(self) -> None:
        self.http.delete("/_sandbox/messages")

    def messages(self) -> list[dict]:
        return self.http.get("/_sandbox/messages").json()["messages"]

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return time.perf_counter()
            time.sleep(0.05)
        raise TimeoutError(f"only {self.count()} of {count} messages arrived")


def part1(recipients: int, latency_ms: float) -> list[tuple[str, str, str]]:
    sandbox = SandboxProcess(latency_ms)
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        whatsapp_url=sandbox.url,
        env={"RATE_LIMIT_PER_SECOND": "0"},
    )  # the limit lifted
    with sandbox, LocalRuntime(config) as runtime:
        base_rate, base_cpu = floor(sandbox.url, recipients)
        sandbox.clear()

        # Warm the sender environments (cold starts are not what this measures).
        create_trip(runtime, "warmup")
        seed_participants(runtime, "warmup", SENDERS * 10, start=900_000)
        upload_product(runtime, "warmup")
        sandbox.wait_for(SENDERS * 10, 60)
        runtime.wait_idle(60)
        sandbox.clear()

        create_trip(runtime, "bench")
        seed_participants(runtime, "bench", recipients)
        pids = sender_pids(runtime)
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        runtime_cpu_before = time.process_time()  # this process: pollers, API
        moto_cpu_before = cpu_seconds(runtime.moto.pid)  # type: ignore[union-attr]
        calls_before = runtime.moto.snapshot()  # type: ignore[union-attr]
        t0 = time.perf_counter()
        upload_product(runtime, "bench", "Action Figure A", 450000)
        upload_ms = (time.perf_counter() - t0) * 1000
        t_end = sandbox.wait_for(recipients, 600)
        runtime_cpu = time.process_time() - runtime_cpu_before
        moto_cpu = cpu_seconds(runtime.moto.pid) - moto_cpu_before  # type: ignore[union-attr]
        pool = runtime.pools["SenderFunction"]
        sender_cpu_at_end = sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pool.pids())
        runtime.wait_idle(120)
        calls = runtime.moto.snapshot() - calls_before  # type: ignore[union-attr]
        del calls["amazonsqs.GetQueueAttributes"]  # the benchmark's own idle checks, not the system's
        pids_after = sender_pids(runtime)
        sender_cpu = sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids_after)
        peak = max(peak_rss_mb(pid) for pid in pids_after)
        rate = recipients / (t_end - t0)
        sent = sandbox.count()
        per_recipient = Counter(m["to"] for m in sandbox.messages())
        once = sum(1 for n in per_recipient.values() if n == 1)
        total_calls = sum(calls.values())
        breakdown = ", ".join(f"{name} {count}" for name, count in calls.most_common())

    print(
        f"floor {base_rate:.0f} sends/s, {base_cpu * 1e3:.2f} ms CPU/send; "
        f"end-to-end {rate:.0f} recipients/s, "
        f"sender CPU {sender_cpu / recipients * 1e3:.2f} ms/recipient; {sent} sent; AWS calls: {breakdown}"
    )
    return [
        (
            f"end-to-end rate, limit lifted, {recipients} recipients (≥ 10 × the original design's 46/s)",
            f"**{rate:.0f} recipients/s**",
            "≥ 460/s",
        ),
        (
            "recipients sent exactly once (sandbox's record)",
            f"{once} of {recipients}, {sent - once} other requests",
            f"{recipients} of {recipients}, 0 other",
        ),
        (
            f"upload API answer with {recipients} participants (202, fan-out behind the queue)",
            f"**{upload_ms:.0f} ms**",
            "at once",
        ),
        (
            "end-to-end recipients/s ÷ the floor's sends/s (minimal asyncio client, 40 connections)",
            f"{rate:.0f} ÷ {base_rate:.0f} = **{rate / base_rate:.2f}**",
            "—",
        ),
        (
            "sender workers' CPU per recipient (handler, fan-out, sends, log) ÷ the floor's per send",
            f"{sender_cpu / recipients * 1e3:.2f} ms ÷ {base_cpu * 1e3:.2f} ms "
            f"= **{sender_cpu / recipients / base_cpu:.2f}**",
            "—",
        ),
        (
            "AWS API calls per recipient, counted at the local servers (pollers included; each outcome is "
            "one conditional UpdateItem, the one write unit a batched write would bill too)",
            f"{total_calls} ÷ {recipients} = **{total_calls / recipients:.3f}** ({breakdown})",
            "—",
        ),
        ("sender peak memory (largest worker VmHWM)", f"**{peak:.0f} MB**", "≤ 200 MB"),
        (
            "where the time goes during the fan-out (CPU s; the machine has "
            f"{os.cpu_count()} cores × {t_end - t0:.0f} s wall "
            f"= {(os.cpu_count() or 1) * (t_end - t0):.0f} CPU s)",
            f"sender workers {sender_cpu_at_end:.0f} s; moto server {moto_cpu:.0f} s; pollers + API "
            f"{runtime_cpu:.0f} s",
            "—",
        ),
    ]


def part2(recipients: int, latency_ms: float, limit: int, senders: int) -> list[tuple[str, str, str]]:
    sandbox = SandboxProcess(latency_ms)
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        whatsapp_url=sandbox.url,
        parameters={"RateLimitPerSecond": str(limit)},
        esm_concurrency={"NotificationsQueue": senders},
        env={"CHUNK_SIZE": "100"},
    )
    with sandbox, LocalRuntime(config) as runtime:
        create_trip(runtime, "rate")
        seed_participants(runtime, "rate", recipients)
        upload_product(runtime, "rate")
        sandbox.wait_for(recipients, recipients / limit * 3 + 60)
        times = sorted(m["received_at"] for m in sandbox.messages())
    peak = max_in_window(times)
    # Mean over the sustained part: drop the first and last second (start-up and tail of the backlog).
    steady = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]
    mean = (len(steady) - 1) / (steady[-1] - steady[0])
    print(
        f"rate limit {limit}/s with {senders} senders: max {peak} in any 1 s, "
        f"mean {mean:.1f}/s over {len(times)} sends"
    )
    return [
        (
            f"rate limit on ({limit} msg/s, {senders} concurrent senders): max sends in any 1 s ÷ limit",
            f"{peak} ÷ {limit} = **{peak / limit:.2f}**",
            "≤ 1.0",
        ),
        (
            "… mean send rate ÷ limit (sustained part of the backlog)",
            f"{mean:.1f} ÷ {limit} = **{mean / limit:.2f}**",
            "≥ 0.95",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rate-limit", type=int, default=50)
    parser.add_argument("--rate-recipients", type=int, default=1500)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--only-rate", action="store_true", help="run the rate-limit part only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sender.md"))
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = ([] if args.only_rate else part1(args.recipients, args.latency_ms)) + part2(
        args.rate_recipients, args.latency_ms, args.rate_limit, args.senders
    )
    report = (
        f"Sender benchmark, {started}; {machine()}.\n"
        f"{args.recipients} recipients, sandbox latency {args.latency_ms:.0f} ms, {SENDERS} senders × "
        f"{SEND_CONCURRENCY} concurrent sends; rate-limit part: {args.rate_recipients} recipients.\n\n"
        + table(rows)
        + "\n"
    )
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

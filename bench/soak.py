"""Soak (issue: hardening): a 10,000-recipient fan-out through the local runtime while signed webhooks arrive
at 100/s — 1 in 4 an inbound command (INFO or free text, answered through the queues like any reply), the
rest delivery statuses of messages already sent, duplicates included — all on loopback, bounded in time.

Every consumer runs (sender, inbound function), with the rate limit lifted so that the fan-out and the
webhooks compete for the same two cores. Reports the fan-out's wall time, the webhooks' p50/p99 latency and
errors, and the end state that must hold: every recipient exactly one outcome in the log and one message in
the sandbox, every inbound message exactly one reply, every queue and DLQ empty.

    PYTHONPATH=layers/common:. .venv/bin/python bench/soak.py [--recipients 10000] [--rate 100]

Writes bench/results/soak.md."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from tests.e2e.helpers import create_trip, log_entries, phone, seed_participants, upload_product  # noqa: E402

from bench.common import machine, table  # noqa: E402
from bench.sender_bench import SandboxProcess  # noqa: E402
from bench.webhook_bench import inbound, status  # noqa: E402
from localrun.runtime import LOCAL_SECRETS, LocalRuntime, RuntimeConfig, free_port  # noqa: E402
from localrun.sandbox import sign  # noqa: E402

FINAL = {"sent", "delivered", "read", "failed", "skipped"}


class WebhookLoad:
    """Open-loop webhooks at a fixed rate until stopped: statuses of messages the sandbox has accepted
    (fetched every 2 s) and inbound commands from the trip's participants."""

    def __init__(self, url: str, sandbox_url: str, participants: int, rate: float) -> None:
        self.url, self.participants, self.rate = url, participants, rate
        self.sandbox = httpx.Client(base_url=sandbox_url, timeout=60)
        self.latencies: list[float] = []
        self.kinds: list[str] = []  # "inbound" or "status", one per latency
        self.errors = 0
        self.inbound_ids: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent: list[dict] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> WebhookLoad:
        self._threads = [
            threading.Thread(target=self._refresh, daemon=True),
            threading.Thread(target=self._drive, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _refresh(self) -> None:
        while not self._stop.is_set():
            messages = self.sandbox.get("/_sandbox/messages").json()["messages"]
            with self._lock:
                self._sent = messages
            self._stop.wait(2.0)

    def _body(self, seq: int, rng: random.Random) -> bytes:
        with self._lock:
            sent = self._sent
        if seq % 4 == 0 or not sent:
            wamid = f"wamid.soak-in-{seq}"
            with self._lock:
                self.inbound_ids.append(wamid)
            text = "INFO" if seq % 8 == 0 else "halo kak, masih bisa titip?"
            payload = inbound(rng.randrange(self.participants), seq, text)
            payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = wamid
        else:
            m = rng.choice(sent)
            state = rng.choice(("delivered", "read", "delivered"))
            payload = status(m["id"], m["to"], state, m["body"].get("biz_opaque_callback_data"))
        return json.dumps(payload, separators=(",", ":")).encode()

    def _drive(self) -> None:
        rng = random.Random(11)
        secret = LOCAL_SECRETS["WA_APP_SECRET"]
        client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64))
        start = time.perf_counter()

        def fire(body: bytes) -> None:
            kind = "status" if b'"statuses"' in body else "inbound"
            sent = time.perf_counter()
            try:
                response = client.post(
                    self.url,
                    content=body,
                    headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)},
                )
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            with self._lock:
                self.latencies.append(time.perf_counter() - sent)
                self.kinds.append(kind)
                self.errors += 0 if ok else 1

        with ThreadPoolExecutor(max_workers=64) as pool:
            seq = 0
            while not self._stop.is_set():
                delay = start + seq / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(fire, self._body(seq, rng))
                seq += 1
        client.close()


def _load_main(conn, url: str, sandbox_url: str, participants: int, rate: float) -> None:
    """The load generator's process: runs until told to stop, then sends back what it measured."""
    load = WebhookLoad(url, sandbox_url, participants, rate).start()
    conn.recv()
    load.stop()
    conn.send((load.latencies, load.kinds, load.errors, load.inbound_ids))


class WebhookLoadProcess:
    """``WebhookLoad`` in a process of its own: its threads (and the statuses it builds from the sandbox's
    record) do not share the interpreter lock with the runtime's HTTP API, which runs in this process."""

    def __init__(self, url: str, sandbox_url: str, participants: int, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_load_main, args=(child, url, sandbox_url, participants, rate), daemon=True
        )
        self.latencies: list[float] = []
        self.kinds: list[str] = []
        self.errors = 0
        self.inbound_ids: list[str] = []

    def start(self) -> WebhookLoadProcess:
        self._process.start()
        return self

    def stop(self) -> None:
        self._conn.send("stop")
        self.latencies, self.kinds, self.errors, self.inbound_ids = self._conn.recv()
        self._process.join(timeout=30)


def final_outcomes(runtime: LocalRuntime, job_id: str) -> int:
    """Log entries of the job with a final status, counted by DynamoDB (nothing read into this process)."""
    ddb = runtime.client("dynamodb")
    kwargs = {
        "TableName": runtime.table_name("NotificationsLogTable"),
        "KeyConditionExpression": "job_id = :j",
        "FilterExpression": "#s IN (:a, :b, :c, :d, :e)",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            ":j": {"S": job_id},
            **{f":{k}": {"S": v} for k, v in zip("abcde", sorted(FINAL), strict=True)},
        },
        "Select": "COUNT",
    }
    total = 0
    while True:
        page = ddb.query(**kwargs)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def reply_jobs(runtime: LocalRuntime) -> set[str]:
    """Job ids of the auto-replies in the notifications log (one per inbound message answered)."""
    ddb = runtime.client("dynamodb")
    kwargs = {
        "TableName": runtime.table_name("NotificationsLogTable"),
        "FilterExpression": "begins_with(job_id, :r)",
        "ExpressionAttributeValues": {":r": {"S": "rpl"}},
        "ProjectionExpression": "job_id",
    }
    found: set[str] = set()
    while True:
        page = ddb.scan(**kwargs)
        found |= {item["job_id"]["S"] for item in page["Items"]}
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the sandbox's answer time")
    parser.add_argument("--duration", type=float, default=60.0, help="webhooks arrive for at least this long")
    parser.add_argument("--api-concurrency", type=int, default=None, help="environments per API function")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "soak.md"))
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sandbox = SandboxProcess(args.latency_ms)
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        whatsapp_url=sandbox.url,
        env={"RATE_LIMIT_PER_SECOND": "0", "POWERTOOLS_LOG_LEVEL": "WARNING"},
        **({"api_concurrency": args.api_concurrency} if args.api_concurrency else {}),
    )
    with sandbox, LocalRuntime(config) as runtime:
        assert runtime.api is not None
        create_trip(runtime, "soak")
        seed_participants(runtime, "soak", args.recipients)
        load = WebhookLoadProcess(
            runtime.api.url + "/api/webhooks/whatsapp", sandbox.url, args.recipients, args.rate
        ).start()
        load_started = time.perf_counter()
        time.sleep(5)  # webhooks first (inbound only: nothing sent yet), then the fan-out joins in
        t0 = time.perf_counter()
        job_id = upload_product(runtime, "soak", "Soak Test Tumbler", 250000)
        deadline = time.monotonic() + args.timeout
        while True:  # the sandbox's count first (cheap), then the log's (a server-side count)
            if sandbox.count() >= args.recipients and final_outcomes(runtime, job_id) >= args.recipients:
                break
            if time.monotonic() > deadline:
                done = final_outcomes(runtime, job_id)
                raise TimeoutError(f"only {done} of {args.recipients} outcomes after {args.timeout:.0f} s")
            time.sleep(0.5)
        fan_out_s = time.perf_counter() - t0
        time.sleep(max(0.0, args.duration - (time.perf_counter() - load_started)))
        load.stop()
        webhook_s = time.perf_counter() - load_started
        runtime.wait_idle(args.timeout, settle=2.0)  # the inbound backlog drains after the load
        # The end state.
        entries = log_entries(runtime, job_id)
        outcomes = Counter(e["status"]["S"] for e in entries)
        messages = sandbox.messages()
        product = Counter(  # the fan-out's messages carry its log key "<job id>|<participant id>"
            m["to"] for m in messages if str(m["body"].get("biz_opaque_callback_data", "")).startswith(job_id)
        )
        duplicates = sum(n - 1 for n in product.values())
        wanted = {phone(n).lstrip("+") for n in range(args.recipients)}
        missing = len(wanted - set(product))
        replies = reply_jobs(runtime)
        depths = runtime.queue_depths()
        calls = runtime.moto.snapshot()
    print("AWS calls during the soak:", ", ".join(f"{op} {n}" for op, n in calls.most_common(12)))

    for kind in ("status", "inbound"):
        of_kind = sorted(t for t, k in zip(load.latencies, load.kinds, strict=True) if k == kind)
        if of_kind:
            print(
                f"{kind} webhooks: {len(of_kind)}, p50 {of_kind[len(of_kind) // 2] * 1000:.0f} ms, "
                f"p99 {of_kind[int(len(of_kind) * 0.99) - 1] * 1000:.0f} ms"
            )
    latencies = sorted(load.latencies)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    dlq = sum(n for q, n in depths.items() if q.endswith("DLQ"))
    rows = [
        (
            f"fan-out of {args.recipients:,} recipients under {args.rate:.0f} webhooks/s",
            f"**{fan_out_s:.0f} s** ({args.recipients / fan_out_s:.0f} recipients/s)",
            "—",
        ),
        (
            "webhooks: p50 / p99 latency, errors",
            f"**{p50:.0f} ms / {p99:.0f} ms**, **{load.errors}** errors of {len(latencies):,} "
            f"({len(latencies) / webhook_s:.0f}/s for {webhook_s:.0f} s)",
            "p99 ≤ 100 ms, 0 errors",
        ),
        (
            "recipients with exactly one outcome in the log",
            f"**{len(entries):,} of {args.recipients:,}** "
            f"({', '.join(f'{k} {v}' for k, v in outcomes.items())})",
            "all",
        ),
        (
            "product messages in the sandbox: missing / duplicates",
            f"**{missing} / {duplicates}**",
            "0 / ≤ guarantee",
        ),
        (
            "inbound messages answered (one reply job each)",
            f"**{len(replies):,} of {len(load.inbound_ids):,}**",
            "all",
        ),
        ("messages left in queues / DLQs at the end", f"**{sum(depths.values()) - dlq} / {dlq}**", "0 / 0"),
    ]
    report = (
        f"Soak, {started}; {machine()}.\nLocal runtime, every consumer running, rate limit lifted, "
        f"sandbox answering in {args.latency_ms:.0f} ms.\n\n" + table(rows) + "\n"
    )
    Path(args.out).write_text(report)
    print(report)
    ok = not load.errors and missing == 0 and len(replies) == len(load.inbound_ids) and dlq == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Webhook benchmark (issue: complete, safe inbound handling).

Through the local runtime: a mix of signed inbound messages and delivery statuses (3 statuses — sent,
delivered, read — per outbound message, duplicates and out-of-order included) sent open-loop at a fixed rate,
with every queue consumer stopped so that only the webhook's own work is timed and counted (on AWS the
consumers run on other machines; here they would share the two cores). Reports p50/p99 latency, errors and
AWS calls per webhook. Then the inbound function is started on what the webhook queued: every inbound message
must be handled (one reply each) and the statuses applied, with the time that took and its AWS calls. Last,
the webhook handler module's cold import (and, for information, that plus what its first request imports and
builds) next to a bare ``import boto3``, each in fresh interpreters, median of several runs.
``--imports-only`` runs just that part.

    PYTHONPATH=layers/common:. .venv/bin/python bench/webhook_bench.py [--rate 100] [--seconds 30]

Writes bench/results/webhook.md."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from bench.common import machine, table  # noqa: E402
from localrun.client import create_trip, phone, seed_participants, upload_product  # noqa: E402
from localrun.project import LOCAL_SECRETS  # noqa: E402
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port  # noqa: E402
from localrun.sandbox import sign, webhook_envelope  # noqa: E402

PHONE_NUMBER_ID = "000000000000000"


def envelope(value: dict) -> dict:
    return webhook_envelope(value, phone_number_id=PHONE_NUMBER_ID)


def inbound(n: int, seq: int, text: str) -> dict:
    wa_id = phone(n).lstrip("+")
    return envelope(
        {
            "contacts": [{"profile": {"name": f"Penitip {n}"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": f"wamid.bench-in-{seq}",
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def status(wamid: str, to: str, state: str, callback_data: str | None) -> dict:
    entry = {"id": wamid, "status": state, "timestamp": str(int(time.time())), "recipient_id": to}
    if callback_data:  # Meta echoes the message's biz_opaque_callback_data in its statuses
        entry["biz_opaque_callback_data"] = callback_data
    if state != "read":
        entry["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_customer_service",
        }
    return envelope({"statuses": [entry]})


def build_requests(count: int, outbound: list[dict], participants: int, slug: str) -> list[bytes]:
    rng = random.Random(7)
    bodies: list[bytes] = []
    statuses = [
        (m["id"], m["to"], s, m["body"].get("biz_opaque_callback_data"))
        for m in outbound
        for s in ("sent", "delivered", "read")
    ]
    rng.shuffle(statuses)  # out of order, as Meta delivers them
    commands = ["INFO", "halo kak, masih bisa titip?", f"JOIN {slug}", "info " + slug]
    for i in range(count):
        if i % 4 == 0:
            body = inbound(rng.randrange(participants), i, commands[(i // 4) % len(commands)])
        else:
            body = status(*statuses[i % len(statuses)])  # wraps around: duplicates included
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


def queue_depth(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def load(url: str, bodies: list[bytes], rate: float, secret: str) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def fire(index: int, start: float) -> None:
        nonlocal errors
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body = bodies[index]
        sent = time.perf_counter()
        try:
            response = client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)},
            )
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        elapsed = time.perf_counter() - sent
        with lock:
            latencies.append(elapsed)
            errors += 0 if ok else 1

    start = time.perf_counter() + 0.5
    with ThreadPoolExecutor(max_workers=64) as pool:
        for index in range(len(bodies)):
            pool.submit(fire, index, start)
    client.close()
    return latencies, errors


def load_from_another_process(
    url: str, bodies: list[bytes], rate: float, secret: str
) -> tuple[list[float], int]:
    """``load`` in a process of its own, as Meta is: the client's threads must not share an interpreter lock
    with the local runtime's HTTP API (this process), or the latency measured would include waiting for it."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(load, (url, bodies, rate, secret))


IMPORT_BOTO3 = "import time; t = time.perf_counter(); import boto3; print(time.perf_counter() - t)"
IMPORT_WEBHOOK = """
import importlib.util, os, sys, time
os.environ.update({name: "bench" for name in sys.argv[2].split()})  # every setting without a default
os.environ["AWS_DEFAULT_REGION"] = "ap-southeast-3"
sys.path[:0] = [sys.argv[1] + "/functions/webhook", sys.argv[1] + "/layers/common"]
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", sys.argv[1] + "/functions/webhook/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
imported = time.perf_counter() - t
module.this().intake  # what the first POST imports and builds (boto3 clients, the queue)
print(imported, time.perf_counter() - t)
"""


def cold_imports(runs: int) -> tuple[float, float, float]:
    """Medians over fresh interpreters: bare ``import boto3``; the webhook module's import; that import plus
    what its first request imports and builds."""
    from jastipin.settings import SECRET_NAMES, WebhookSettings

    required = [name for name, field in WebhookSettings.model_fields.items() if field.is_required()]
    env_names = " ".join(name.upper() for name in [*required, *SECRET_NAMES])
    boto3_samples, module_samples, first_request_samples = [], [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IMPORT_BOTO3], capture_output=True, text=True, check=True)
        boto3_samples.append(float(out.stdout.split()[-1]))
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_WEBHOOK, str(ROOT), env_names],
            capture_output=True,
            text=True,
            check=True,
        )
        module_s, first_s = (float(v) for v in out.stdout.split()[-2:])
        module_samples.append(module_s)
        first_request_samples.append(first_s)
    medians = (statistics.median(v) for v in (boto3_samples, module_samples, first_request_samples))
    return tuple(medians)  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "webhook.md"))
    parser.add_argument("--imports-only", action="store_true", help="measure the cold imports only")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.imports_only:
        boto3_s, module_s, first_s = cold_imports(args.import_runs)
        print(
            f"import boto3 {boto3_s * 1000:.0f} ms; webhook module {module_s * 1000:.0f} ms "
            f"({module_s / boto3_s:.2f}x); with its first request {first_s * 1000:.0f} ms "
            f"({first_s / boto3_s:.2f}x)"
        )
        return 0
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        status_callbacks=False,
        env={"RATE_LIMIT_PER_SECOND": "0"},
    )
    with LocalRuntime(config) as runtime:
        assert runtime.sandbox is not None and runtime.moto is not None and runtime.api is not None
        create_trip(runtime, "hook")
        seed_participants(runtime, "hook", args.participants)
        upload_product(runtime, "hook")
        deadline = time.monotonic() + 120
        while len(runtime.sandbox.messages()) < args.participants and time.monotonic() < deadline:
            time.sleep(0.2)
        outbound = runtime.sandbox.messages()
        runtime.wait_idle(60)
        runtime.stop_pollers(wait=True)  # time and count the webhook's own work only
        count = int(args.rate * args.seconds)
        bodies = build_requests(count, outbound, args.participants, "hook")
        url = runtime.api.url + "/api/webhooks/whatsapp"
        secret = LOCAL_SECRETS["WA_APP_SECRET"]
        # Warm every webhook environment first, all at once (cold starts are measured separately below).
        pool = runtime.pools["WebhookFunction"]
        # Statuses only: a warmed-up inbound message would be queued twice (harmless, but the duplicate in
        # flight waits out the visibility timeout before it finds the message handled).
        load(url, [b for b in bodies if b'"statuses":[{' in b][:40], 1000, secret)  # queued, applied below
        assert pool.cold_starts == runtime.config.api_concurrency, pool.cold_starts
        before = runtime.moto.snapshot()
        t0 = time.perf_counter()
        latencies, errors = load_from_another_process(url, bodies, args.rate, secret)
        wall = time.perf_counter() - t0
        calls = runtime.moto.snapshot() - before
        del calls["amazonsqs.GetQueueAttributes"]
        assert pool.cold_starts == runtime.config.api_concurrency, "a cold start during the measurement"
        # What the webhook queued: the inbound function handles it, one reply per inbound message, and
        # applies the statuses (those that can change the log, warm-up's included).
        inbound_ids = {b for b in bodies if b'"messages":[{' in b}
        warm_up = [b for b in bodies if b'"statuses":[{' in b][:40]
        queued_statuses = sum(
            s["status"] in ("delivered", "read", "failed")
            for b in [*bodies, *warm_up]
            for e in json.loads(b)["entry"]
            for c in e["changes"]
            for s in c["value"].get("statuses", [])
        )
        sqs = runtime.client("sqs")
        before = runtime.moto.snapshot()
        t1 = time.perf_counter()
        runtime.start_pollers({"InboundFunction"})
        runtime.wait_idle(300, settle=1.0, queues={"InboundQueue"})
        drained = time.perf_counter() - t1 - 1.0
        runtime.stop_pollers(wait=True)
        inbound_calls = runtime.moto.snapshot() - before
        replies = queue_depth(sqs, runtime.queue_url("NotificationsQueue"))
        dlq = queue_depth(sqs, runtime.queue_url("InboundDLQ"))
    boto3_s, module_s, first_s = cold_imports(args.import_runs)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    total_calls = sum(calls.values())
    breakdown = ", ".join(f"{name} {n}" for name, n in calls.most_common())
    for noise in ("amazonsqs.GetQueueAttributes", "amazonsqs.ReceiveMessage"):  # the pollers' own calls
        inbound_calls.pop(noise, None)
    inbound_total = sum(inbound_calls.values())
    inbound_breakdown = ", ".join(f"{name} {n}" for name, n in inbound_calls.most_common())
    rows = [
        (
            f"latency at {args.rate:.0f} webhooks/s for {args.seconds:.0f} s: p50 / p99",
            f"**{p50:.1f} ms / {p99:.1f} ms** (max {latencies[-1] * 1000:.0f} ms)",
            "p99 ≤ 100 ms",
        ),
        ("errors (non-200 or no answer)", f"**{errors}** of {len(latencies)}", "0"),
        ("achieved rate", f"{len(latencies) / wall:.1f} webhooks/s", f"{args.rate:.0f}"),
        (
            "AWS calls per webhook (1 inbound : 3 statuses)",
            f"{total_calls} ÷ {count} = **{total_calls / count:.2f}** ({breakdown})",
            "—",
        ),
        (
            "inbound messages and statuses handled afterwards by the inbound function (one reply each; DLQ)",
            f"**{replies} of {len(inbound_ids)}** replies queued, {queued_statuses:,} statuses applied, in "
            f"{drained:.1f} s ({(len(inbound_ids) + queued_statuses) / max(drained, 0.001):.0f} records/s); "
            f"DLQ {dlq}",
            "all",
        ),
        (
            "AWS calls of the inbound function (messages ~6 each, statuses 1 each)",
            f"{inbound_total} for {len(inbound_ids)} messages and {queued_statuses:,} statuses "
            f"({inbound_breakdown})",
            "—",
        ),
        (
            "cold import: webhook handler module ÷ bare `import boto3`",
            f"{module_s * 1000:.0f} ms ÷ {boto3_s * 1000:.0f} ms = **{module_s / boto3_s:.2f}**",
            "≤ 1.5",
        ),
        (
            "… plus what its first request imports and builds (boto3 clients, the queue)",
            f"{first_s * 1000:.0f} ms ÷ {boto3_s * 1000:.0f} ms = {first_s / boto3_s:.2f}",
            "—",
        ),
    ]
    report = (
        f"Webhook benchmark, {started}; {machine()}.\n{count} webhooks (1 in 4 an inbound command, the rest "
        f"statuses of {len(outbound)} outbound messages), open loop; queue consumers stopped during the "
        "load.\n\n" + table(rows) + "\n"
    )
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

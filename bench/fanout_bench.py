"""Fan-out at the seed's scale and beyond: one product update to a trip of N participants through the local
runtime, with other trips' participants in the same table, every participant ending with one outcome.

    PYTHONPATH=layers/common:. .venv/bin/python -m bench.fanout_bench [--participants 10000 100000]
        [--other 40000] [--sender-timeout 30] [--window open|closed] [--dynamodb dynalite|moto]

For each size: a fresh runtime, ``--other`` participants of other trips bulk-loaded first, then the trip's
own; the product upload's answer time; then until every participant has one final outcome in the log: the
wall time, the sender's invocations (fan-out and chunks), the fan-out's hand-overs (continuations, from
``JobsTable``), outcomes (and any participant with none or two), invocations that hit the timeout, and the
DLQs. ``--window closed`` (the default at 100,000) leaves everyone outside the 24-hour window, so every
outcome is a logged skip and the run measures the fan-out and the bookkeeping rather than the sandbox;
``open`` sends each a message through the sandbox (rate limit lifted). Writes bench/results/fanout.md."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine
from localrun.client import create_trip, log_entries, seed_participants, upload_product
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port


def fan_out(size: int, other: int, window: str, sender_timeout: int | None, extra: dict) -> dict:
    env = {"RATE_LIMIT_PER_SECOND": "0"}
    config = RuntimeConfig(
        api_port=free_port(), sandbox_port=free_port(), moto_port=free_port(), env=env, **extra
    )
    with LocalRuntime(config) as runtime:
        if sender_timeout:
            runtime.pools["SenderFunction"].spec.timeout = sender_timeout
        hours = 1.0 if window == "open" else 48.0
        started = time.monotonic()
        create_trip(runtime, "other")
        seed_participants(runtime, "other", other, start=1_000_000, inbound_hours_ago=hours)
        create_trip(runtime, "big")
        ids = seed_participants(runtime, "big", size, inbound_hours_ago=hours)
        seeded = time.monotonic() - started
        t0 = time.monotonic()
        job_id = upload_product(runtime, "big")
        answered = time.monotonic() - t0
        deadline = t0 + max(600, size / 20)
        entries: list[dict] = []
        while time.monotonic() < deadline:
            entries = log_entries(runtime, job_id)
            if len(entries) >= size:
                break
            time.sleep(2)
        wall = time.monotonic() - t0
        runtime.wait_idle(timeout=120)
        pool = runtime.pools["SenderFunction"]
        progress = (
            runtime.client("dynamodb")
            .get_item(TableName=runtime.table_name("JobsTable"), Key={"job_id": {"S": job_id}})
            .get("Item", {})
        )
        per_participant = Counter(e["participant_id"]["S"] for e in entries)
        dlq = {q: n for q, n in runtime.queue_depths().items() if q.endswith("DLQ") and n}
        return {
            "size": size,
            "other": other,
            "seeded_s": seeded,
            "answered_ms": answered * 1000,
            "wall_s": wall,
            "invocations": pool.invocations,
            "timeouts": pool.errors,
            "chunks": int(progress.get("next_chunk", {}).get("N", 0)),
            "continuations": int(progress.get("continuations", {}).get("N", 0)),
            "outcomes": len(entries),
            "missing": len(set(ids) - set(per_participant)),
            "twice": sum(1 for n in per_participant.values() if n > 1),
            "statuses": dict(Counter(e["status"]["S"] for e in entries)),
            "dlq": dlq,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--other", type=int, default=40_000)
    parser.add_argument("--window", choices=["open", "closed"], default="closed")
    parser.add_argument("--sender-timeout", type=int, default=None, help="seconds (template: 30)")
    parser.add_argument("--dynamodb", choices=["dynalite", "moto"], default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fanout.md"))
    args = parser.parse_args(argv)
    extra = {"dynamodb": args.dynamodb} if args.dynamodb else {}
    rows = []
    for size in args.participants:
        result = fan_out(size, args.other, args.window, args.sender_timeout, extra)
        print(result, file=sys.stderr)
        rows.append(result)
    lines = [
        f"Fan-out benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}.",
        f"`python -m bench.fanout_bench --participants {' '.join(map(str, args.participants))} --other "
        f"{args.other} --window {args.window}`"
        + (f" --sender-timeout {args.sender_timeout}" if args.sender_timeout else "")
        + (f" --dynamodb {args.dynamodb}" if args.dynamodb else "")
        + ": one product update through the local runtime, rate limit lifted, "
        f"{args.other:,} participants of another trip in the table.",
        "",
        "| participants | upload answer | until all logged | sender invocations | chunks | hand-overs "
        "| outcomes (missing / twice) | timeouts | DLQ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['answered_ms']:.0f} ms | {r['wall_s']:.0f} s | {r['invocations']} "
            f"| {r['chunks']} | {r['continuations']} | {r['outcomes']:,} ({r['missing']} / {r['twice']}) "
            f"| {r['timeouts']} | {sum(r['dlq'].values())} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The broadcast estimate at 100, 10,000 and 100,000 participants, with other trips in the table, through the
local runtime's HTTP API: answered from the kept audience counts (``jastipin.audience_counts``), against a
full count of the same audience (what the estimate did before: read every participant and contact).

    PYTHONPATH=layers/common:. .venv/bin/python -m bench.estimate_bench [--sizes 100 10000 100000]
        [--other 40000] [--requests 30] [--dynamodb dynalite|moto]

One runtime: ``--other`` participants of another trip, then each trip, all written in bulk with their
activity spread over 40 days (a quarter joined 3 days ago, a quarter 10 days ago, a quarter 20 days ago, a
quarter 35 days ago; every tenth has written in the last hour). The trips are counted once with ``rebuild``
(as after a bulk import; its time is reported). Then, per trip: ``--requests`` estimates over HTTP (p50, p95,
max), for 7 and 30 days, marketing and utility templates, each compared with a full count of the same
audience in this process (its time is the baseline); a marketing broadcast to the trip (time to its 202;
queued, not sent: no queue consumer runs); and, for the smallest trip, 20 participants joining and 5 stopping
over WhatsApp and the estimate after them.
Writes bench/results/estimate.md."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import machine
from jastipin import audience
from jastipin.data.models import ALL_MODELS, Trip
from localrun.client import API_AUTH, create_trip, phone, rebuild_audience, seed_participants
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "estimate.md"
SPREAD = (3 * 24, 10 * 24, 20 * 24, 35 * 24)  # hours since joining, a quarter each


def seed(runtime: LocalRuntime, trip: str, size: int, start: int) -> None:
    quarter = size // 4
    for i, hours in enumerate(SPREAD):
        n = quarter if i < 3 else size - 3 * quarter
        base = start + i * quarter
        recent = n // 10
        seed_participants(runtime, trip, recent, start=base, inbound_hours_ago=0.5, joined_hours_ago=hours)
        seed_participants(
            runtime, trip, n - recent, start=base + recent, inbound_hours_ago=hours, joined_hours_ago=hours
        )


def bind(runtime: LocalRuntime) -> None:
    """This process reads the runtime's tables (for the full counts)."""
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = runtime.dynamodb_url
    os.environ.setdefault("AWS_DEFAULT_REGION", runtime.config.region)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    for model in ALL_MODELS.values():
        logical = {
            "trips": "TripsTable",
            "participants": "ParticipantsTable",
            "contacts": "ContactsTable",
            "audience": "AudienceTable",
        }.get(model.Meta.table_name, model.Meta.table_name)
        model.Meta.table_name = logical
        model._connection = None


def timed_estimates(client: httpx.Client, trip: str, query: str, n: int) -> tuple[list[float], dict]:
    times, body = [], {}
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(f"/api/trips/{trip}/broadcasts/estimate?{query}")
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.text
        body = response.json()
    return times, body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(sizes: list[int], other: int, requests: int, dynamodb: str) -> list[dict]:
    # No queue consumers: the broadcasts queued here are not what is measured, and their fan-outs would
    # share the two cores with the estimates. The inbound function runs for the live changes at the end.
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        dynamodb=dynamodb,
        enable_pollers=False,
    )
    rows = []
    with LocalRuntime(config) as runtime:
        bind(runtime)
        create_trip(runtime, "other")
        seed(runtime, "other", other, start=1_000_000)
        start = 0
        trips = {}
        for size in sizes:
            trip = f"t{size}"
            create_trip(runtime, trip)
            seed(runtime, trip, size, start=start)
            trips[size] = trip
            start += size
        client = httpx.Client(base_url=runtime.api.url, headers=API_AUTH, timeout=60)  # type: ignore[union-attr]
        for size, trip in trips.items():
            t0 = time.monotonic()
            rebuild_audience(runtime.dynamodb_url, trip)
            rebuilt = time.monotonic() - t0
            row: dict = {"size": size, "rebuild_s": rebuilt, "cases": []}
            for days in (7, 30):
                for template, marketing in (("trip_reminder", True), ("product_update", False)):
                    times, body = timed_estimates(
                        client, trip, f"template={template}&active_within_days={days}", requests
                    )
                    criteria = audience.broadcast_filter(days, marketing=marketing)
                    t0 = time.perf_counter()
                    full = audience.count(trip, criteria)
                    full_ms = (time.perf_counter() - t0) * 1000
                    row["cases"].append(
                        {
                            "days": days,
                            "template": template,
                            "estimate": body["participants"],
                            "full": full,
                            "p50": statistics.median(times),
                            "p95": pct(times, 0.95),
                            "max": max(times),
                            "full_ms": full_ms,
                        }
                    )
            t0 = time.perf_counter()
            response = client.post(
                f"/api/trips/{trip}/broadcasts",
                json={"template": "trip_reminder", "parameters": ["Promo"], "idempotency_key": f"b{size}"},
            )
            row["broadcast_ms"] = (time.perf_counter() - t0) * 1000
            row["broadcast_status"] = response.status_code
            rows.append(row)
            print(row, flush=True)
        # Live changes on the smallest trip: 20 join and 5 stop over WhatsApp; the counts follow.
        smallest = trips[min(sizes)]
        sandbox = runtime.sandbox
        assert sandbox is not None
        runtime.start_pollers({"InboundFunction"})
        for n in range(20):
            sandbox.send_inbound(from_phone=phone(5_000_000 + n).lstrip("+"), text=f"JOIN {smallest}")
        for n in range(5):
            sandbox.send_inbound(from_phone=phone(5_000_000 + n).lstrip("+"), text=f"STOP {smallest}")
        runtime.wait_idle(timeout=120, queues={"InboundQueue"})
        times, body = timed_estimates(client, smallest, "template=product_update&active_within_days=7", 5)
        full = audience.count(smallest, audience.broadcast_filter(7, marketing=False))
        rows.append({"live": True, "trip": smallest, "estimate": body["participants"], "full": full})
        print(rows[-1], flush=True)
        assert Trip.get(smallest).audience_counted
    return rows


def report(rows: list[dict], other: int, requests: int, dynamodb: str, wall: float) -> str:
    lines = [
        "# Broadcast estimate: kept counts against a full count",
        "",
        f"`PYTHONPATH=layers/common:. .venv/bin/python -m bench.estimate_bench --other {other} "
        f"--requests {requests} --dynamodb {dynamodb}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{machine()}, local runtime (DynamoDB: {dynamodb}), {other:,} participants of another trip in the "
        f"table, activity spread over 40 days; {wall:.0f} s in all.",
        "",
        "Estimate: `GET /api/trips/{trip}/broadcasts/estimate` over HTTP, answered from the kept counts "
        f"({requests} requests per line). Full count: the same audience read from every participant and "
        "contact (what the estimate did before), in the benchmark process.",
        "",
        "| participants | days | template | estimate | full count | equal | estimate p50 ms | p95 ms "
        "| max ms | full count ms |",
        "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("live"):
            continue
        for c in row["cases"]:
            lines.append(
                f"| {row['size']:,} | {c['days']} | {c['template']} | {c['estimate']:,} | {c['full']:,} | "
                f"{'yes' if c['estimate'] == c['full'] else '**no**'} | {c['p50']:.1f} | {c['p95']:.1f} | "
                f"{c['max']:.1f} | {c['full_ms']:,.0f} |"
            )
    lines += [
        "",
        "| participants | rebuild (bulk import) s | broadcast answered ms | status |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row.get("live"):
            lines.append(
                f"| {row['size']:,} | {row['rebuild_s']:.1f} | {row['broadcast_ms']:.0f} | "
                f"{row['broadcast_status']} |"
            )
    for row in rows:
        if row.get("live"):
            lines += [
                "",
                f"After 20 participants joined `{row['trip']}` over WhatsApp and 5 of them sent STOP: "
                f"estimate {row['estimate']:,}, full count {row['full']:,} "
                f"({'equal' if row['estimate'] == row['full'] else '**not equal**'}).",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--other", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--dynamodb", default="dynalite", choices=["dynalite", "moto"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    rows = run(args.sizes, args.other, args.requests, args.dynamodb)
    text = report(rows, args.other, args.requests, args.dynamodb, time.monotonic() - t0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    bad = [c for r in rows if not r.get("live") for c in r["cases"] if c["estimate"] != c["full"]]
    bad += [r for r in rows if r.get("live") and r["estimate"] != r["full"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""DynamoDB for the local runtime: moto's against dynalite's (in memory, over LevelDB), at the seed's scale.

    python -m bench.dynamo_backend_bench [--runs 7] [--participants 40000] [--backends moto,dynalite,...]
                                          [--out bench/results/dynamo_backend.md]

For each backend: a fresh server on a free 127.0.0.1 port (moto: ``localrun.moto_server.MotoProcess``, the
local runtime's; dynalite: ``localrun.dynamo_local.DynaliteProcess``), the template's ParticipantsTable
(``localrun.stack.LocalStack``), then the participants with BatchWriteItem (25 a call, one client): a
100-member trip first (its Query is timed then, on a table holding only it), then a 1,000-member trip, a
10,000-member trip and the rest in 100-member trips. Timed afterwards, each ``--runs`` times (the median is
the figure): the 100-member trip's Query (one page), paging through the 10,000-member trip with Limit 1000, a
GetItem, a BatchWriteItem of 25 new items, and the 100-member trip's Query from 8 clients at once (queries/s
over ``--concurrent-seconds``). Items are shaped as the functions write them (see
``localrun.client.seed_participants``)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.common import machine
from localrun.dynamo_local import DynaliteProcess
from localrun.moto_server import MotoProcess
from localrun.runtime import free_port
from localrun.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
REGION = "ap-southeast-3"
BACKENDS = {
    "moto": "moto 5.2.5 (MotoProcess)",
    "dynalite": "dynalite, in memory",
    "dynalite-leveldb": "dynalite, LevelDB (temp dir)",
}
SMALL, MEDIUM, LARGE = "trip-small", "trip-medium", "trip-large"  # 100, 1,000 and 10,000 members
STAMP = "2026-01-01T00:00:00.000000+0000"


@contextmanager
def server(backend: str) -> Iterator[str]:
    """A fresh server of that backend; yields its URL."""
    if backend == "moto":
        moto = MotoProcess(port=free_port()).start()
        try:
            yield moto.url
        finally:
            moto.stop()
        return
    with tempfile.TemporaryDirectory(prefix="dynalite-bench-") as tmp:
        path = Path(tmp) / "db" if backend == "dynalite-leveldb" else None
        dynalite = DynaliteProcess(path=path, region=REGION).start()
        try:
            yield dynalite.url
        finally:
            dynalite.stop()


def client(url: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - local servers' dummy credentials
        config=Config(max_pool_connections=16, retries={"mode": "standard"}),
    )


def item(trip: str, n: int) -> dict[str, Any]:
    phone = f"+62813{n:08d}"
    return {
        "trip_id": {"S": trip},
        "participant_id": {"S": f"p_{n:012x}"},
        "wa_key": {"S": phone},
        "phone": {"S": phone},
        "status": {"S": "active"},
        "joined_at": {"S": STAMP},
        "name": {"S": f"Peserta {n}"},
    }


def members(total: int) -> Iterator[tuple[str, int]]:
    """(trip, participant number): the three named trips first, then the rest in trips of 100."""
    n = 0
    for trip, size in ((SMALL, 100), (MEDIUM, 1_000), (LARGE, 10_000)):
        for _ in range(size):
            yield trip, n
            n += 1
    while n < total:
        yield f"trip-{n // 100:05d}", n
        n += 1


def batch_write(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    requests = [{"PutRequest": {"Item": i}} for i in items]
    while requests:
        left = ddb.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems", {})
        requests = left.get(table, [])


def load(ddb: Any, table: str, rows: list[tuple[str, int]]) -> float:
    """Write the rows 25 a call; returns the seconds it took."""
    started = time.perf_counter()
    for i in range(0, len(rows), 25):
        batch_write(ddb, table, [item(trip, n) for trip, n in rows[i : i + 25]])
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def query_page(ddb: Any, table: str, trip: str, limit: int = 0, start: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "trip_id = :t",
        "ExpressionAttributeValues": {":t": {"S": trip}},
    }
    if limit:
        request["Limit"] = limit
    if start:
        request["ExclusiveStartKey"] = start
    return ddb.query(**request)


def query_small(ddb: Any, table: str) -> None:
    page = query_page(ddb, table, SMALL)
    assert page["Count"] == 100 and "LastEvaluatedKey" not in page, page["Count"]


def page_large(ddb: Any, table: str) -> None:
    seen, start = 0, None
    while True:
        page = query_page(ddb, table, LARGE, 1000, start)
        seen += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert seen == 10_000, seen


def concurrent_queries(url: str, table: str, clients: int, seconds: float) -> float:
    """Queries/s of the small trip from ``clients`` threads (one client each) for about ``seconds``."""
    done = [0] * clients
    deadline = time.perf_counter() + seconds

    def worker(k: int) -> None:
        ddb = client(url)
        while time.perf_counter() < deadline:
            query_small(ddb, table)
            done[k] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def measure(backend: str, participants: int, runs: int, concurrent_seconds: float) -> dict[str, Any]:
    rows = list(members(participants))
    with server(backend) as url:
        stack = LocalStack(ROOT / "template.yaml", url, REGION, dynamodb_url=url)
        stack.create_tables({"ParticipantsTable"})
        table = stack.tables["ParticipantsTable"]
        ddb = client(url)
        load(ddb, table, rows[:100])
        alone = timed(lambda: query_small(ddb, table), runs)
        seconds = load(ddb, table, rows[100:])
        print(f"  {backend}: loaded {len(rows) - 100:,} items in {seconds:.1f} s", flush=True)
        key = {"trip_id": {"S": LARGE}, "participant_id": {"S": f"p_{5_000:012x}"}}
        extra = iter(range(10**9, 2 * 10**9, 25))  # new participant numbers, 25 at a time

        def write_25() -> None:
            first = next(extra)
            batch_write(ddb, table, [item("trip-extra", first + k) for k in range(25)])

        result = {
            "load": (len(rows) - 100) / seconds,
            "query_alone": alone,
            "query": timed(lambda: query_small(ddb, table), runs),
            "page": timed(lambda: page_large(ddb, table), runs),
            "get": timed(lambda: ddb.get_item(TableName=table, Key=key)["Item"], max(runs, 25)),
            "batch": timed(write_25, max(runs, 25)),
            "concurrent": concurrent_queries(url, table, 8, concurrent_seconds),
        }
        return result


def ms(values: list[float]) -> str:
    median = statistics.median(values) * 1000
    return f"{median:,.1f} ms" if median < 100 else f"{median:,.0f} ms"


def report(results: dict[str, dict[str, Any]], participants: int, runs: int, command: str) -> str:
    names = list(results)
    header = "| figure | " + " | ".join(BACKENDS[n] for n in names) + " |"
    lines = [header, "|---" * (len(names) + 1) + "|"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row(
        "Query, 100-member trip (one page), table holding only it",
        [ms(results[n]["query_alone"]) for n in names],
    )
    row(
        f"Query, 100-member trip (one page), {participants:,} participants loaded",
        [f"**{ms(results[n]['query'])}**" for n in names],
    )
    row(
        "page through the 10,000-member trip, Limit 1000 (10 Queries)",
        [ms(results[n]["page"]) for n in names],
    )
    row("GetItem", [ms(results[n]["get"]) for n in names])
    row("BatchWriteItem of 25 new items", [ms(results[n]["batch"]) for n in names])
    row(
        "Query, 100-member trip, 8 clients at once: queries/s",
        [f"{results[n]['concurrent']:,.1f}/s" for n in names],
    )
    row(
        f"bulk load ({participants - 100:,} items, BatchWriteItem of 25, one client)",
        [f"{results[n]['load']:,.0f} items/s" for n in names],
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "# DynamoDB for the local runtime: moto or dynalite",
            "",
            f"{when}; {machine()}; Node {node_version()}.",
            f"Command: `{command}`",
            "",
            f"The template's ParticipantsTable, {participants:,} participants (a trip of 100, one of 1,000, "
            "one of 10,000, the rest in trips of 100), one boto3 client over HTTP on 127.0.0.1. Times are "
            f"medians of {runs} runs (GetItem and BatchWriteItem: of max({runs}, 25)).",
            "",
            *lines,
            "",
        ]
    )


def node_version() -> str:
    import subprocess

    try:
        done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not found"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--participants", type=int, default=40_000)
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"some of {', '.join(BACKENDS)}")
    parser.add_argument("--concurrent-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="write the report (markdown) here too")
    args = parser.parse_args(argv)
    if args.participants < 11_100:
        parser.error("--participants must be at least 11,100 (the trips of 100, 1,000 and 10,000)")
    backends = args.backends.split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # LocalStack's clients: the servers' dummies
        os.environ.setdefault(name, "testing")
    results = {}
    for backend in backends:
        print(f"{backend}: measuring ({args.participants:,} participants, {args.runs} runs)", flush=True)
        results[backend] = measure(backend, args.participants, args.runs, args.concurrent_seconds)
    command = "python -m bench.dynamo_backend_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, args.participants, args.runs, command.strip())
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU per send of the HTTP clients the sender could use, posting the sender's own request (a template
message, bearer token, JSON) to the WhatsApp sandbox, in one run, each client in a fresh process of its own
(its CPU read from that process alone), in the same order of rounds so that the machine's noise falls on all.

- ``http.client`` (standard library): one keep-alive connection per thread, 8 threads;
- ``urllib3`` (the pool under botocore and requests): one pool, 8 threads;
- ``httpx`` sync client from 8 threads: what the sender does today;
- ``httpx`` async client, 40 tasks;
- ``aiohttp``: one ``ClientSession`` on a ``TCPConnector(limit=40)``, 40 tasks;
- a minimal asyncio HTTP/1.1 client (streams, 40 keep-alive connections, ``Content-Length`` only): the floor,
  the least a Python process can spend on a request and its answer.

It chooses the client of the sender's hot path by measurement (issue 16); the sender's own figure, all-in,
is ``bench/sender_bench.py``'s.

    .venv/bin/python bench/http_clients.py      # ≈ 1 min; writes bench/results/http_clients.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from bench.common import machine  # noqa: E402
from localrun.project import LOCAL_SECRETS  # noqa: E402

TOKEN = LOCAL_SECRETS["WA_ACCESS_TOKEN"]
PHONE_ID = "000000000000000"
PATH = f"/v23.0/{PHONE_ID}/messages"
THREADS = 8
TASKS = 40


def body(n: int) -> bytes:
    """The sender's template request (``WhatsAppClient.send_template``), a recipient of its own per send."""
    return json.dumps(
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": f"62813{n:08d}",
            "type": "template",
            "biz_opaque_callback_data": f"job_bench|p_{n:016x}",
            "template": {
                "name": "product_update",
                "language": {"code": "id"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Jastip Jepang"},
                            {"type": "text", "text": "Action Figure A"},
                        ],
                    }
                ],
            },
        },
        separators=(",", ":"),
    ).encode()


HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _threads(count: int, send: Callable[[int], None], sends: int) -> None:
    index = iter(range(sends))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                n = next(index, None)
            if n is None:
                return
            send(n)

    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_http_client(port: int, sends: int) -> None:
    import http.client

    local = threading.local()

    def send(n: int) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port)
        local.conn.request("POST", PATH, body=body(n), headers=HEADERS)
        response = local.conn.getresponse()
        data = response.read()
        assert response.status == 200, data

    _threads(THREADS, send, sends)


def run_urllib3(port: int, sends: int) -> None:
    import urllib3

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=THREADS, block=True)

    def send(n: int) -> None:
        response = pool.request("POST", PATH, body=body(n), headers=HEADERS)
        assert response.status == 200, response.data

    _threads(THREADS, send, sends)


def run_httpx_sync(port: int, sends: int) -> None:
    import httpx

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=16))

    def send(n: int) -> None:
        response = client.post(PATH, content=body(n), headers=HEADERS)
        assert response.status_code == 200, response.text

    _threads(THREADS, send, sends)


def run_httpx_async(port: int, sends: int) -> None:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=TASKS)
        ) as client:
            queue = iter(range(sends))

            async def work() -> None:
                for n in queue:
                    response = await client.post(PATH, content=body(n), headers=HEADERS)
                    assert response.status_code == 200, response.text

            await asyncio.gather(*(work() for _ in range(TASKS)))

    asyncio.run(main())


def run_aiohttp(port: int, sends: int) -> None:
    import aiohttp

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=TASKS)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
            queue = iter(range(sends))

            async def work() -> None:
                for n in queue:
                    async with session.post(PATH, data=body(n), headers=HEADERS) as response:
                        data = await response.read()
                        assert response.status == 200, data

            await asyncio.gather(*(work() for _ in range(TASKS)))

    asyncio.run(main())


def asyncio_floor(
    port: int, path: str, token: str, body_of: Callable[[int], bytes], concurrency: int, count: int
) -> None:
    """The floor: ``count`` POSTs of ``body_of(n)`` over ``concurrency`` keep-alive connections, HTTP/1.1 over
    asyncio streams, reading ``Content-Length`` bytes (``bench/sender_instance.py`` uses it too)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()

    async def main() -> None:
        queue = iter(range(count))

        async def work() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for n in queue:
                payload = body_of(n)
                writer.write(head + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                assert b" 200 " in status, status
            writer.close()

        await asyncio.gather(*(work() for _ in range(concurrency)))

    asyncio.run(main())


def run_asyncio_streams(port: int, sends: int) -> None:
    asyncio_floor(port, PATH, TOKEN, body, TASKS, sends)


CLIENTS: dict[str, tuple[str, Callable[[int, int], None]]] = {
    "http.client": (f"standard library, {THREADS} threads", run_http_client),
    "urllib3": (f"one pool, {THREADS} threads", run_urllib3),
    "httpx sync": (f"{THREADS} threads (the sender today)", run_httpx_sync),
    "httpx async": (f"{TASKS} tasks", run_httpx_async),
    "aiohttp": (f"one session, TCPConnector(limit={TASKS}), {TASKS} tasks", run_aiohttp),
    "asyncio streams": (f"{TASKS} connections, minimal HTTP/1.1 (the floor)", run_asyncio_streams),
}


def measure(name: str, port: int, sends: int) -> tuple[float, float]:
    """In a fresh process: (CPU seconds, wall seconds) of ``sends`` requests, imports and a warm-up of
    ``sends // 10`` requests left out."""
    _, run = CLIENTS[name]
    run(port, max(THREADS, sends // 10))  # imports, connections, first requests
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    run(port, sends)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "http_clients.md")
    args = parser.parse_args()

    from localrun.sandbox import WhatsAppSandbox

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu: dict[str, list[float]] = {name: [] for name in CLIENTS}
    wall: dict[str, list[float]] = {name: [] for name in CLIENTS}
    context = multiprocessing.get_context("spawn")
    with WhatsAppSandbox(access_token=TOKEN, phone_number_id=PHONE_ID) as sandbox:
        port = urlsplit(sandbox.url).port
        for _ in range(args.rounds):
            for name in CLIENTS:
                with context.Pool(1) as pool:
                    cpu_s, wall_s = pool.apply(measure, (name, port, args.sends))
                cpu[name].append(cpu_s)
                wall[name].append(wall_s)
                sandbox.clear()
    floor = statistics.median(cpu["asyncio streams"]) / args.sends
    lines = [
        f"HTTP clients benchmark, {started}; {machine()}.",
        f"`python bench/http_clients.py --sends {args.sends} --rounds {args.rounds}`: {args.sends:,} POSTs "
        "of the sender's template request to the WhatsApp sandbox per client and round, each client in a "
        "fresh process (its CPU alone, imports and a warm-up left out), rounds interleaved; medians.",
        "",
        "| client | how | CPU per send | ÷ the floor | sends/s (wall) |",
        "|---|---|---|---|---|",
    ]
    for name, (how, _) in CLIENTS.items():
        per_send = statistics.median(cpu[name]) / args.sends
        rate = args.sends / statistics.median(wall[name])
        lines.append(f"| {name} | {how} | {per_send * 1000:.2f} ms | {per_send / floor:.1f} | {rate:,.0f} |")
    report = "\n".join([*lines, ""])
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

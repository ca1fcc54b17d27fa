"""A small client for the local system's HTTP API and tables, to drive a running ``LocalRuntime`` (the
end-to-end tests and the benchmarks use it): trips and product updates through the API, participants written
straight into the tables (and their trips' audience counted as an operator would), the notifications log, the
sandbox's record, and the runtime's configuration on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from jastipin.ids import stable_id
from localrun.project import LOCAL_SECRETS
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port

PYNAMODB_TIME = "%Y-%m-%dT%H:%M:%S.%f+0000"  # UTCDateTimeAttribute's format
API_AUTH = {"Authorization": f"Bearer {LOCAL_SECRETS['API_TOKEN']}"}


def phone(n: int) -> str:
    return f"+62813{n:08d}"


def local_config(**settings: Any) -> RuntimeConfig:
    """A local runtime's configuration on free ports (API, sandbox, moto), with ``settings`` on top."""
    return RuntimeConfig(api_port=free_port(), sandbox_port=free_port(), moto_port=free_port(), **settings)


def create_trip(runtime: LocalRuntime, slug: str, **extra: str) -> None:
    body = {"slug": slug, "title": f"Trip {slug}", "owner_phone": "081234567890", **extra}
    response = httpx.post(f"{runtime.api.url}/api/trips", json=body, headers=API_AUTH)  # type: ignore[union-attr]
    assert response.status_code == 201, response.text


def seed_participants(
    runtime: LocalRuntime,
    trip: str,
    count: int,
    *,
    start: int = 0,
    inbound_hours_ago: float = 1.0,
    joined_hours_ago: float = 0.0,
) -> list[str]:
    """Participants with an open 24-hour window, written straight into the tables (25 per BatchWriteItem).
    They go around the kept audience counts: ``rebuild_audience`` counts their trip afterwards."""
    ddb = runtime.client("dynamodb")
    participants = runtime.table_name("ParticipantsTable")
    contacts = runtime.table_name("ContactsTable")
    now = datetime.now(UTC)
    inbound = (now - timedelta(hours=inbound_hours_ago)).strftime(PYNAMODB_TIME)
    stamp = (now - timedelta(hours=joined_hours_ago)).strftime(PYNAMODB_TIME)
    ids = []
    requests: list[tuple[str, dict]] = []
    for n in range(start, start + count):
        p = phone(n)
        pid = stable_id("p", p)
        ids.append(pid)
        requests.append(
            (
                participants,
                {
                    "trip_id": {"S": trip},
                    "participant_id": {"S": pid},
                    "wa_key": {"S": p},
                    "phone": {"S": p},
                    "status": {"S": "active"},
                    "joined_at": {"S": stamp},
                    "last_active_at": {"S": stamp},
                },
            )
        )
        requests.append(
            (
                contacts,
                {
                    "wa_key": {"S": p},
                    "participant_id": {"S": pid},
                    "phone": {"S": p},
                    "last_inbound_at": {"S": inbound},
                    "last_trip_id": {"S": trip},
                    "marketing_opt_out": {"BOOL": False},
                    "updated_at": {"S": stamp},
                },
            )
        )
    for i in range(0, len(requests), 25):
        batch: dict[str, list] = {}
        for table, item in requests[i : i + 25]:
            batch.setdefault(table, []).append({"PutRequest": {"Item": item}})
        while batch:
            batch = ddb.batch_write_item(RequestItems=batch).get("UnprocessedItems") or {}
    return ids


def rebuild_audience(dynamodb_url: str, *trips: str) -> str:
    """Count trips written straight into the tables (``seed_participants``) as an operator would after a
    bulk import: ``python -m jastipin.audience_counts rebuild`` with the tables' names in the environment (the
    local stack names each table by its logical id). Returns what it printed."""
    root = Path(__file__).resolve().parents[1]
    tables = {
        "TRIPS_TABLE": "TripsTable",
        "PARTICIPANTS_TABLE": "ParticipantsTable",
        "CONTACTS_TABLE": "ContactsTable",
        "AUDIENCE_TABLE": "AudienceTable",
    }
    env = {
        **{k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ},
        **tables,
        "PYTHONPATH": str(root / "layers" / "common"),
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "AWS_DEFAULT_REGION": "ap-southeast-3",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    done = subprocess.run(
        [sys.executable, "-m", "jastipin.audience_counts", "rebuild", *trips],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def upload_product(runtime: LocalRuntime, trip: str, name: str = "Produk", price: int = 1000) -> str:
    response = httpx.post(
        f"{runtime.api.url}/api/trips/{trip}/products",
        json={"name": name, "price": price},  # type: ignore[union-attr]
        headers=API_AUTH,
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def three_queue_config(limit: int) -> RuntimeConfig:
    """The local runtime for ``three_queue_backlog`` at a rate limit of ``limit``: chunks of 50, 3 sender
    instances on the notifications queue and 2 on the broadcast queue."""
    return local_config(
        env={"RATE_LIMIT_PER_SECOND": str(limit), "CHUNK_SIZE": "50"},
        esm_concurrency={"NotificationsQueue": 3, "BroadcastQueue": 2},
    )


def three_queue_backlog(
    runtime: LocalRuntime, per_job: int, proofs: int, proof_every: float
) -> tuple[str, int]:
    """A backlog on all three queues at once: a product update to ``per_job`` participants of trip "limit-a"
    (notifications queue), a broadcast to ``per_job`` others of trip "limit-b" (FIFO broadcast queue), and
    ``proofs`` proofs posted one every ``proof_every`` seconds meanwhile (proof_notify queue). Returns the
    product update's job id and the messages to expect."""
    create_trip(runtime, "limit-a")
    create_trip(runtime, "limit-b")
    buyers = seed_participants(runtime, "limit-a", per_job)
    seed_participants(runtime, "limit-b", per_job, start=per_job)  # other people: no pair limit
    rebuild_audience(runtime.dynamodb_url, "limit-b")
    product_job = upload_product(runtime, "limit-a")
    broadcast = httpx.post(
        f"{runtime.api.url}/api/trips/limit-b/broadcasts",  # type: ignore[union-attr]
        json={"template": "product_update", "parameters": ["Trip limit-b", "Produk"]},
        headers=API_AUTH,
        timeout=30,
    )
    assert broadcast.status_code == 202, broadcast.text
    for n in range(proofs):
        proof = {"participant_id": buyers[n], "order_ref": f"ORD-{n}", "image_url": "https://img.test/1.jpg"}
        response = httpx.post(
            f"{runtime.api.url}/api/trips/limit-a/proofs",  # type: ignore[union-attr]
            json=proof,
            headers=API_AUTH,
            timeout=30,
        )
        assert response.status_code == 202, response.text
        time.sleep(proof_every)
    return product_job, 2 * per_job + proofs


def wait_for_sandbox(runtime: LocalRuntime, count: int, timeout: float) -> list[dict]:
    """The sandbox's accepted messages once it holds ``count`` of them (AssertionError after ``timeout``)."""
    assert runtime.sandbox is not None
    deadline = time.monotonic() + timeout
    while len(runtime.sandbox.messages()) < count:
        assert time.monotonic() < deadline, f"{len(runtime.sandbox.messages())} of {count} sent"
        time.sleep(0.2)
    return runtime.sandbox.messages()


def log_entries(runtime: LocalRuntime, job_id: str) -> list[dict]:
    ddb = runtime.client("dynamodb")
    items: list[dict] = []
    kwargs = {
        "TableName": runtime.table_name("NotificationsLogTable"),
        "KeyConditionExpression": "job_id = :j",
        "ExpressionAttributeValues": {":j": {"S": job_id}},
        "ConsistentRead": True,
    }
    while True:
        page = ddb.query(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

"""The global rate limit, judged by WhatsApp's side: the sandbox's record of when it accepted each send.

The three queues at once (a product update on the notifications queue, a broadcast on the broadcast queue,
proofs posted one by one meanwhile on the proof_notify queue), several sender instances on each, Meta-like
status webhooks flowing, and a backlog that keeps the limiter busy for ~20 s. In every sliding 1-second window
the sandbox accepted at most the limit (each send timed when it reached the sandbox's socket). The mean rate
is printed, not asserted: it is measured over a minute by ``bench/rate_window.py`` (README, Performance)."""

from __future__ import annotations

import bisect
import time
from collections import Counter

import httpx
import pytest

from localrun.runtime import LocalRuntime
from tests.e2e.helpers import (
    API_AUTH,
    create_trip,
    local_config,
    log_entries,
    rebuild_audience,
    seed_participants,
    upload_product,
)

PROOFS = 10


def max_in_any_second(times: list[float]) -> int:
    """The most sends in any window [t, t + 1 s), t any send's time (a window that starts between two sends
    holds no more than one starting at the later of them)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def test_the_window_counter_counts_every_sliding_second() -> None:
    assert max_in_any_second([]) == 0
    assert max_in_any_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0, 1) holds 3; [0.5, 1.5) holds 3
    assert max_in_any_second([0.0, 0.999, 1.998]) == 2


@pytest.mark.parametrize(("limit", "per_job"), [(10, 100), (50, 500)])
def test_no_sliding_second_holds_more_sends_than_the_limit(limit: int, per_job: int) -> None:
    config = local_config(
        env={"RATE_LIMIT_PER_SECOND": str(limit), "CHUNK_SIZE": "50"},
        esm_concurrency={"NotificationsQueue": 3, "BroadcastQueue": 2},
    )
    with LocalRuntime(config) as runtime:
        assert runtime.sandbox is not None and runtime.api is not None
        create_trip(runtime, "limit-a")
        create_trip(runtime, "limit-b")
        buyers = seed_participants(runtime, "limit-a", per_job)
        seed_participants(runtime, "limit-b", per_job, start=per_job)  # other people: no pair limit
        rebuild_audience(runtime.dynamodb_url, "limit-b")
        product_job = upload_product(runtime, "limit-a")
        broadcast = httpx.post(
            f"{runtime.api.url}/api/trips/limit-b/broadcasts",
            json={"template": "product_update", "parameters": ["Trip limit-b", "Produk"]},
            headers=API_AUTH,
            timeout=30,
        )
        assert broadcast.status_code == 202, broadcast.text
        for n in range(PROOFS):  # the third queue, while the other two have their backlog
            proof = {
                "participant_id": buyers[n],
                "order_ref": f"ORD-{n}",
                "image_url": "https://img.test/1.jpg",
            }
            response = httpx.post(
                f"{runtime.api.url}/api/trips/limit-a/proofs", json=proof, headers=API_AUTH, timeout=30
            )
            assert response.status_code == 202, response.text
            time.sleep(0.5)
        total = 2 * per_job + PROOFS
        deadline = time.monotonic() + total / limit * 2 + 60
        while len(runtime.sandbox.messages()) < total:
            assert time.monotonic() < deadline, f"{len(runtime.sandbox.messages())} of {total} sent"
            time.sleep(0.2)
        messages = runtime.sandbox.messages()
        runtime.wait_idle(60)
        statuses = Counter(e["status"]["S"] for e in log_entries(runtime, product_job))

    times = sorted(m["received_at"] for m in messages)
    kinds = Counter(m["type"] for m in messages)
    assert len(times) == total and kinds == {"text": per_job, "template": per_job + PROOFS}, kinds
    worst = max_in_any_second(times)
    steady = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]  # start-up and tail left out
    mean = (len(steady) - 1) / (steady[-1] - steady[0])
    per_second = Counter(int(t - times[0]) for t in times)
    print("sends per second:", [per_second[i] for i in range(int(times[-1] - times[0]) + 1)])
    print(f"limit {limit}/s: max {worst} in any 1 s, mean {mean:.2f}/s over {len(times)} sends")
    assert worst <= limit, f"{worst} sends in one sliding second at a limit of {limit}"
    # The status webhooks were flowing meanwhile: every product message's entry went on to delivered.
    assert statuses["delivered"] + statuses["read"] == per_job, statuses

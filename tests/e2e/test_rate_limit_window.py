"""The global rate limit, judged by WhatsApp's side: the sandbox's record of when it accepted each send.

The three queues at once (a product update on the notifications queue, a broadcast on the broadcast queue,
proofs posted one by one meanwhile on the proof_notify queue), several sender instances on each, Meta-like
status webhooks flowing, and a backlog that keeps the limiter busy for ~20 s. In every sliding 1-second window
the sandbox accepted at most the limit (each send timed when it reached the sandbox's socket). The mean rate
is printed, not asserted: it is measured over a minute by ``bench/rate_window.py`` (README, Performance)."""

from __future__ import annotations

import bisect
from collections import Counter

import pytest

from localrun.runtime import LocalRuntime
from tests.e2e.helpers import log_entries, three_queue_backlog, three_queue_config, wait_for_sandbox

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
    with LocalRuntime(three_queue_config(limit)) as runtime:
        product_job, total = three_queue_backlog(runtime, per_job, PROOFS, proof_every=0.5)
        messages = wait_for_sandbox(runtime, total, timeout=total / limit * 2 + 60)
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

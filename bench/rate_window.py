"""The global rate limit on WhatsApp's side, under a backlog: the limit held in every sliding second, and the
long-run mean rate, both read from the sandbox's record of when each send reached it.

Through the local runtime, as ``tests/e2e/test_rate_limit_window.py`` runs it: a product update (notifications
queue, 3 sender instances) and a broadcast (FIFO broadcast queue, 2 instances) to two trips at once, chunks of
50, with proofs posted one by one meanwhile (proof_notify queue), status webhooks flowing (each send is
followed by "sent" and "delivered"), at 10 and at 50 messages/s, a backlog of about a minute at the limit.
The mean is taken over the sustained part (the first and the last second left out; the sender instances'
cold starts are in it). The limiter keeps a 4 % margin for jitter, so 0.96 of the limit is the most it can
reach.

    .venv/bin/python bench/rate_window.py        # ≈ 3 min; writes bench/results/rate_window.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from bench.common import machine, max_in_window, table  # noqa: E402
from localrun.client import three_queue_backlog, three_queue_config, wait_for_sandbox  # noqa: E402
from localrun.runtime import LocalRuntime  # noqa: E402

TARGET_MEAN = 0.95
PROOFS = 20


def run(limit: int, per_job: int) -> tuple[int, float, int]:
    """Returns (most sends in any sliding second, mean sends per second sustained, sends)."""
    with LocalRuntime(three_queue_config(limit)) as runtime:
        _, total = three_queue_backlog(runtime, per_job, PROOFS, proof_every=1.0)
        messages = wait_for_sandbox(runtime, total, timeout=total / limit * 2 + 60)
    times = sorted(m["received_at"] for m in messages)
    steady = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]
    return max_in_window(times), (len(steady) - 1) / (steady[-1] - steady[0]), len(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the backlog at the limit")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rate_window.md")
    args = parser.parse_args()
    rows = []
    missed = []
    for limit in (10, 50):
        per_job = limit * args.seconds // 2  # two jobs: about `seconds` of sending at the limit
        worst, mean, sends = run(limit, per_job)
        rows.append(
            (
                f"{limit} msg/s, {sends} sends: most in any sliding second ÷ limit",
                f"{worst} ÷ {limit}",
                "≤ 1.0",
            )
        )
        rows.append(
            (
                f"{limit} msg/s: mean rate ÷ limit (sustained)",
                f"{mean:.2f} ÷ {limit} = **{mean / limit:.3f}**",
                "≥ 0.95",
            )
        )
        if worst > limit:
            missed.append(f"{worst} sends in one second at {limit}/s")
        if mean / limit < TARGET_MEAN:
            missed.append(f"mean {mean / limit:.3f} of the limit at {limit}/s")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"Rate-limit window benchmark, {stamp}; {machine()}.\n"
        f"Three queues at once (product update + FIFO broadcast, 3 + 2 sender instances, {PROOFS} proofs), "
        "status webhooks on; "
        "times from the sandbox's record (kernel receive time of each send).\n\n"
        f"{table(rows)}\n\nCommand: `.venv/bin/python bench/rate_window.py`\n"
    )
    args.out.write_text(text)
    print(text)
    if missed:
        print("missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

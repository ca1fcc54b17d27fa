"""Duplicates under stalled sends: WhatsApp takes a message but answers after the sender's client timeout.

The sender cannot tell such a send from one that never arrived, so it sends again after a wait
(``AMBIGUOUS_WAIT_SECONDS``, 5 s), unless the message's status (which echoes our log key) has come through the
webhook and the inbound queue by then: then it is not sent again. Through the local runtime, 200 participants,
WA_TIMEOUT_SECONDS=1, rate limit lifted; the sandbox stalls the first send to 20 of them (it records the
message on arrival and posts its statuses when it answers): 1.5 s and 3.5 s (inside the wait), 7 s (after
it). Counted on the sandbox's record: recipients who got the product twice.

    .venv/bin/python bench/stalled_sends.py          # ≈ 1 min; writes bench/results/stalled_sends.md
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "common")]

from bench.common import machine, table  # noqa: E402
from localrun.client import create_trip, log_entries, phone, seed_participants, upload_product  # noqa: E402
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port  # noqa: E402

FINAL = {"sent", "delivered", "read", "failed", "skipped"}


def run(participants: int, stalled: int, stall_ms: int) -> tuple[int, int, int]:
    """Returns (recipients who got the message twice or more, stalled sends, requests the sandbox took)."""
    config = RuntimeConfig(
        api_port=free_port(),
        sandbox_port=free_port(),
        moto_port=free_port(),
        env={"WA_TIMEOUT_SECONDS": "1", "RATE_LIMIT_PER_SECOND": "0"},
    )
    with LocalRuntime(config) as runtime:
        sandbox = runtime.sandbox
        assert sandbox is not None
        create_trip(runtime, "stall")
        seed_participants(runtime, "stall", participants)
        for n in range(0, participants, participants // stalled):
            sandbox.add_fault({"to": phone(n), "times": 1, "latency_ms": stall_ms})
        job = upload_product(runtime, "stall")
        deadline = time.monotonic() + 120
        while True:
            entries = log_entries(runtime, job)
            if len(entries) == participants and all(e["status"]["S"] in FINAL for e in entries):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(entries)} of {participants} outcomes")
            time.sleep(0.5)
        runtime.wait_idle(60)
        product = Counter(
            m["to"]
            for m in sandbox.messages()
            if str(m["body"].get("biz_opaque_callback_data", "")).startswith(job)
        )
        assert len(product) == participants, f"{len(product)} of {participants} reached"
        return sum(1 for n in product.values() if n > 1), stalled, sandbox.requests_count()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--stalled", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "stalled_sends.md"))
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    cases = ((1500, "inside the 5 s wait"), (3500, "inside the 5 s wait"), (7000, "after the 5 s wait"))
    for stall_ms, when in cases:
        twice, stalled, requests = run(args.participants, args.stalled, stall_ms)
        print(
            f"stall {stall_ms} ms: {twice} of {stalled} stalled recipients got it twice ({requests} requests)"
        )
        rows.append(
            (
                f"sends stalled {stall_ms / 1000:g} s (client timeout 1 s): answer and status {when}",
                f"**{twice}** of {stalled} stalled recipients got the message twice ({requests} requests)",
                "0" if stall_ms < 5000 else "≤ stalled (at-least-once)",
            )
        )
    report = (
        f"Stalled sends, {started}; {machine()}.\n{args.participants} participants, {args.stalled} of them "
        "with their first send stalled; local runtime, rate limit lifted.\n\n" + table(rows) + "\n"
    )
    Path(args.out).write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

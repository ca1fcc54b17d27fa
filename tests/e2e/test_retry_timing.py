"""Retries go out when the README says, judged on WhatsApp's side (the sandbox's record of every send it
refused and accepted): a recipient whose send fails transiently is sent again 2 s after that failure, then 4 s
after the next, never earlier and not much later, while the rest of the chunk is still being sent under the
rate limit (the trip takes ~12 s at 10 messages/s; a retry waiting for the chunk's end would come seconds
late)."""

from __future__ import annotations

from localrun.runtime import LocalRuntime
from tests.e2e.helpers import create_trip, local_config, log_entries, phone, seed_participants, upload_product
from tests.harness import eventually

PARTICIPANTS = 120
FAILING = 3  # the first three sent (the lowest participant ids): their retries are due while the trip sends
# Seconds a retry may come after its due time: the next send slot of its sender instance. With two chunks on
# two instances sharing the limit, an instance holds its slots a second at a time (the limiter's block).
SLACK = 1.5


def test_each_retry_goes_out_2_s_then_4_s_after_its_failure() -> None:
    config = local_config(env={"RATE_LIMIT_PER_SECOND": "10"}, status_callbacks=False)
    with LocalRuntime(config) as runtime:
        sandbox = runtime.sandbox
        assert sandbox is not None
        create_trip(runtime, "retry-trip")
        ids = seed_participants(runtime, "retry-trip", PARTICIPANTS)
        failing = sorted(range(PARTICIPANTS), key=lambda n: ids[n])[:FAILING]  # sent first: read in id order
        for n in failing:  # the pair rate limit (131056), twice: the third attempt goes through
            sandbox.add_fault({"to": phone(n), "times": 2, "http_status": 400, "code": 131056})
        job_id = upload_product(runtime, "retry-trip")
        eventually(
            lambda: len(sandbox.messages()) >= PARTICIPANTS,
            90,
            what=lambda: f"{PARTICIPANTS} sends, {len(sandbox.messages())} made",
            interval=0.2,
        )
        runtime.wait_idle(60)
        entries = {e["participant_id"]["S"]: e for e in log_entries(runtime, job_id)}
        accepted = sorted(m["received_at"] for m in sandbox.messages())
        gaps = []
        for n in failing:
            first, second = (r["received_at"] for r in sandbox.refused(to=phone(n)))
            (sent,) = sandbox.messages(to=phone(n))
            gaps.append((round(second - first, 2), round(sent["received_at"] - second, 2)))
            # The chunk was still sending: the retry did not wait for it.
            assert sent["received_at"] < accepted[-1] - 1.0, (n, sent["received_at"], accepted[-1])
    print("retry gaps (s):", gaps)
    for after_first, after_second in gaps:
        assert 2.0 <= after_first <= 2.0 + SLACK, gaps
        assert 4.0 <= after_second <= 4.0 + SLACK, gaps
    assert len(entries) == PARTICIPANTS
    assert {e["status"]["S"] for e in entries.values()} == {"sent"}
    assert sorted(int(e["attempts"]["N"]) for e in entries.values())[-3:] == [3, 3, 3]

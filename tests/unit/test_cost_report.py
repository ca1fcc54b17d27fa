"""The cost report at a small scale: it runs the real paths end to end, and the counts hold the choices that
keep a delivered message cheap (README, Cost)."""

from __future__ import annotations

import importlib.util
import math
import sys

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("cost_report", ROOT / "bench" / "cost_report.py")
assert spec and spec.loader
cost_report = importlib.util.module_from_spec(spec)
sys.modules["cost_report"] = cost_report
spec.loader.exec_module(cost_report)

N = 12


def test_cost_report_counts_every_call_of_a_broadcast():
    report = cost_report.run(recipients=N, scale_to=N)
    assert report.delivered == N and report.webhooks == 3 * N
    # Meta's webhooks come through the webhook's function URL (no request charge); the backend's call alone
    # through the HTTP API.
    assert report.http_api_requests == 1 and report.function_url_requests == 3 * N
    assert report.functions["WebhookFunction"].invocations == 3 * N
    assert report.functions["EnqueueFunction"].invocations == 1
    calls = {(fn, op): usage for (fn, _service, op), usage in report.aws.items()}
    # The webhook only queues; "sent" statuses cost nothing: delivered and read are queued, then written by
    # the inbound function by the key Meta echoes (no index lookup).
    assert {op for fn, op in calls if fn == "WebhookFunction"} == {"SendMessageBatch (standard)"}
    assert calls[("WebhookFunction", "SendMessageBatch (standard)")].calls == 2 * N
    assert ("InboundFunction", "Query") not in calls
    assert calls[("InboundFunction", "UpdateItem")].calls == 2 * N
    writes = calls[("InboundFunction", "UpdateItem")].write_units
    assert writes["NotificationsLogTable"] == 2 * N
    assert writes["NotificationsLogTable/by_provider_msg_id"] == 0  # keys only: not written by status updates
    assert writes["NotificationsLogTable/by_trip_keys"] == 0  # likewise
    assert report.functions["InboundFunction"].invocations == -(-2 * N // 10)  # batches of 10
    # One small item per recipient, written as a merge with any status that came first (UpdateItem); its
    # index entries appear once each (an entry that appears is one write, one that moves two).
    log_writes = calls[("SenderFunction", "UpdateItem")].write_units
    assert log_writes["NotificationsLogTable"] == N
    assert log_writes["NotificationsLogTable/by_trip_keys"] == N
    assert log_writes["NotificationsLogTable/by_provider_msg_id"] == N
    # The sender waited for the rate limit: at least N / rate seconds of 256 MB.
    assert report.functions["SenderFunction"].billed_ms >= N / report.rate_limit * 1000
    assert report.functions["SenderFunction"].memory_mb == 256
    # The rate limiter reserves a second of slots per write: one reservation per rate-limit's worth of sends,
    # each costing at most one more call when its guess of the schedule's state (behind real time, or ahead)
    # was wrong (a delay on a busy machine flips it), plus the release at the end; and up to three more for
    # each slot the sender missed (in this one process moto's work holds the interpreter lock while a send is
    # due, and the virtual clock jumps with every thread's wait, so a few are missed; a miss puts the schedule
    # behind, and the block after it is reserved anew and, at the end, given back). Measured over 40 runs on
    # a quiet machine: 3 writes with no miss, at most 3 more per miss; under load, 5 with none.
    limiter_writes = sum(
        usage.write_units["RateLimitTable"]  # the sender also writes the fan-out's progress (JobsTable)
        for (fn, _s, op), usage in report.aws.items()
        if fn == "SenderFunction" and op == "UpdateItem"
    )
    reservations = math.ceil(N / report.rate_limit)
    assert limiter_writes <= 2 * reservations + 1 + 3 * report.slots_missed
    assert report.slots_missed <= N // 2
    text = cost_report.render(report, N)
    assert "TOTAL" in text and "levers" in text
    assert 0 < report.total(report.lines()) < 0.01

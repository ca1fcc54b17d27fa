"""STOP means stop, end to end: participants send STOP while a product update fans out slowly (rate limit 20
messages/s, 200 participants: ~10 s of sending). Once a STOP has been handled, that participant's product
message, if it had not gone out yet, never reaches WhatsApp more than a second later (the sandbox's record of
accepted sends is the judge); each stopper ends with one outcome: sent before the STOP, or skipped."""

from __future__ import annotations

from datetime import datetime

from localrun.runtime import LocalRuntime
from tests.e2e.helpers import (
    create_trip,
    local_config,
    log_entries,
    phone,
    seed_participants,
    upload_product,
)
from tests.harness import eventually

PARTICIPANTS = 200
STOPPERS = range(100, 200, 5)  # 20 of them, spread over both chunks


def test_a_stop_during_a_long_fan_out_holds_within_a_second() -> None:
    config = local_config(env={"RATE_LIMIT_PER_SECOND": "20"})
    with LocalRuntime(config) as runtime:
        assert runtime.sandbox is not None and runtime.api is not None
        create_trip(runtime, "stop-trip")
        seed_participants(runtime, "stop-trip", PARTICIPANTS)
        job_id = upload_product(runtime, "stop-trip", "Matcha Kit Kat", 45000)
        sandbox = runtime.sandbox
        # ~2 s into the sending
        eventually(lambda: len(sandbox.messages()) >= 40, 60, what="the fan-out to start", interval=0.05)
        for n in STOPPERS:
            status = runtime.sandbox.send_inbound(from_phone=phone(n), text="STOP stop-trip")
            assert status == 200

        def all_decided() -> list[dict]:
            entries = log_entries(runtime, job_id)
            done = len(entries) >= PARTICIPANTS and all(e["status"]["S"] != "queued" for e in entries)
            return entries if done else []

        entries = eventually(
            all_decided,
            120,
            what=lambda: f"{PARTICIPANTS} outcomes, have {len(log_entries(runtime, job_id))}",
            interval=0.5,
        )
        runtime.wait_idle(60)
        ddb = runtime.client("dynamodb")
        table = runtime.table_name("ParticipantsTable")
        by_phone = {  # the product messages (the STOPs' replies go to the same numbers)
            m["to"]: m
            for m in runtime.sandbox.messages()
            if str(m["body"].get("biz_opaque_callback_data", "")).startswith(job_id)
        }
        outcomes = {e["participant_id"]["S"]: e for e in entries}
        late = []
        for n in STOPPERS:
            item = ddb.query(
                TableName=table,
                KeyConditionExpression="trip_id = :t",
                FilterExpression="wa_key = :k",
                ExpressionAttributeValues={":t": {"S": "stop-trip"}, ":k": {"S": phone(n)}},
            )["Items"]
            assert item and item[0]["status"]["S"] == "unsubscribed", f"STOP of {phone(n)} not applied"
            stopped_at = datetime.fromisoformat(item[0]["unsubscribed_at"]["S"]).timestamp()
            outcome = outcomes[item[0]["participant_id"]["S"]]["status"]["S"]
            product = by_phone.get(phone(n).lstrip("+"))
            assert (outcome == "skipped") == (product is None), (phone(n), outcome)
            if product is not None and product["received_at"] > stopped_at + 1.0:
                late.append((phone(n), round(product["received_at"] - stopped_at, 2)))
        assert not late, f"product messages accepted more than 1 s after the STOP was handled: {late}"
        skipped = sum(1 for n in STOPPERS if phone(n).lstrip("+") not in by_phone)
        assert skipped >= 5, f"only {skipped} of {len(STOPPERS)} STOPs came before their send"

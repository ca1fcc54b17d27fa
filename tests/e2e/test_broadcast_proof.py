"""Broadcasts, proofs and the ledger end to end: the local runtime in its own process (as ``make run``
starts it), driven over HTTP only: the API, the WhatsApp sandbox (messages, faults, statuses), moto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from jastipin.ids import stable_id
from tests.conftest import REGION
from tests.e2e.helpers import rebuild_audience, runtime_process
from tests.e2e.test_journey import Journey
from tests.harness import eventually

PYNAMODB_TIME = "%Y-%m-%dT%H:%M:%S.%f+0000"


class Runtime(Journey):
    def ddb(self):
        return boto3.client(
            "dynamodb",
            endpoint_url=self.moto,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def join(self, trip: str, phones: list[str], name: str = "Ani") -> None:
        before = len(self.messages())
        for phone in phones:
            response = self.http.post(
                self.sandbox + "/_sandbox/inbound", json={"from": phone, "text": f"JOIN {trip}", "name": name}
            )
            assert response.json() == {"webhook_status": 200}
        self.wait_for_messages(before + len(phones))

    def set_attributes(self, table: str, key: dict, **values: dict) -> None:
        names = {f"#{k}": k for k in values}
        self.ddb().update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{k}": v for k, v in values.items()},
        )

    def messages_since(self, start: int, count: int, timeout: float = 30) -> list[dict]:
        return self.wait_for_messages(start + count, timeout)[start:]

    def status(self, message: dict, status: str) -> None:
        response = self.http.post(
            self.sandbox + "/_sandbox/status",
            json={"id": message["id"], "status": status, "recipient_id": message["to"]},
        )
        assert response.json() == {"webhook_status": 200}


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with runtime_process() as (urls, _banner):
        yield Runtime(urls["api"], urls["sandbox"], urls["dynamodb"])


def ago(days: float) -> dict:
    return {"S": (datetime.now(UTC) - timedelta(days=days)).strftime(PYNAMODB_TIME)}


def test_estimate_then_broadcasts_reach_exactly_the_filtered_audience_once_in_order(runtime: Runtime):
    trip = "bc26"
    phones = [f"62813100000{n}" for n in range(5)]
    pids = [stable_id("p", "+" + p) for p in phones]
    assert (
        runtime.backend(
            "POST", "/api/trips", {"slug": trip, "title": "Jastip Korea", "owner_phone": "081234567890"}
        ).status_code
        == 201
    )
    runtime.join(trip, phones)
    # 2 opts out of marketing, 3 sends STOP, 4 has been quiet for 10 days: marketing reaches 0 and 1 only.
    runtime.set_attributes(
        "ContactsTable", {"wa_key": {"S": "+" + phones[2]}}, marketing_opt_out={"BOOL": True}
    )
    runtime.whatsapp_user_says(phones[3], "STOP")
    runtime.wait_for_messages(6)
    runtime.set_attributes("ContactsTable", {"wa_key": {"S": "+" + phones[4]}}, last_inbound_at=ago(10))
    runtime.set_attributes(
        "ParticipantsTable",
        {"trip_id": {"S": trip}, "participant_id": {"S": pids[4]}},
        last_active_at=ago(10),
    )
    # Those writes went around the kept audience counts (they stand for an opt-out and ten quiet days), so
    # the trip is counted again, as after a bulk import.
    assert rebuild_audience(runtime.moto, trip) == f"{trip}: 4 members counted\n"

    estimate = runtime.backend("GET", f"/api/trips/{trip}/broadcasts/estimate?template=trip_reminder").json()
    assert (estimate["participants"], estimate["total_rupiah"]) == (2, 70)
    assert estimate["text"] == "Kirim pesan ke 2 peserta = Rp70"
    month = runtime.backend(
        "GET", f"/api/trips/{trip}/broadcasts/estimate?template=trip_reminder&active_within_days=30"
    )
    assert month.json()["participants"] == 3
    utility = runtime.backend("GET", f"/api/trips/{trip}/broadcasts/estimate?template=product_update").json()
    assert utility["participants"] == 3  # no marketing consent needed

    dry = runtime.backend(
        "POST",
        f"/api/trips/{trip}/broadcasts",
        {"template": "trip_reminder", "parameters": ["Korea"], "dry_run": True},
    )
    assert dry.status_code == 200 and dry.json()["text"] == estimate["text"]

    start = len(runtime.messages())
    first = {"template": "trip_reminder", "parameters": ["Jastip Korea"], "idempotency_key": "promo-1"}
    second = {
        "template": "product_update",
        "parameters": ["Jastip Korea", "Gundam B"],
        "idempotency_key": "promo-2",
    }
    b1 = runtime.backend("POST", f"/api/trips/{trip}/broadcasts", first)
    b2 = runtime.backend("POST", f"/api/trips/{trip}/broadcasts", second)
    again = runtime.backend("POST", f"/api/trips/{trip}/broadcasts", first)
    assert (b1.status_code, b2.status_code, again.status_code) == (202, 202, 202)
    assert again.json()["broadcast_id"] == b1.json()["broadcast_id"] and again.json()["duplicate"] is True

    sent = runtime.messages_since(start, 5)
    time.sleep(1)
    assert runtime.messages()[start:] == sent  # nothing more: the duplicate request sent nothing
    by_template: dict[str, list[dict]] = {}
    for message in sent:
        by_template.setdefault(message["body"]["template"]["name"], []).append(message)
    assert sorted(m["to"] for m in by_template["trip_reminder"]) == phones[:2]
    assert sorted(m["to"] for m in by_template["product_update"]) == phones[:3]
    # Sequential per trip (FIFO, group = trip): the first broadcast is out before the second starts.
    assert max(m["received_at"] for m in by_template["trip_reminder"]) <= min(
        m["received_at"] for m in by_template["product_update"]
    )
    assert by_template["product_update"][0]["body"]["template"] == {
        "name": "product_update",
        "language": {"code": "id"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Jastip Korea"},
                    {"type": "text", "text": "Gundam B"},
                ],
            }
        ],
    }
    assert not [m for m in runtime.messages()[start:] if m["to"] in (phones[3], phones[4])]

    # The ledger: estimates beside what Meta reported. The sandbox's own "delivered" may beat the log entry
    # (a known gap), so report it again, plus "read" for the first broadcast.
    time.sleep(1)
    for message in sent:
        runtime.status(message, "delivered")
    for message in by_template["trip_reminder"]:
        runtime.status(message, "read")

    # The webhook queues the statuses; the inbound function applies them a moment later.
    def ledger_when_billed() -> dict:
        ledger = runtime.backend("GET", f"/api/trips/{trip}/ledger").json()
        return ledger if ledger["totals"]["billed_messages"] >= 5 else {}

    ledger = eventually(ledger_when_billed, 30, what="5 billed messages in the ledger", interval=0.2)
    assert [b["template"] for b in ledger["broadcasts"]] == ["trip_reminder", "product_update"]
    one, two = ledger["broadcasts"]
    assert (
        one["estimate"]["text"] == "Kirim pesan ke 2 peserta = Rp70"
        and two["estimate"]["total_rupiah"] == 105
    )
    assert one["outcome"]["statuses"]["read"] == 2 and two["outcome"]["statuses"]["delivered"] == 3
    assert (one["outcome"]["billed_messages"], two["outcome"]["billed_rupiah"]) == (
        2,
        105,
    )  # sandbox: utility
    assert ledger["totals"] == {"estimated_rupiah": 175, "billed_messages": 5, "billed_rupiah": 175}


def test_proofs_reach_the_jastiper_with_the_caption_even_under_the_pair_limit(runtime: Runtime):
    trip, owner, buyer = "prf26", "6281299998888", "6281311110000"
    assert (
        runtime.backend(
            "POST", "/api/trips", {"slug": trip, "title": "Jastip Thai", "owner_phone": "081299998888"}
        ).status_code
        == 201
    )
    runtime.join(trip, [buyer], name="Budi")
    participant = stable_id("p", "+" + buyer)

    # The jastiper never wrote to the business number: the proof comes as the image template.
    start = len(runtime.messages())
    body = {"participant_id": participant, "order_ref": "ORD-1", "image_url": "https://img.test/1.jpg"}
    response = runtime.backend("POST", f"/api/trips/{trip}/proofs", body)
    assert response.status_code == 202, response.text
    (template,) = runtime.messages_since(start, 1)
    assert template["to"] == owner and template["body"]["template"] == {
        "name": "proof_received",
        "language": {"code": "id"},
        "components": [
            {
                "type": "header",
                "parameters": [{"type": "image", "image": {"link": "https://img.test/1.jpg"}}],
            },
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Budi"}, {"type": "text", "text": "ORD-1"}],
            },
        ],
    }

    # Once the jastiper writes (window open), proofs are images with a caption; WhatsApp's pair rate limit
    # (131056) rejects two of a burst of three, and the retries still deliver all three, once each.
    runtime.whatsapp_user_says(owner, "halo")
    runtime.wait_for_messages(start + 2)
    assert (
        runtime.http.post(
            runtime.sandbox + "/_sandbox/faults",
            json={"to": owner, "http_status": 400, "code": 131056, "times": 2},
        ).status_code
        == 201
    )
    start = len(runtime.messages())
    for n in (2, 3, 4):
        body = {
            "participant_id": participant,
            "order_ref": f"ORD-{n}",
            "media_id": f"90{n}",
            "caption": "Lunas",
        }
        assert runtime.backend("POST", f"/api/trips/{trip}/proofs", body).status_code == 202
    images = runtime.messages_since(start, 3, timeout=40)
    assert sorted(json_of(m) for m in images) == sorted(
        json_of(
            {
                "body": {
                    "messaging_product": "whatsapp",
                    "recipient_type": "individual",
                    "to": owner,
                    "type": "image",
                    "image": {"id": f"90{n}", "caption": f"Bukti dari Budi untuk pesanan ORD-{n}: Lunas"},
                }
            }
        )
        for n in (2, 3, 4)
    )


def json_of(message: dict) -> str:
    """The request Meta would get, without the log key the sender adds (``biz_opaque_callback_data``)."""
    body = {k: v for k, v in message["body"].items() if k != "biz_opaque_callback_data"}
    return json.dumps(body, sort_keys=True)


def test_bad_input_gets_a_clear_4xx_naming_the_field(runtime: Runtime):
    trip = "bad26"
    runtime.backend("POST", "/api/trips", {"slug": trip, "title": "T", "owner_phone": "081234567890"})
    estimate = f"/api/trips/{trip}/broadcasts/estimate?template=trip_reminder&active_within_days="
    broadcasts = f"/api/trips/{trip}/broadcasts"
    # fmt: off
    cases = [
        ("GET", f"/api/trips/{trip}/broadcasts/estimate?template=nope", None, 422, "template"),
        ("GET", f"/api/trips/{trip}/broadcasts/estimate", None, 422, "template"),
        ("GET", f"{estimate}-1", None, 422, "active_within_days"),
        ("GET", f"{estimate}100000", None, 422, "active_within_days"),
        ("GET", "/api/trips/nope/broadcasts/estimate?template=trip_reminder", None, 404, "tripId"),
        ("POST", broadcasts, {"template": "nope", "parameters": []}, 422, "template"),
        ("POST", broadcasts, {"template": "product_update", "parameters": ["only one"]}, 422, "parameters"),
        ("POST", broadcasts, {"template": "trip_reminder", "parameters": ["x"], "active_within_days": 365},
         422, "active_within_days"),
        ("POST", "/api/trips/nope/broadcasts", {"template": "trip_reminder", "parameters": ["x"]},
         404, "tripId"),
        ("POST", f"/api/trips/{trip}/proofs",
         {"participant_id": "p_0000000000000000", "order_ref": "A", "media_id": "1"}, 422, "participant_id"),
        ("GET", "/api/trips/nope/ledger", None, 404, "tripId"),
    ]
    # fmt: on
    for method, path, body, status, field in cases:
        response = runtime.backend(method, path, body)
        assert (response.status_code, response.json()["error"]["field"]) == (status, field), (
            path,
            response.text,
        )

"""The newcomer's journey, end to end: start the local runtime the way the README says (a separate process),
then drive it only over HTTP — the API, the WhatsApp sandbox, and the moto server for the log."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import httpx
import pytest

from tests.conftest import REGION
from tests.e2e.helpers import runtime_process
from tests.harness import eventually

API_TOKEN = "local-api-token"


class Journey:
    def __init__(self, api: str, sandbox: str, moto: str) -> None:
        self.api, self.sandbox, self.moto = api, sandbox, moto
        self.http = httpx.Client(timeout=30)

    def backend(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return self.http.request(
            method, self.api + path, json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    def whatsapp_user_says(self, phone: str, text: str) -> None:
        response = self.http.post(
            self.sandbox + "/_sandbox/inbound", json={"from": phone, "text": text, "name": "Ani"}
        )
        assert response.json() == {"webhook_status": 200}

    def messages(self) -> list[dict]:
        return self.http.get(self.sandbox + "/_sandbox/messages").json()["messages"]

    def wait_for_messages(self, count: int, timeout: float = 30) -> list[dict]:
        eventually(
            lambda: len(self.messages()) >= count,
            timeout,
            what=lambda: f"{count} messages, sandbox has {self.messages()}",
            interval=0.1,
        )
        time.sleep(0.5)  # anything extra would show up now
        return self.messages()

    def log_items(self) -> list[dict]:
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=self.moto,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        return ddb.scan(TableName="NotificationsLogTable")["Items"]


@pytest.fixture(scope="module")
def journey() -> Iterator[Journey]:
    with runtime_process() as (urls, _banner):
        yield Journey(urls["api"], urls["sandbox"], urls["dynamodb"])


def test_newcomer_journey(journey: Journey):
    # 1. The jastiper's backend creates a trip.
    response = journey.backend(
        "POST", "/api/trips", {"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"}
    )
    assert response.status_code == 201, response.text

    # 2. Two participants join over WhatsApp; each gets the spec's reply.
    journey.whatsapp_user_says("6281311112222", "JOIN jpn25")
    journey.whatsapp_user_says("6285712345678", "join JPN25")
    replies = journey.wait_for_messages(2)
    assert sorted(m["to"] for m in replies) == ["6281311112222", "6285712345678"]
    assert all(m["body"]["text"]["body"].startswith("Terima kasih sudah join!") for m in replies)

    # 3. A product upload is answered at once and reaches both participants.
    response = journey.backend(
        "POST", "/api/trips/jpn25/products", {"name": "Action Figure A", "price": 450000}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    updates = journey.wait_for_messages(4)[2:]
    assert sorted(m["to"] for m in updates) == ["6281311112222", "6285712345678"]
    assert {m["body"]["text"]["body"] for m in updates} == {
        "Ada produk baru di trip Jastip Jepang: Action Figure A - Rp450.000\n\n"
        "Balas INFO untuk produk terbaru, STOP untuk berhenti."
    }

    # 4. INFO lists the latest products; STOP unsubscribes.
    journey.whatsapp_user_says("6281311112222", "INFO")
    info = journey.wait_for_messages(5)[4]
    assert (
        info["body"]["text"]["body"]
        == "Berikut produk terbaru trip Jastip Jepang:\n1. Action Figure A - Rp450.000"
    )
    journey.whatsapp_user_says("6285712345678", "STOP")
    stop = journey.wait_for_messages(6)[5]
    assert stop["to"] == "6285712345678"
    assert stop["body"]["text"]["body"].startswith("Anda berhenti menerima notifikasi.")

    # 5. The next product reaches only the participant still subscribed.
    response = journey.backend("POST", "/api/trips/jpn25/products", {"name": "Gundam B", "price": 1250000})
    assert response.status_code == 202
    last = journey.wait_for_messages(7)[6:]
    assert [m["to"] for m in last] == ["6281311112222"]
    assert "Gundam B - Rp1.250.000" in last[0]["body"]["text"]["body"]

    # 6. One log entry per recipient, with the wamid the API returned and no phone numbers.
    time.sleep(1.5)
    items = journey.log_items()
    by_wamid = {i["provider_msg_id"]["S"]: i for i in items if "provider_msg_id" in i}
    assert set(by_wamid) == {m["id"] for m in journey.messages()}
    product_entries = [i for i in items if i["job_id"]["S"] == job_id]
    assert len(product_entries) == 2
    assert all(i["status"]["S"] in {"sent", "delivered", "read"} for i in items)
    assert "6281311112222" not in repr(items)

    # 7. Bad input over real HTTP: a clear error naming the field, never a 500.
    response = journey.backend("POST", "/api/trips/jpn25/products", {"name": "X", "price": -5})
    assert response.status_code == 422 and response.json()["error"]["field"] == "price"
    response = journey.http.post(
        journey.api + "/api/trips", content=b"{oops", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert response.status_code == 400
    assert journey.http.post(journey.api + "/api/trips", json={}).status_code == 401

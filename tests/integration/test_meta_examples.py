"""Every webhook example in Meta's own OpenAPI description (tests/data/meta_webhook_examples.json) is
accepted with a 200 and handled deliberately: text gets an Indonesian reply, everything else none."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from tests.conftest import REGION, ROOT
from tests.integration.test_webhook_and_sender import post_webhook

EXAMPLES = json.loads((ROOT / "tests" / "data" / "meta_webhook_examples.json").read_text())["examples"]
# Meta's examples are from 2023: their messages would be taken for replays (older than the 7-day dedup
# window) and ignored. Dated now, they are what Meta would send today.
for _example in EXAMPLES.values():
    for _entry in _example.get("entry", []):
        for _change in _entry.get("changes", []):
            for _message in _change.get("value", {}).get("messages", []):
                if "timestamp" in _message:
                    _message["timestamp"] = str(int(time.time()))


def queued_replies(ctx) -> list[dict]:
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    url = ctx.stack.queues["NotificationsQueue"].url
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_meta_example_is_acknowledged_and_handled(ctx, name):
    payload = EXAMPLES[name]
    status, body = post_webhook(ctx, payload)
    assert status == 200, body
    messages = [m for e in payload["entry"] for c in e["changes"] for m in c["value"].get("messages", [])]
    texts = [m for m in messages if m.get("type") == "text" and m.get("from")]
    replies = queued_replies(ctx)
    assert len(replies) == len(texts)
    for reply in replies:
        assert reply["kind"] == "auto_reply"
        assert reply["message"].startswith("Halo! Perintah yang bisa dipakai")


def test_the_same_example_twice_replies_once(ctx):
    payload = EXAMPLES["Text Message"]
    assert post_webhook(ctx, payload)[0] == 200
    assert post_webhook(ctx, payload)[0] == 200
    assert len(queued_replies(ctx)) == 1


def test_non_ascii_body_signature_is_checked_on_the_raw_bytes(ctx):
    payload = json.loads(json.dumps(EXAMPLES["Text Message"]))
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "Kak, ada warna lain? 😀 é"
    raw = json.dumps(payload, ensure_ascii=False)
    assert post_webhook(ctx, raw)[0] == 200
    from localrun.sandbox import sign

    tampered = raw.replace("😀", "😁")
    assert post_webhook(ctx, tampered, signature=sign("local-app-secret", raw.encode()))[0] == 403

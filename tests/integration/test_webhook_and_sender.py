"""Webhook and sender handlers against a moto server over HTTP and the WhatsApp sandbox over HTTP."""

from __future__ import annotations

import copy
import json
import time

import boto3

from localrun.sandbox import sign, webhook_envelope
from tests.conftest import REGION, load_event
from tests.harness import FakeContext, sqs_event
from tests.integration.test_api import create_trip, upload

SECRET = "local-app-secret"


def post_webhook(ctx, payload: dict | str, *, signature: str | None = "auto", run_inbound: bool = True):
    """POST to the webhook handler; then (as the inbound queue's event source would) run the inbound function
    on what the webhook queued."""
    event = copy.deepcopy(load_event("webhook_message.json"))
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    event["body"] = body
    event["headers"] = {"content-type": "application/json"}
    if signature == "auto":
        event["headers"]["x-hub-signature-256"] = sign(SECRET, body.encode())
    elif signature is not None:
        event["headers"]["x-hub-signature-256"] = signature
    response = ctx.webhook.handler(event, FakeContext())
    if run_inbound and response["statusCode"] == 200:
        drain(ctx, "InboundQueue")
    return response["statusCode"], response.get("body")


def inbound(text: str, msg_id: str, phone: str = "6281311112222") -> dict:
    now = str(int(time.time()))  # Meta's time of the message: one older than 7 days is taken for a replay
    message = {"from": phone, "id": msg_id, "timestamp": now, "type": "text", "text": {"body": text}}
    return webhook_envelope(
        {"contacts": [{"profile": {"name": "Ani"}, "wa_id": phone}], "messages": [message]},
        phone_number_id="000000000000000",
    )


def drain(ctx, queue: str = "NotificationsQueue", rounds: int = 5) -> list[dict]:
    """Feed queued messages to the queue's function (the inbound function for InboundQueue, else the sender)
    as Lambda would, until the queue is empty."""
    function = ctx.inbound if queue == "InboundQueue" else ctx.sender
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    q = ctx.stack.queues[queue]
    responses = []
    for _ in range(rounds):
        messages = sqs.receive_message(
            QueueUrl=q.url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        event = sqs_event(messages, q.arn)
        response = function.handler(event, FakeContext())
        responses.append(response)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=q.url, ReceiptHandle=m["ReceiptHandle"])
    return responses


def test_verify_handshake(ctx):
    event = load_event("webhook_verify.json")
    response = ctx.webhook.handler(event, FakeContext())
    assert response["statusCode"] == 200 and response["body"] == "1158201444"
    assert response["headers"]["Content-Type"] == "text/plain"
    bad = copy.deepcopy(event)
    bad["queryStringParameters"]["hub.verify_token"] = "nope"
    assert ctx.webhook.handler(bad, FakeContext())["statusCode"] == 403


def test_sample_event_signature_verifies(ctx):
    create_trip(ctx)
    response = ctx.webhook.handler(load_event("webhook_message.json"), FakeContext())
    assert response["statusCode"] == 200


def test_the_function_url_events_meta_sends_are_handled_like_the_http_apis(ctx):
    """Meta's callback URL is the webhook's function URL (template output WebhookUrl): route key ``$default``,
    the URL's own domain, the same payload format 2.0; the handler routes on the path."""
    verify = ctx.webhook.handler(load_event("webhook_url_verify.json"), FakeContext())
    assert verify["statusCode"] == 200 and verify["body"] == "1158201444"
    create_trip(ctx)
    message = load_event("webhook_url_message.json")
    response = ctx.webhook.handler(message, FakeContext())
    assert response["statusCode"] == 200 and json.loads(response["body"])["status"] == "ok"
    unsigned = copy.deepcopy(message)
    del unsigned["headers"]["x-hub-signature-256"]
    assert ctx.webhook.handler(unsigned, FakeContext())["statusCode"] == 401
    elsewhere = copy.deepcopy(message)  # a function URL takes any path: only Meta's is served
    elsewhere["rawPath"] = elsewhere["requestContext"]["http"]["path"] = "/"
    assert ctx.webhook.handler(elsewhere, FakeContext())["statusCode"] == 404


def test_signature_missing_401_wrong_403_nothing_processed(ctx):
    create_trip(ctx)
    assert post_webhook(ctx, inbound("JOIN jpn25", "wamid.a"), signature=None)[0] == 401
    assert post_webhook(ctx, inbound("JOIN jpn25", "wamid.a"), signature="sha256=" + "0" * 64)[0] == 403
    drain(ctx)
    assert ctx.sandbox.messages() == []


def test_join_upload_fan_out_and_log(ctx):
    create_trip(ctx)
    assert post_webhook(ctx, inbound("JOIN jpn25", "wamid.a"))[0] == 200
    assert post_webhook(ctx, inbound("join JPN25", "wamid.b", phone="6285712345678"))[0] == 200
    drain(ctx)
    assert [m["body"]["text"]["body"].split("!")[0] for m in ctx.sandbox.messages()] == [
        "Terima kasih sudah join"
    ] * 2
    ctx.sandbox.clear()
    status, body = upload(ctx, {"name": "Action Figure A", "price": 450000})
    assert status == 202
    responses = drain(ctx)
    assert all(r == {"batchItemFailures": []} for r in responses)
    sent = ctx.sandbox.messages()
    assert sorted(m["to"] for m in sent) == ["6281311112222", "6285712345678"]
    assert {m["body"]["text"]["body"] for m in sent} == {
        "Ada produk baru di trip Jastip Jepang: Action Figure A - Rp450.000\n\n"
        "Balas INFO untuk produk terbaru, STOP untuk berhenti."
    }
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    items = ddb.query(
        TableName=ctx.stack.tables["NotificationsLogTable"],
        KeyConditionExpression="job_id = :j",
        ExpressionAttributeValues={":j": {"S": body["job_id"]}},
    )["Items"]
    assert sorted(i["provider_msg_id"]["S"] for i in items) == sorted(m["id"] for m in sent)
    assert {i["status"]["S"] for i in items} == {"sent"}


def test_statuses_are_queued_by_the_webhook_and_applied_by_the_inbound_function(ctx):
    """Meta's 200 for a status does not wait on the notifications log: the webhook queues delivered, read,
    failed (never ``sent``, which adds nothing) and the inbound function moves the entry forward, once however
    often Meta repeats it."""
    create_trip(ctx)
    assert post_webhook(ctx, inbound("JOIN jpn25", "wamid.st"))[0] == 200
    drain(ctx)
    ctx.sandbox.clear()
    _, body = upload(ctx, {"name": "Action Figure A", "price": 450000})
    drain(ctx)
    (sent,) = ctx.sandbox.messages()
    statuses = [
        {
            "id": sent["id"],
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": sent["to"],
            "biz_opaque_callback_data": sent["body"]["biz_opaque_callback_data"],
        }
        for status in ("sent", "read", "delivered", "read")
    ]
    payload = webhook_envelope({"statuses": statuses}, phone_number_id="000000000000000")
    code, answer = post_webhook(ctx, payload, run_inbound=False)
    assert code == 200 and json.loads(answer)["statuses"] == 3
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)

    def entry() -> dict:
        (item,) = ddb.query(
            TableName=ctx.stack.tables["NotificationsLogTable"],
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": body["job_id"]}},
        )["Items"]
        return item

    assert entry()["status"]["S"] == "sent"  # queued, not yet applied
    responses = drain(ctx, "InboundQueue")
    assert responses == [{"batchItemFailures": []}]
    assert entry()["status"]["S"] == "read"


def test_same_webhook_twice_replies_once(ctx):
    create_trip(ctx)
    payload = inbound("JOIN jpn25", "wamid.dup")
    assert post_webhook(ctx, payload)[0] == 200
    assert post_webhook(ctx, payload)[0] == 200
    drain(ctx)
    assert len(ctx.sandbox.messages()) == 1


def test_the_webhook_queues_messages_and_the_inbound_function_runs_them(ctx):
    """Meta's 200 does not wait for the command: the webhook queues the message (one SQS message each) and
    applies nothing; the inbound function then handles it once, however often it is delivered."""
    create_trip(ctx)
    payload = inbound("JOIN jpn25", "wamid.q1")
    payload["entry"][0]["changes"][0]["value"]["messages"].append(
        {
            "from": "6281311112222",
            "id": "wamid.q2",
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": "INFO"},
        }
    )
    status, body = post_webhook(ctx, payload, run_inbound=False)
    assert status == 200 and json.loads(body)["queued"] == 2
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    url = ctx.stack.queues["InboundQueue"].url
    depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "2"
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    assert ddb.scan(TableName=ctx.stack.tables["ContactsTable"])["Count"] == 0  # nothing applied yet
    assert post_webhook(ctx, payload, run_inbound=False)[0] == 200  # Meta delivers it again
    drain(ctx, "InboundQueue")
    assert ddb.scan(TableName=ctx.stack.tables["ParticipantsTable"])["Count"] == 1
    drain(ctx)
    texts_sent = [m["body"]["text"]["body"] for m in ctx.sandbox.messages()]
    assert len(texts_sent) == 2  # JOIN's and INFO's replies, once each
    assert texts_sent[0].startswith("Terima kasih sudah join!")


def test_an_unreadable_inbound_record_fails_alone_without_logging_its_body(ctx, capsys):
    create_trip(ctx)
    assert post_webhook(ctx, inbound("JOIN jpn25", "wamid.ok"), run_inbound=False)[0] == 200
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    queue = ctx.stack.queues["InboundQueue"]
    (message,) = sqs.receive_message(QueueUrl=queue.url)["Messages"]
    good = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue.arn,
        "awsRegion": REGION,
    }
    bad = {**good, "messageId": "bad-1", "body": '{"message": {"text": "+6281399998888 secret"}}'}
    response = ctx.inbound.handler({"Records": [good, bad]}, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert "6281399998888" not in capsys.readouterr().out
    drain(ctx)
    assert [m["body"]["text"]["body"][:24] for m in ctx.sandbox.messages()] == ["Terima kasih sudah join!"]


def test_a_message_that_cannot_be_queued_gets_a_500_so_meta_delivers_it_again(ctx):
    sqs = boto3.client("sqs", endpoint_url=ctx.moto_url, region_name=REGION)
    sqs.delete_queue(QueueUrl=ctx.stack.queues["InboundQueue"].url)
    status, body = post_webhook(ctx, inbound("JOIN jpn25", "wamid.lost"), run_inbound=False)
    assert status == 500 and "6281311112222" not in body


def test_unparseable_or_odd_payloads_are_acknowledged(ctx):
    assert post_webhook(ctx, "[]")[0] == 200
    assert (
        post_webhook(
            ctx,
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messages": [
                                        {
                                            "from": "6281311112222",
                                            "id": "wamid.img",
                                            "type": "image",
                                            "image": {"id": "1"},
                                        }
                                    ]
                                },
                            }
                        ]
                    }
                ],
            },
        )[0]
        == 200
    )
    assert post_webhook(ctx, "not json at all")[0] == 200


def test_sender_reports_only_the_broken_record(ctx):
    good = load_event("sqs_notifications.json")["Records"][0]
    bad = {**good, "messageId": "bad-1", "body": '{"jobId": 1}'}
    response = ctx.sender.handler({"Records": [good, bad]}, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}


def test_the_sample_inbound_event_joins_and_queues_the_reply(ctx):
    """events/sqs_inbound.json (for ``sam local invoke InboundFunction``) is what the webhook queues."""
    create_trip(ctx)
    assert ctx.inbound.handler(load_event("sqs_inbound.json"), FakeContext()) == {"batchItemFailures": []}
    drain(ctx)
    (message,) = ctx.sandbox.messages()
    assert message["to"] == "6281311112222"
    assert message["body"]["text"]["body"].startswith("Terima kasih sudah join!")


def test_a_replayed_join_older_than_the_dedup_window_does_not_undo_a_stop(ctx):
    """Meta signs the body, not a time: a captured JOIN replayed after its idempotency record expired (7 days)
    must not re-join someone who sent STOP since."""
    create_trip(ctx)
    old_join = inbound("JOIN jpn25", "wamid.join-old")
    message = old_join["entry"][0]["changes"][0]["value"]["messages"][0]
    assert post_webhook(ctx, old_join)[0] == 200
    assert post_webhook(ctx, inbound("STOP", "wamid.stop"))[0] == 200
    ddb = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    table = ctx.stack.tables["IdempotencyTable"]
    for item in ddb.scan(TableName=table)["Items"]:  # as if every record had expired
        ddb.delete_item(TableName=table, Key={"id": item["id"]})
    message["timestamp"] = str(int(time.time()) - 8 * 24 * 3600)  # the capture is 8 days old
    assert post_webhook(ctx, old_join)[0] == 200  # acknowledged (Meta-shaped), and ignored
    (participant,) = ddb.scan(TableName=ctx.stack.tables["ParticipantsTable"])["Items"]
    assert participant["status"]["S"] == "unsubscribed"
    drain(ctx)
    assert [m["body"]["text"]["body"][:14] for m in ctx.sandbox.messages()] == [
        "Terima kasih s",
        "Anda berhenti ",
    ]

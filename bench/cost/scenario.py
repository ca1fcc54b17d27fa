"""The scenario the cost report counts: in one process, moto for AWS and the local WhatsApp sandbox for Meta,
the backend's request, the queue drained as Lambda's event source mapping drains it, Meta's status webhooks
and the statuses applied, each through the real handler (see ``bench/cost_report.py``)."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.cost.assumptions import STATUSES_PER_MESSAGE
from bench.cost.clock import VirtualClock
from bench.cost.dynamodb import schemas
from bench.cost.lambdas import CountingStream, FunctionUse, LambdaContext
from bench.cost.meter import AwsMeter
from bench.cost.report import Report
from localrun.poller import sqs_record
from localrun.project import load_function

ROOT = Path(__file__).resolve().parents[2]
REGION = "ap-southeast-3"
TRIP = "cost10k"


def _seed(trip_title: str, recipients: int, ddb: Any, tables: dict[str, str]) -> None:
    from jastipin.ids import stable_id

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    inbound = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    ddb.put_item(
        TableName=tables["TripsTable"],
        Item={
            "trip_id": {"S": TRIP},
            "title": {"S": trip_title},
            "owner_phone": {"S": "+6281234567890"},
            "window_policy": {"S": "skip"},
            "created_at": {"S": stamp},
        },
    )
    requests: list[tuple[str, dict]] = []
    for n in range(recipients):
        phone = f"+62813{n:08d}"
        pid = stable_id("p", phone)
        requests.append(
            (
                tables["ParticipantsTable"],
                {
                    "trip_id": {"S": TRIP},
                    "participant_id": {"S": pid},
                    "wa_key": {"S": phone},
                    "phone": {"S": phone},
                    "name": {"S": f"Peserta {n}"},
                    "status": {"S": "active"},
                    "joined_at": {"S": stamp},
                    "last_active_at": {"S": stamp},
                },
            )
        )
        requests.append(
            (
                tables["ContactsTable"],
                {
                    "wa_key": {"S": phone},
                    "participant_id": {"S": pid},
                    "phone": {"S": phone},
                    "name": {"S": f"Peserta {n}"},
                    "last_inbound_at": {"S": inbound},
                    "last_trip_id": {"S": TRIP},
                    "marketing_opt_out": {"BOOL": False},
                    "updated_at": {"S": stamp},
                },
            )
        )
    for start in range(0, len(requests), 25):
        batch: dict[str, list] = {}
        for table, item in requests[start : start + 25]:
            batch.setdefault(table, []).append({"PutRequest": {"Item": item}})
        ddb.batch_write_item(RequestItems=batch)


def _status_payload(message: dict, status: str, phone_number_id: str) -> bytes:
    """A status webhook as Meta sends it (Cloud API v23.0 ``statuses``), with per-message pricing."""
    entry: dict[str, Any] = {
        "id": message["id"],
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": message["to"],
    }
    if message["body"].get("biz_opaque_callback_data"):
        entry["biz_opaque_callback_data"] = message["body"]["biz_opaque_callback_data"]  # Meta echoes it
    if status != "read":
        template = message["type"] == "template"
        entry["pricing"] = {
            "billable": template,
            "pricing_model": "PMP",
            "category": "marketing" if template else "service",
            "type": "regular" if template else "free_customer_service",
        }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "statuses": [entry],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def run(recipients: int = 1000, scale_to: int = 10_000, kind: str = "broadcast") -> Report:
    os.environ.update(
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto's dummy credentials
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="Jastipin",
        POWERTOOLS_SERVICE_NAME="jastipin",
    )
    import boto3
    from moto import mock_aws

    from localrun.api import Route, build_event, build_function_url_event
    from localrun.project import LOCAL_SECRETS
    from localrun.sandbox import WhatsAppSandbox, sign
    from localrun.stack import LocalStack

    saved_env = dict(os.environ)
    real_stdout = sys.stdout
    log_stream = CountingStream()
    with (
        mock_aws(),
        WhatsAppSandbox(
            access_token=LOCAL_SECRETS["WA_ACCESS_TOKEN"], phone_number_id="000000000000000"
        ) as sandbox,
    ):
        stack = LocalStack(ROOT / "template.yaml", endpoint_url=None, region=REGION).create()  # type: ignore[arg-type]
        specs = stack.functions()
        for spec in specs.values():  # the four handlers share this process: each reads its own
            os.environ.update(spec.environment)
        os.environ.update(LOCAL_SECRETS)
        os.environ.update(
            SECRETS_SSM_PREFIX="", WA_API_BASE_URL=sandbox.url, WA_PHONE_NUMBER_ID="000000000000000"
        )
        from jastipin.outbound.delivery import Sender
        from jastipin.outbound.rate_limit import GlobalRateLimiter
        from jastipin.runtime import services
        from jastipin.settings import get_settings

        get_settings.cache_clear()
        services.cache_clear()
        ddb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        meter = AwsMeter(schemas(stack.resources, stack.tables), ddb)
        clock = VirtualClock()
        _seed("Jastip Jepang", recipients, ddb, stack.tables)

        sys.stdout = log_stream  # handlers' loggers bind stdout when their modules load
        try:
            handlers = {
                name: load_function(name, f"cost_{name}_app")
                for name in ("enqueue", "sender", "webhook", "inbound")
            }
            svc = services()
            settings = svc.settings
            if settings.rate_limit_per_second <= 0:
                raise SystemExit(
                    "the cost report models the rate-limited sender: RATE_LIMIT_PER_SECOND must be > 0"
                )
            limiter = GlobalRateLimiter(
                svc.dynamodb,
                settings.rate_limit_table,
                f"whatsapp#{settings.wa_phone_number_id}",
                settings.rate_limit_per_second,
                clock=clock.time,
                sleep=clock.sleep,
            )
            svc.__dict__["sender"] = Sender(settings, svc.queues, svc.whatsapp, limiter, sleep=clock.sleep)
            import jastipin.outbound.delivery as delivery_module

            delivery_module.time = types.SimpleNamespace(  # type: ignore[attr-defined]
                time=clock.time, sleep=clock.sleep, monotonic=time.monotonic
            )
            functions = {
                logical: FunctionUse(specs[logical].memory_mb)
                for logical in ("EnqueueFunction", "SenderFunction", "WebhookFunction", "InboundFunction")
            }
            timeouts = {logical: specs[logical].timeout for logical in functions}

            def invoke(logical: str, module: types.ModuleType, event: dict) -> Any:
                meter.function = logical
                use = functions[logical]
                before = log_stream.bytes
                context = LambdaContext(logical, timeouts[logical], clock, REGION)
                meter.invoking_thread = threading.get_ident()
                meter.call_seconds = meter.modelled_seconds = 0.0
                started = clock.time()
                try:
                    return module.handler(event, context)
                finally:
                    seconds = clock.time() - started - meter.call_seconds + meter.modelled_seconds
                    use.invocations += 1
                    use.billed_ms += max(1, math.ceil(seconds * 1000))
                    use.log_bytes += log_stream.bytes - before
                    meter.function = "setup"
                    meter.invoking_thread = None

            def drain(logical: str, module: types.ModuleType, queue: Any) -> None:
                """Feed the queue to its function until it is empty, as Lambda's event source mapping does
                (the template's BatchSize); the poller's calls are billed like the function's."""
                (source,) = [q for q in specs[logical].sqs_sources if q["queue"].url == queue.url]
                while True:
                    meter.function = logical
                    messages = sqs.receive_message(
                        QueueUrl=queue.url,
                        MaxNumberOfMessages=min(10, source["batch_size"]),
                        MessageSystemAttributeNames=["All"],
                    ).get("Messages", [])
                    if not messages:
                        break
                    records = [sqs_record(m, queue.arn, REGION) for m in messages]
                    result = invoke(logical, module, {"Records": records})
                    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
                    done = [m for m in messages if m["MessageId"] not in failed]
                    meter.function = logical
                    if done:
                        sqs.delete_message_batch(
                            QueueUrl=queue.url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                for i, m in enumerate(done)
                            ],
                        )
                    if failed:
                        raise RuntimeError(f"{logical} failed records: {sorted(failed)}")
                meter.function = "setup"

            with meter.installed():
                # 1. the backend's request
                if kind == "broadcast":
                    route, path = "/api/trips/{tripId}/broadcasts", f"/api/trips/{TRIP}/broadcasts"
                    body = {
                        "template": "trip_reminder",
                        "parameters": ["Jastip Jepang"],
                        "idempotency_key": "cost",
                    }
                    queue = stack.queues["BroadcastQueue"]
                else:
                    route, path = "/api/trips/{tripId}/products", f"/api/trips/{TRIP}/products"
                    body = {"name": "Action Figure A", "price": 450000}
                    queue = stack.queues["NotificationsQueue"]
                raw = json.dumps(body).encode()
                headers = {
                    "content-type": "application/json",
                    "authorization": f"Bearer {LOCAL_SECRETS['API_TOKEN']}",
                }
                event = build_event(
                    Route("POST", route, None), "POST", path, "", headers, raw, {"tripId": TRIP}
                )  # type: ignore[arg-type]
                response = invoke("EnqueueFunction", handlers["enqueue"], event)
                assert response["statusCode"] == 202, response
                http_api_requests = 1  # the backend's call goes through the HTTP API

                # 2. the queue, drained as Lambda's event source mapping drains it (the template's BatchSize)
                drain("SenderFunction", handlers["sender"], queue)
                meter.function = "setup"

                # 3. Meta's status webhooks (sent, delivered, read per message), through the function URL
                delivered = sandbox.messages()
                secret = LOCAL_SECRETS["WA_APP_SECRET"]
                webhooks = function_url_requests = 0
                for status in STATUSES_PER_MESSAGE:
                    for message in delivered:
                        raw = _status_payload(message, status, settings.wa_phone_number_id)
                        headers = {
                            "content-type": "application/json",
                            "x-hub-signature-256": sign(secret, raw),
                        }
                        event = build_function_url_event(
                            "POST", "/api/webhooks/whatsapp", "", headers, raw, region=REGION
                        )
                        response = invoke("WebhookFunction", handlers["webhook"], event)
                        assert response["statusCode"] == 200, response
                        webhooks += 1
                        function_url_requests += 1

                # 4. the statuses the webhook queued, applied by the inbound function
                drain("InboundFunction", handlers["inbound"], stack.queues["InboundQueue"])
        finally:
            sys.stdout = real_stdout
            os.environ.clear()
            os.environ.update(saved_env)
            get_settings.cache_clear()
            services.cache_clear()
            import jastipin.outbound.delivery as delivery_module

            delivery_module.time = time  # type: ignore[attr-defined]

    if len(delivered) != recipients:
        raise RuntimeError(f"expected {recipients} messages at the sandbox, got {len(delivered)}")
    return Report(
        kind=kind,
        recipients=recipients,
        scale=scale_to / recipients,
        delivered=len(delivered),
        rate_limit=settings.rate_limit_per_second,
        aws=dict(meter.usage),
        functions=functions,
        http_api_requests=http_api_requests,
        function_url_requests=function_url_requests,
        webhooks=webhooks,
        slots_missed=limiter.dropped,
    )

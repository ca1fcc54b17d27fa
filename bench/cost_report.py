"""What the AWS side of a 10,000-recipient fan-out costs, counted by running the real code paths.

    .venv/bin/python bench/cost_report.py          # a broadcast, measured at 1,000 and scaled to 10,000
    .venv/bin/python bench/cost_report.py --kind product_update --recipients 2000

One process, moto (``mock_aws``) for AWS and the local WhatsApp sandbox for Meta:

1. the backend's request (``POST /api/trips/{tripId}/broadcasts``, or ``.../products``) through the enqueue
   function's handler;
2. the queue drained the way Lambda's event source mapping does it (batches of the template's BatchSize,
   the sender function's handler, a ``DeleteMessageBatch`` for what succeeded), including the fan-out, the
   chunk jobs and whatever the sender re-queues when an invocation runs out of time;
3. three status webhooks per delivered message (sent, delivered, read), signed as Meta signs them, through the
   webhook function's handler, as the webhook function's URL delivers them (template output ``WebhookUrl``,
   where Meta points: function URL requests carry no charge of their own, unlike HTTP API requests);
4. the statuses the webhook queued, drained from the inbound queue through the inbound function's handler
   the same way.

Every AWS call (boto3 and PynamoDB both end in botocore's ``BaseClient._make_api_call``) is recorded and
turned into billing units: SQS requests per 64 KB chunk, DynamoDB read and write request units from the item
sizes and the template's indexes (an index is written when a written attribute is projected into it), Lambda
requests and GB-seconds (the template's memory sizes), HTTP API requests (the backend's call only).
``PRICES`` is the one price table.

Lambda duration is the handler's own time in this process, with each AWS call it waits for counted at a
typical in-region latency (``AWS_LATENCY_MS``) instead of moto's time, plus, for the sender, the time it waits
for the global rate limit (``RATE_LIMIT_PER_SECOND``): the limiter and the sender's deadline run on a virtual
clock, so the waits are counted without being slept. Set-up (the trip,
its participants) is not counted. moto's index queries slow down with table size, so the default run is
1,000 recipients, scaled linearly (each count × 10,000 / recipients; the few per-request calls are overstated
by that factor, a fraction of a cent).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import sys
import threading
import time
import types
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "layers" / "common"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

REGION = "ap-southeast-3"
TRIP = "cost10k"
TARGET_USD = 0.06  # issue 5: per 10,000 delivered messages
STATUSES_PER_MESSAGE = ("sent", "delivered", "read")
LAMBDA_LOG_PLATFORM_BYTES = 300  # START, END and REPORT lines Lambda writes per invocation

# ---------------------------------------------------------------------------------------------- prices
# AWS list prices, us-east-1, on-demand, USD, without the free tier (ap-southeast-3, Jakarta, is a few per
# cent higher for most of these). Edit here and nowhere else.
PRICES: dict[str, tuple[float, str]] = {
    "http_api_request": (1.00 / 1e6, "API Gateway HTTP API, per request (first 300 M/month; per 512 KB)"),
    "function_url_request": (0.0, "Lambda function URL, per request: none (invocation and duration only)"),
    "lambda_request": (0.20 / 1e6, "Lambda, per invocation"),
    "lambda_gb_second": (0.0000166667, "Lambda x86_64, per GB-second"),
    "sqs_standard_request": (0.40 / 1e6, "SQS standard queue, per request (each 64 KB chunk of payload)"),
    "sqs_fifo_request": (0.50 / 1e6, "SQS FIFO queue, per request (each 64 KB chunk of payload)"),
    "dynamodb_write_unit": (0.625 / 1e6, "DynamoDB on-demand, per write request unit (1 KB)"),
    "dynamodb_read_unit": (
        0.125 / 1e6,
        "DynamoDB on-demand, per read request unit (4 KB strong, 8 KB eventual)",
    ),
    # Outside the list, billed all the same:
    "cloudwatch_logs_gb": (0.50, "CloudWatch Logs ingestion, per GB (function logs and EMF metrics)"),
    "xray_trace": (5.00 / 1e6, "X-Ray, per trace recorded (Tracing: Active; default sampling 1/s + 5 %)"),
}


# Typical latency of one call from Lambda in the same region (milliseconds), used for Lambda duration.
AWS_LATENCY_MS = {"dynamodb": 6.0, "sqs": 12.0}


def price(name: str) -> float:
    return PRICES[name][0]


# ---------------------------------------------------------------------------------------------- clock
class VirtualClock:
    """Real time plus every wait the rate limiter asked for: a sleep returns at once and moves the clock, so
    a sender invocation's modelled duration includes the waits without the benchmark sleeping them."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._last = threading.local()

    def time(self) -> float:
        now = time.time() + self._offset
        self._last.value = now
        return now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            target = getattr(self._last, "value", time.time() + self._offset) + max(seconds, 0.0)
            now = time.time() + self._offset
            if target > now:
                self._offset += target - now


# ---------------------------------------------------------------------------------------------- item sizes
def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return 1 + (len(digits) + 1) // 2
    if kind == "B":
        return len(data) if isinstance(data, bytes) else len(base64.b64decode(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: item}) for item in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(item) for item in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in data.items())
    return len(json.dumps(data))


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (its documented sizing rules)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


@dataclass
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: frozenset[str] = frozenset()


@dataclass
class TableSchema:
    name: str
    keys: tuple[str, ...]
    indexes: list[Index] = field(default_factory=list)

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self.keys}

    def projected_size(self, index: Index, item: dict[str, Any]) -> int:
        if index.projection == "ALL":
            return item_size(item)
        names = set(self.keys) | set(index.keys) | set(index.included)
        return item_size({k: v for k, v in item.items() if k in names})


def schemas(template_resources: dict[str, Any], tables: dict[str, str]) -> dict[str, TableSchema]:
    found = {}
    for logical_id, name in tables.items():
        props = template_resources[logical_id]["Properties"]
        schema = TableSchema(name, tuple(k["AttributeName"] for k in props["KeySchema"]))
        for gsi in props.get("GlobalSecondaryIndexes", []):
            projection = gsi["Projection"]
            schema.indexes.append(
                Index(
                    gsi["IndexName"],
                    tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                    projection["ProjectionType"],
                    frozenset(projection.get("NonKeyAttributes", [])),
                )
            )
        found[name] = schema
    return found


_KEYWORDS = {"SET", "REMOVE", "ADD", "DELETE", "if_not_exists", "list_append"}


def updated_attributes(params: dict[str, Any]) -> set[str]:
    expression = re.sub(r":\w+", "", params.get("UpdateExpression", ""))
    names = params.get("ExpressionAttributeNames", {})
    found = {names.get(token, token) for token in re.findall(r"#\w+", expression)}
    found |= {w for w in re.findall(r"(?<![#\w])[A-Za-z_]\w*", expression) if w not in _KEYWORDS}
    return found


# ---------------------------------------------------------------------------------------------- the meter
@dataclass
class Usage:
    calls: int = 0
    billed_requests: float = 0.0  # SQS: 64 KB chunks
    write_units: Counter[str] = field(default_factory=Counter)  # by "table" or "table/index"
    read_units: Counter[str] = field(default_factory=Counter)


class AwsMeter:
    """Wraps botocore's single choke point and books each call under (function, service, operation)."""

    def __init__(self, tables: dict[str, TableSchema], ddb_client: Any) -> None:
        self.tables = tables
        self.usage: dict[tuple[str, str, str], Usage] = defaultdict(Usage)
        self.function = "setup"
        self.invoking_thread: int | None = None  # the handler's own thread: its calls add to its duration
        self.call_seconds = 0.0  # time spent in those calls (moto's, replaced by AWS_LATENCY_MS)
        self.modelled_seconds = 0.0
        self.paused = threading.local()
        self.call = threading.local()  # .before: the item an UpdateItem of this thread is about to change
        self._lock = threading.Lock()
        self._ddb = ddb_client  # for item sizes after updates (not counted)
        self._original: Callable[..., Any] | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[AwsMeter]:
        from botocore.client import BaseClient
        from botocore.exceptions import ClientError

        original = BaseClient._make_api_call
        meter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if getattr(meter.paused, "on", False) or meter.function == "setup":
                return original(client, operation, params)
            service = client.meta.service_model.service_name
            meter.call.before = None
            if (
                service == "dynamodb"
                and operation == "UpdateItem"
                and params.get("TableName") in meter.tables
            ):
                # what the item was: an index entry that moves costs two writes, one that appears costs one
                meter.call.before = meter.full_item(meter.tables[params["TableName"]], params["Key"], None)
            started = time.perf_counter()
            try:
                response = original(client, operation, params)
            except ClientError as exc:
                meter.book(service, operation, params, None, exc.response.get("Error", {}).get("Code"))
                raise
            finally:
                if threading.get_ident() == meter.invoking_thread:
                    meter.call_seconds += time.perf_counter() - started
                    meter.modelled_seconds += AWS_LATENCY_MS.get(service, 10.0) / 1000
            meter.book(service, operation, params, response, None)
            return response

        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        self.paused.on = True
        try:
            yield
        finally:
            self.paused.on = False

    def book(
        self, service: str, operation: str, params: dict, response: dict | None, error: str | None
    ) -> None:
        usage = Usage(calls=1)
        if service == "sqs":
            usage.billed_requests = self._sqs_requests(operation, params, response)
            target = "fifo" if params.get("QueueUrl", "").endswith(".fifo") else "standard"
            operation = f"{operation} ({target})"
        elif service == "dynamodb":
            self._dynamodb_units(usage, operation, params, response, error)
        with self._lock:
            total = self.usage[(self.function, service, operation)]
            total.calls += usage.calls
            total.billed_requests += usage.billed_requests
            total.write_units.update(usage.write_units)
            total.read_units.update(usage.read_units)

    # -- SQS -----------------------------------------------------------------------------------------------
    @staticmethod
    def _sqs_requests(operation: str, params: dict, response: dict | None) -> float:
        if operation == "SendMessage":
            payload = len(params.get("MessageBody", "").encode())
        elif operation == "SendMessageBatch":
            payload = sum(len(e["MessageBody"].encode()) for e in params.get("Entries", []))
        elif operation == "ReceiveMessage":
            payload = sum(len(m["Body"].encode()) for m in (response or {}).get("Messages", []))
        else:
            payload = 0
        return max(1, math.ceil(payload / 65536))

    # -- DynamoDB ------------------------------------------------------------------------------------------
    def _write(
        self,
        usage: Usage,
        table: TableSchema,
        item: dict,
        changed: set[str] | None,
        before: dict | None = None,
    ) -> None:
        """A put (changed=None: every index holding the item) or an update of ``changed`` attributes of what
        was ``before`` (None: the update created the item)."""
        usage.write_units[table.name] += max(1, math.ceil(item_size(item) / 1024))
        for index in table.indexes:
            if not all(k in item for k in index.keys):
                continue  # sparse: the item is not in this index
            if changed is not None:
                keys = set(table.keys) | set(index.keys)
                touched = changed & (keys | index.included) if index.projection != "ALL" else changed
                if not touched:
                    continue
            units = max(1, math.ceil(table.projected_size(index, item) / 1024))
            was_indexed = before is not None and all(k in before for k in index.keys)
            if was_indexed and any(before.get(k) != item.get(k) for k in index.keys):  # type: ignore[union-attr]
                units *= 2  # the index entry moves: a delete and a put
            usage.write_units[f"{table.name}/{index.name}"] += units

    def full_item(self, table: TableSchema, key: dict, missing: dict | None) -> dict | None:
        with self.uncounted():
            return (
                self._ddb.get_item(TableName=table.name, Key=key, ConsistentRead=True).get("Item") or missing
            )

    def _full_item(self, table: TableSchema, key: dict) -> dict:
        return self.full_item(table, key, key) or key

    @staticmethod
    def _read_units(size: int, consistent: bool) -> float:
        units = max(1, math.ceil(size / 4096))
        return units if consistent else units / 2

    def _dynamodb_units(
        self, usage: Usage, operation: str, params: dict, response: dict | None, error
    ) -> None:
        name = params.get("TableName")
        table = self.tables.get(name) if name else None
        if operation == "PutItem" and table:
            if error:
                usage.write_units[table.name] += 1
            else:
                self._write(usage, table, params["Item"], None)
        elif operation == "UpdateItem" and table:
            if error:  # a failed condition still costs the write
                usage.write_units[table.name] += 1
            else:
                item = self._full_item(table, params["Key"])
                self._write(usage, table, item, updated_attributes(params), self.call.before)
        elif operation == "DeleteItem" and table:
            usage.write_units[table.name] += 1
        elif operation == "BatchWriteItem":
            for table_name, requests in params["RequestItems"].items():
                schema = self.tables[table_name]
                for request in requests:
                    if "PutRequest" in request:
                        self._write(usage, schema, request["PutRequest"]["Item"], None)
                    else:
                        usage.write_units[table_name] += 1
        elif operation == "GetItem" and table:
            item = (response or {}).get("Item")
            size = item_size(self._full_item(table, params["Key"])) if item else 0
            usage.read_units[table.name] += self._read_units(size, bool(params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table_name, request in params["RequestItems"].items():
                schema = self.tables[table_name]
                consistent = bool(request.get("ConsistentRead"))
                items = (response or {}).get("Responses", {}).get(table_name, [])
                # A projection may leave out part of the key (the membership watch reads participant_id
                # and status): match on the key attributes the items carry.
                shown = [k for k in schema.keys if items and k in items[0]]
                found = {json.dumps({k: i[k] for k in shown}, sort_keys=True) for i in items}
                for key in request["Keys"]:
                    hit = json.dumps({k: key[k] for k in shown}, sort_keys=True) in found
                    size = item_size(self._full_item(schema, key)) if hit else 0  # billed on the whole item
                    usage.read_units[table_name] += self._read_units(size, consistent)
        elif operation in ("Query", "Scan") and table:
            items = (response or {}).get("Items", [])
            read = int((response or {}).get("ScannedCount", len(items)))
            average = item_size(items[0]) if items else 100
            size = sum(item_size(i) for i in items) + average * max(0, read - len(items))  # filtered out
            where = f"{table.name}/{params['IndexName']}" if params.get("IndexName") else table.name
            usage.read_units[where] += self._read_units(size, bool(params.get("ConsistentRead")))


# ---------------------------------------------------------------------------------------------- Lambda
@dataclass
class FunctionUse:
    memory_mb: int
    invocations: int = 0
    billed_ms: int = 0
    log_bytes: int = 0


class CountingStream(io.TextIOBase):
    """Stands in for stdout while handlers run: counts what Lambda would ship to CloudWatch Logs."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def flush(self) -> None:
        pass


class LambdaContext:
    def __init__(self, name: str, timeout: int, clock: VirtualClock) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.function_version = "$LATEST"
        self.aws_request_id = str(uuid.uuid4())
        self._clock = clock
        self._deadline = clock.time() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.time()) * 1000))


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Report:
    kind: str
    recipients: int
    scale: float
    delivered: int
    rate_limit: float
    aws: dict[tuple[str, str, str], Usage]
    functions: dict[str, FunctionUse]
    http_api_requests: int
    function_url_requests: int
    webhooks: int
    slots_missed: int = 0  # send slots the limiter handed out and the sender could not use in time

    def lines(self) -> list[tuple[str, str, float, str]]:
        """(group, what, quantity per scaled run, price key)"""
        s = self.scale
        out = [
            (
                "HTTP API",
                "requests (the backend's call)",
                self.http_api_requests * s,
                "http_api_request",
            ),
            (
                "Lambda",
                "function URL requests (Meta's status webhooks)",
                self.function_url_requests * s,
                "function_url_request",
            ),
        ]
        for name, use in sorted(self.functions.items()):
            out.append(("Lambda", f"{name}: invocations", use.invocations * s, "lambda_request"))
        for name, use in sorted(self.functions.items()):
            gb_s = use.billed_ms / 1000 * use.memory_mb / 1024
            out.append(("Lambda", f"{name}: GB-s ({use.memory_mb} MB)", gb_s * s, "lambda_gb_second"))
        sqs: Counter[str] = Counter()
        writes: Counter[str] = Counter()
        reads: Counter[str] = Counter()
        for (_fn, service, operation), usage in self.aws.items():
            if service == "sqs":
                sqs["fifo" if "(fifo)" in operation else "standard"] += usage.billed_requests
            writes.update(usage.write_units)
            reads.update(usage.read_units)
        for kind, n in sorted(sqs.items()):
            out.append(("SQS", f"{kind} queue requests", n * s, f"sqs_{kind}_request"))
        for where, n in sorted(writes.items()):
            out.append(("DynamoDB", f"write units: {where}", n * s, "dynamodb_write_unit"))
        for where, n in sorted(reads.items()):
            out.append(("DynamoDB", f"read units: {where}", n * s, "dynamodb_read_unit"))
        return out

    def extra_lines(self) -> list[tuple[str, str, float, str]]:
        s = self.scale
        log_bytes = sum(
            u.log_bytes + u.invocations * LAMBDA_LOG_PLATFORM_BYTES for u in self.functions.values()
        )
        return [
            (
                "CloudWatch",
                "log ingestion, GB (measured bytes + Lambda's own lines)",
                log_bytes * s / 1e9,
                "cloudwatch_logs_gb",
            ),
            ("X-Ray", "webhook traces recorded (modelled sampling)", self._xray_traces(), "xray_trace"),
        ]

    def _xray_traces(self) -> float:
        """Lambda's default sampling (1 request/s + 5 % of the rest) over the fan-out's length."""
        seconds = self.delivered * self.scale / self.rate_limit  # the fan-out's length at the rate limit
        webhooks_per_second = self.webhooks * self.scale / seconds if seconds else 0.0
        return seconds * (min(1.0, webhooks_per_second) + 0.05 * max(0.0, webhooks_per_second - 1))

    def levers(self) -> list[tuple[str, float]]:
        """What is left to cut, from the same counts; each gives something up (README, Cost)."""
        s = self.scale
        index_writes = status_path = 0.0
        for (function, service, _op), usage in self.aws.items():
            if function == "SenderFunction":
                index_writes += sum(n for w, n in usage.write_units.items() if w.endswith("/by_trip_keys"))
            if function == "InboundFunction":  # the statuses' log updates
                status_path += sum(usage.write_units.values()) * price("dynamodb_write_unit")
                status_path += sum(usage.read_units.values()) * price("dynamodb_read_unit")
            if function in ("WebhookFunction", "InboundFunction") and service == "sqs":  # queueing them
                status_path += usage.billed_requests * price("sqs_standard_request")
        return [
            (
                "log without the by_trip_keys index (ledger and admin outcomes need another path to a trip)",
                index_writes * s * price("dynamodb_write_unit"),
            ),
            (
                "'read' statuses not recorded (Meta still calls; the ledger would stop counting reads)",
                status_path / 2 * s,  # delivered and read cost the same; sent costs nothing
            ),
            (
                "webhook without X-Ray tracing (outside the issue's list; Meta's calls untraced)",
                self._xray_traces() * price("xray_trace"),
            ),
        ]

    @staticmethod
    def total(lines: list[tuple[str, str, float, str]]) -> float:
        return sum(q * price(key) for _g, _w, q, key in lines)


def _load_handler(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"cost_{name}_app", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
    from localrun.runtime import LOCAL_SECRETS
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
        os.environ.update(specs["SenderFunction"].environment)
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
            handlers = {name: _load_handler(name) for name in ("enqueue", "sender", "webhook", "inbound")}
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
                context = LambdaContext(logical, timeouts[logical], clock)
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
                    records = [
                        {
                            "messageId": m["MessageId"],
                            "receiptHandle": m["ReceiptHandle"],
                            "body": m["Body"],
                            "attributes": m.get("Attributes", {}),
                            "messageAttributes": {},
                            "md5OfBody": m["MD5OfBody"],
                            "eventSource": "aws:sqs",
                            "eventSourceARN": queue.arn,
                            "awsRegion": REGION,
                        }
                        for m in messages
                    ]
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


# ---------------------------------------------------------------------------------------------- output
def _usd(value: float) -> str:
    return f"{value:.4f}"


def render(report: Report, scale_to: int) -> str:
    out = []
    what = (
        "broadcast (trip_reminder template)"
        if report.kind == "broadcast"
        else "product update (free-form text)"
    )
    out.append(f"AWS cost of a {scale_to:,}-recipient {what}, all delivered")
    out.append(
        f"  measured at {report.recipients:,} recipients, scaled x{report.scale:g}; "
        f"{len(STATUSES_PER_MESSAGE)} status webhooks per message; rate limit {report.rate_limit:g} msg/s; "
        "USD, us-east-1 list prices"
    )
    out.append("")
    lines = report.lines()
    header = f"  {'service':<10} {'what':<58} {'quantity':>14} {'USD':>9}"
    out += [header, "  " + "-" * (len(header) - 2)]
    for group, what_, quantity, key in lines:
        out.append(f"  {group:<10} {what_:<58} {quantity:>14,.1f} {_usd(quantity * price(key)):>9}")
    total = report.total(lines)
    out.append("  " + "-" * (len(header) - 2))
    verdict = "meets" if total <= TARGET_USD else "misses"
    per = f"per {scale_to:,} delivered messages"
    out.append(
        f"  {'TOTAL':<10} {per:<58} {'':>14} {_usd(total):>9}   ({verdict} the ${TARGET_USD:.2f} target)"
    )
    out.append("")
    out.append("  also billed, outside the issue's list:")
    extra = report.extra_lines()
    for group, what_, quantity, key in extra:
        out.append(f"  {group:<10} {what_:<58} {quantity:>14,.3f} {_usd(quantity * price(key)):>9}")
    out.append(f"  {'':<10} {'total with these':<58} {'':>14} {_usd(total + report.total(extra)):>9}")
    out.append("")
    out.append("  levers left (from the counts above; not applied, each gives something up):")
    for what_, saving in report.levers():
        out.append(f"    -{_usd(saving)}  {what_}")
    out.append("")
    out.append("  AWS calls by function (per scaled run):")
    for (function, service, operation), usage in sorted(report.aws.items()):
        units = []
        if usage.write_units:
            units.append(f"{sum(usage.write_units.values()) * report.scale:,.0f} WRU")
        if usage.read_units:
            units.append(f"{sum(usage.read_units.values()) * report.scale:,.0f} RRU")
        if service == "sqs":
            units.append(f"{usage.billed_requests * report.scale:,.0f} billed requests")
        out.append(
            f"    {function:<16} {service:<9} {operation:<28} {usage.calls * report.scale:>10,.0f} calls  "
            + ", ".join(units)
        )
    out.append("")
    out.append("  prices (PRICES in bench/cost_report.py):")
    for key, (usd, note) in PRICES.items():
        out.append(f"    {key:<22} {usd:.10g} USD  {note}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1000, help="recipients actually run (default 1000)")
    parser.add_argument("--scale-to", type=int, default=10_000, help="report per this many messages")
    parser.add_argument("--kind", choices=("broadcast", "product_update"), default="broadcast")
    args = parser.parse_args(argv)
    if args.recipients < 1:
        parser.error("--recipients must be at least 1")
    started = time.monotonic()
    report = run(args.recipients, args.scale_to, args.kind)
    print(render(report, args.scale_to))
    print(f"\n  (ran in {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

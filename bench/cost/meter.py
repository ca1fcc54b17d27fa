"""The AWS meter: every AWS call (boto3 and PynamoDB both end in botocore's ``BaseClient._make_api_call``)
recorded and turned into billing units, by function, service and operation."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.cost.assumptions import AWS_LATENCY_MS
from bench.cost.dynamodb import TableSchema, item_size, updated_attributes


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

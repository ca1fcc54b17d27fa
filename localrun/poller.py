"""SQS → Lambda event source mapping, as Lambda runs it: up to MaximumConcurrency pollers per queue, each
receiving up to BatchSize messages (waiting up to MaximumBatchingWindowInSeconds to fill a batch), invoking
the function synchronously, then deleting what succeeded. With ReportBatchItemFailures only the reported
records stay; a function error keeps the whole batch. Messages that stay become visible again after the
queue's visibility timeout, and the queue's redrive policy (moto) moves them to the DLQ after
maxReceiveCount receives."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from typing import Any

import boto3

from localrun.lambdas import FunctionError, FunctionPool
from localrun.stack import Queue

LONG_POLL_SECONDS = 5  # Lambda long-polls for 20 s; shorter here so that Ctrl-C stops promptly
# A FIFO queue is short-polled (every FIFO_POLL_SECONDS while empty): moto's long poll decides once, when it
# starts, which message groups are busy, so a poller waiting in it could not take a group's next message
# for the rest of its wait once the one in flight was done (and it holds the receive lock meanwhile): a
# broadcast's chunks, one group, went out one per 5 s. Lambda's own FIFO mapping has no such gap.
FIFO_POLL_SECONDS = 0.2


class EventSourceMapping:
    def __init__(
        self,
        *,
        queue: Queue,
        pool: FunctionPool,
        endpoint_url: str,
        region: str,
        batch_size: int,
        batching_window: float,
        max_concurrency: int,
        report_failures: bool,
    ) -> None:
        self.queue, self.pool, self.region = queue, pool, region
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.max_concurrency = max_concurrency
        self.report_failures = report_failures
        self._sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._receive_lock = threading.Lock()
        self.stats = {"batches": 0, "records": 0, "deleted": 0, "failed_records": 0, "function_errors": 0}

    def start(self) -> EventSourceMapping:
        for index in range(self.max_concurrency):
            thread = threading.Thread(
                target=self._run, name=f"esm-{self.queue.logical_id}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, wait: bool = False) -> None:
        """Stop polling. A poller in a long poll ends with it (they are daemon threads); with ``wait``, wait
        for that and for an invocation in progress, so that nothing is consumed after this returns."""
        self._stop.set()
        timeout = LONG_POLL_SECONDS + self.pool.spec.timeout + 2 if wait else 0.2
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self._receive_batch()
            try:
                if messages and self._stop.is_set():
                    self._release(messages)  # received as the mapping stopped: back to the queue at once
                elif messages:
                    self._process(messages)
            except Exception as exc:  # a delete or release the queue refused: the poller carries on
                self._complain(f"could not finish a batch of {len(messages)}", exc)
                time.sleep(0.5)

    def _complain(self, what: str, exc: BaseException) -> None:
        print(
            f"[localrun] {self.queue.logical_id} poller: {what} ({type(exc).__name__}: {exc}); "
            "what stays in flight comes back after the visibility timeout",
            file=sys.stderr,
            flush=True,
        )

    def _release(self, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        for start in range(0, len(entries), 10):
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.queue.url, Entries=entries[start : start + 10]
            )

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Up to a batch of messages. A receive that fails ends the batch with what it holds (handing that
        on rather than leaving it in flight until the visibility timeout)."""
        messages: list[dict[str, Any]] = []
        started = time.monotonic()
        while len(messages) < self.batch_size and not self._stop.is_set():
            try:
                with self._receive_lock:  # moto can hand one message to two concurrent receives; SQS does not
                    response = self._receive(messages)
            except Exception as exc:
                if not self._stop.is_set():  # (stopping: the servers may be gone already; nothing to say)
                    self._complain("a receive failed", exc)
                if not messages:
                    time.sleep(0.5)
                return messages
            received = response.get("Messages", [])
            messages += received
            if not messages:
                if self.queue.url.endswith(".fifo"):
                    self._stop.wait(FIFO_POLL_SECONDS)  # short polling (above), outside the receive lock
                return []
            if not received or time.monotonic() - started >= self.batching_window:
                break
            if not self.batching_window:
                break
        return messages

    def _receive(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        fifo = self.queue.url.endswith(".fifo")
        return self._sqs.receive_message(
            QueueUrl=self.queue.url,
            MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
            WaitTimeSeconds=0 if messages or fifo else LONG_POLL_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )

    def _process(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        with self._lock:
            self.stats["batches"] += 1
            self.stats["records"] += len(messages)
        try:
            result = self.pool.invoke(event)
        except FunctionError as exc:
            with self._lock:
                self.stats["function_errors"] += 1
            first = str(exc).strip().splitlines()
            print(
                f"[localrun] {self.pool.name} failed on a batch of {len(messages)} "
                f"from {self.queue.logical_id} "
                f"(it comes back after the visibility timeout): {first[-1] if first else exc}",
                file=sys.stderr,
                flush=True,
            )
            return  # the whole batch becomes visible again after the visibility timeout
        failed: set[str] = set()
        if self.report_failures and isinstance(result, dict):
            failures = result.get("batchItemFailures") or []
            failed = {str(f.get("itemIdentifier")) for f in failures}
            known = {m["MessageId"] for m in messages}
            if not failed <= known:  # Lambda treats an unknown identifier as a failure of the whole batch
                return
        if failed:
            print(
                f"[localrun] {self.pool.name} reported {len(failed)} of {len(messages)} records from "
                f"{self.queue.logical_id} failed (they come back after the visibility timeout)",
                file=sys.stderr,
                flush=True,
            )
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            response = self._sqs.delete_message_batch(QueueUrl=self.queue.url, Entries=entries)
            if response.get("Failed"):
                codes = sorted({f.get("Code", "?") for f in response["Failed"]})
                self._complain(f"{len(response['Failed'])} deletes refused", RuntimeError(", ".join(codes)))
        with self._lock:
            self.stats["deleted"] += len(done)
            self.stats["failed_records"] += len(failed)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return sqs_record(message, self.queue.arn, self.region)


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A message as ``ReceiveMessage`` returns it, as one record of the event Lambda's SQS event source hands
    the function (also what the tests and the cost report build their events with)."""
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }

"""SQS access: sending jobs to the three queues, in batches (10 per call, as SQS allows)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jastipin.outbound.jobs import QUEUE_OF_KIND, Job, QueueName
from jastipin.settings import ReplyQueue

SQS_BATCH = 10


class QueueError(RuntimeError):
    pass


class JobQueues:
    def __init__(self, sqs_client: Any, settings: ReplyQueue) -> None:
        """The queues this function's settings name: every function that queues jobs has the notifications
        queue (replies go there); the backend and the sender have all three (``JobQueueUrls``)."""
        self._sqs = sqs_client
        self._urls = {
            QueueName.NOTIFICATIONS: settings.notifications_queue_url,
            QueueName.BROADCAST: getattr(settings, "broadcast_queue_url", ""),
            QueueName.PROOF_NOTIFY: getattr(settings, "proof_notify_queue_url", ""),
        }

    def url(self, queue: QueueName) -> str:
        url = self._urls[queue]
        if not url:
            raise QueueError(
                f"this function does not send to the {queue.value} queue (no URL in its settings)"
            )
        return url

    def is_fifo(self, queue: QueueName) -> bool:
        return self.url(queue).endswith(".fifo")

    def send(self, job: Job, *, dedup_suffix: str = "", delay_seconds: int = 0) -> None:
        self.send_many([job], dedup_suffixes=[dedup_suffix], delay_seconds=delay_seconds)

    def send_many(
        self, jobs: Iterable[Job], *, dedup_suffixes: Iterable[str] | None = None, delay_seconds: int = 0
    ) -> int:
        """Send jobs (each to the queue of its kind) with SendMessageBatch; raises if any entry fails."""
        jobs = list(jobs)
        suffixes = list(dedup_suffixes) if dedup_suffixes is not None else [str(i) for i in range(len(jobs))]
        by_queue: dict[QueueName, list[dict[str, Any]]] = {}
        for index, (job, suffix) in enumerate(zip(jobs, suffixes, strict=True)):
            queue = QUEUE_OF_KIND[job.kind]
            entry: dict[str, Any] = {"Id": str(index), "MessageBody": job.to_body()}
            if self.is_fifo(queue):
                # Sequential per trip; dedup per job+chunk so a repeated fan-out does not double-queue.
                entry["MessageGroupId"] = job.trip_id
                entry["MessageDeduplicationId"] = f"{job.job_id}-{suffix}"[:128]
            elif delay_seconds:
                entry["DelaySeconds"] = delay_seconds
            by_queue.setdefault(queue, []).append(entry)
        calls = 0
        for queue, entries in by_queue.items():
            for start in range(0, len(entries), SQS_BATCH):
                response = self._sqs.send_message_batch(
                    QueueUrl=self.url(queue), Entries=entries[start : start + SQS_BATCH]
                )
                calls += 1
                if response.get("Failed"):
                    raise QueueError(
                        f"SQS rejected {len(response['Failed'])} message(s): {response['Failed'][0]}"
                    )
        return calls

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
``PRICES`` (``bench/cost/assumptions.py``) is the one price table.

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
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "layers" / "common"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.cost.assumptions import PRICES, price  # noqa: E402
from bench.cost.report import Report, render  # noqa: E402
from bench.cost.scenario import run  # noqa: E402

__all__ = ["PRICES", "Report", "main", "price", "render", "run"]


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

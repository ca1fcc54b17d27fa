"""The cost report: the billed quantities of a run, priced, with what is billed outside the issue's list and
the levers left, and its text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bench.cost.assumptions import (
    LAMBDA_LOG_PLATFORM_BYTES,
    PRICES,
    STATUSES_PER_MESSAGE,
    TARGET_USD,
    price,
)
from bench.cost.lambdas import FunctionUse
from bench.cost.meter import Usage


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
    out.append("  prices (PRICES in bench/cost/assumptions.py):")
    for key, (usd, note) in PRICES.items():
        out.append(f"    {key:<22} {usd:.10g} USD  {note}")
    return "\n".join(out)

"""The cost model's assumptions: the one price table, the target, AWS's in-region latency, what Lambda logs of
its own and how many statuses Meta posts per message."""

from __future__ import annotations

TARGET_USD = 0.06  # issue 5: per 10,000 delivered messages
STATUSES_PER_MESSAGE = ("sent", "delivered", "read")
LAMBDA_LOG_PLATFORM_BYTES = 300  # START, END and REPORT lines Lambda writes per invocation

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

"""DynamoDB's low-level JSON API from asyncio, for the sender's hot path: one outcome write per recipient.

A botocore call costs about 1 ms of CPU on this machine (``bench/sender_instance.py``: the user agent it
rebuilds twice per call, its event hooks, its serializers); the same request signed with botocore's own
``SigV4Auth`` and posted on an aiohttp session costs about a third of that, and waits on the event loop
instead of a thread. The request and the answer are DynamoDB's documented wire format (``X-Amz-Target:
DynamoDB_20120810.<Operation>``, JSON 1.0), the parameters the same dicts botocore's client takes.

Endpoint, region and credentials come from a botocore client (``AWS_ENDPOINT_URL`` locally, the regional
endpoint on Lambda); credentials are botocore's, refreshed as botocore refreshes them. Errors are botocore's
``ClientError`` (with DynamoDB's error code, e.g. ``ConditionalCheckFailedException``) or
``EndpointConnectionError``, as the client would raise them, so ``jastipin.data.STORE_ERRORS`` holds.
Retried like botocore's standard mode: throttling, 5xx and connection errors, 4 attempts in all, with
full-jitter exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, EndpointConnectionError

from jastipin import tls

MAX_ATTEMPTS = 4  # PynamoDB's default for the same tables: 1 + 3 retries
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 2.0
TIMEOUT_SECONDS = 10.0
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)


class AsyncDynamoDB:
    """``await call("UpdateItem", params)``: one DynamoDB call on the running loop's session. ``client``: a
    botocore DynamoDB client (its endpoint and region are used); ``credentials``: botocore credentials
    (``boto3.Session().get_credentials()``), read per request."""

    def __init__(self, client: Any, credentials: Any) -> None:
        self._credentials = credentials
        self._url = client.meta.endpoint_url.rstrip("/") + "/"
        self._region = client.meta.region_name
        self._sessions: dict[asyncio.AbstractEventLoop, Any] = {}
        self.calls = 0  # made, retries included (for the benchmarks)

    def __repr__(self) -> str:
        return f"AsyncDynamoDB({self._url!r})"

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":"))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                status, raw = await self._post(operation, body)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise EndpointConnectionError(endpoint_url=self._url, error=exc) from None
            else:
                answer: dict[str, Any] = json.loads(raw) if raw else {}
                if status == 200:
                    return answer
                code = str(answer.get("__type", "")).rpartition("#")[2] or f"HTTP{status}"
                if attempt == MAX_ATTEMPTS or not (status >= 500 or code in RETRYABLE_CODES):
                    message = str(answer.get("message", answer.get("Message", "")))
                    response: Any = {"Error": {"Code": code, "Message": message}}
                    response["ResponseMetadata"] = {"HTTPStatusCode": status}
                    raise ClientError(response, operation)
            await asyncio.sleep(random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**attempt)))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close this loop's session."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def _post(self, operation: str, body: str) -> tuple[int, bytes]:
        self.calls += 1
        headers = self._signed(operation, body)
        session = self._session()
        async with session.post(self._url, data=body.encode(), headers=headers) as response:
            return response.status, await response.read()

    def _signed(self, operation: str, body: str) -> dict[str, str]:
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            },
        )
        SigV4Auth(self._credentials.get_frozen_credentials(), "dynamodb", self._region).add_auth(request)
        return dict(request.headers.items())

    def _session(self) -> Any:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=60, ssl=tls.context()),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return session

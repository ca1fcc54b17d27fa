"""The sender's outcome writes on its event loop (``data.async_dynamodb.AsyncDynamoDB``, signed requests on
aiohttp) against a real moto server over HTTP: the entry they make is the one botocore's ``record`` makes,
a status that came first is kept, and a failing table raises botocore's ``ClientError`` with its code."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from jastipin.data import notifications_log
from jastipin.data.async_dynamodb import AsyncDynamoDB
from jastipin.data.models import LogStatus, NotificationLog, utcnow
from jastipin.data.notifications_log import Outcome, StatusChange
from tests.conftest import REGION


@pytest.fixture(autouse=True)
def _tables(ctx):
    """The log model bound to the stack's table, as the sender's services bind it."""
    ctx.sender.this()


def client(ctx) -> AsyncDynamoDB:
    botocore_client = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    return AsyncDynamoDB(botocore_client, boto3.Session().get_credentials())


def entry(participant_id: str) -> dict:
    item = NotificationLog.get("job_a", participant_id).attribute_values
    return {k: v for k, v in item.items() if k not in ("participant_id", "created_at", "updated_at")}


def write(dynamodb: AsyncDynamoDB, outcome: Outcome, expires: datetime | None = None) -> LogStatus:
    expires = expires or utcnow() + timedelta(days=30)

    async def go() -> LogStatus:
        try:
            return await notifications_log.arecord(
                dynamodb, "job_a", "trip_a", "product_update", outcome, expires
            )
        finally:
            await dynamodb.close()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome("p", LogStatus.SENT, 1, provider_msg_id="wamid.1"),
        Outcome("p", LogStatus.QUEUED, 1, reason="whatsapp_error_131000", error_code=131000),
        Outcome("p", LogStatus.FAILED, 3, reason="whatsapp_error_131026", error_code=131026),
    ],
    ids=["sent", "queued for a retry", "failed"],
)
def test_an_outcome_written_on_the_loop_is_the_entry_botocore_writes(ctx, outcome):
    expires = utcnow() + timedelta(days=30)
    botocore_side = Outcome(
        "p_botocore",
        outcome.status,
        outcome.attempts,
        outcome.provider_msg_id,
        outcome.reason,
        outcome.error_code,
    )
    notifications_log.record("job_a", "trip_a", "product_update", botocore_side, expires)
    loop_side = Outcome(
        "p_loop",
        outcome.status,
        outcome.attempts,
        outcome.provider_msg_id,
        outcome.reason,
        outcome.error_code,
    )
    assert write(client(ctx), loop_side, expires) is outcome.status  # the same expiry: entries compared whole
    assert entry("p_loop") == entry("p_botocore")


def test_a_retry_that_went_through_clears_the_failure_it_follows(ctx):
    dynamodb = client(ctx)
    write(dynamodb, Outcome("p", LogStatus.QUEUED, 1, reason="whatsapp_error_131000", error_code=131000))
    write(dynamodb, Outcome("p", LogStatus.SENT, 2, provider_msg_id="wamid.2"))
    e = NotificationLog.get("job_a", "p")
    assert (e.status, e.attempts, e.reason, e.error_code, e.provider_msg_id) == (
        "sent",
        2,
        None,
        None,
        "wamid.2",
    )


def test_a_status_that_came_first_is_kept(ctx):
    """Meta's "delivered" lands before the send's outcome: the outcome adds the job's fields and keeps the
    status (and returns it)."""
    notifications_log.apply_status(
        StatusChange("wamid.9", LogStatus.DELIVERED, ("job_a", "p")), utcnow() + timedelta(days=30)
    )
    status = write(client(ctx), Outcome("p", LogStatus.SENT, 1, provider_msg_id="wamid.9"))
    e = NotificationLog.get("job_a", "p")
    assert status is LogStatus.DELIVERED
    assert (e.status, e.trip_id, e.attempts, e.provider_msg_id) == ("delivered", "trip_a", 1, "wamid.9")


def test_a_failing_table_is_a_client_error_naming_its_code(ctx):
    dynamodb = client(ctx)

    async def go() -> None:
        try:
            await dynamodb.call("UpdateItem", {"TableName": "no-such-table", "Key": {"job_id": {"S": "j"}}})
        finally:
            await dynamodb.close()

    with pytest.raises(ClientError) as raised:
        asyncio.run(go())
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_the_limiter_reserves_on_the_loop_as_botocore_does(ctx):
    """``GlobalRateLimiter.aclaim_slot``: the sender's reservations on its event loop, through the same
    DynamoDB steps as ``claim_slot`` on botocore. An instance reserving on the loop and one on botocore
    share the schedule: their blocks do not overlap, the second appended after the first (its guess of
    spare capacity refused by the condition, a ClientError thrown into the steps); a missing table is
    botocore's ClientError."""
    from jastipin.outbound.rate_limit import GlobalRateLimiter

    table = ctx.stack.tables["RateLimitTable"]
    botocore_client = boto3.client("dynamodb", endpoint_url=ctx.moto_url, region_name=REGION)
    on_loop = GlobalRateLimiter(botocore_client, table, "whatsapp#loop", 50)
    threaded = GlobalRateLimiter(botocore_client, table, "whatsapp#loop", 50)
    dynamodb = client(ctx)

    async def claims(limiter: GlobalRateLimiter, n: int) -> list[float]:
        return [s for _ in range(n) if (s := await limiter.aclaim_slot(None, dynamodb)) is not None]

    async def go() -> tuple[list[float], list[float]]:
        try:
            first = await claims(on_loop, 50)  # one block: 1 s at 50/s
            assert on_loop.calls == 1
            second = [threaded.claim_slot() for _ in range(50)]
            third = await claims(on_loop, 10)  # a second block, appended after the botocore one's
            return first + third, [s for s in second if s is not None]
        finally:
            await dynamodb.close()

    loop_slots, botocore_slots = asyncio.run(go())
    assert len(loop_slots) == 60 and len(botocore_slots) == 50
    assert not set(loop_slots) & set(botocore_slots)
    assert min(botocore_slots) > max(loop_slots[:50]) and min(loop_slots[50:]) > max(botocore_slots)
    assert on_loop.calls == 3  # block 1; block 2: the spare-capacity guess refused, then appended

    missing = GlobalRateLimiter(botocore_client, "no-such-table", "whatsapp#loop", 50)

    async def fails() -> None:
        dynamodb = client(ctx)
        try:
            await missing.aclaim_slot(None, dynamodb)
        finally:
            await dynamodb.close()

    with pytest.raises(ClientError) as raised:
        asyncio.run(fails())
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"

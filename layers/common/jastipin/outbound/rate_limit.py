"""Rate limiting of WhatsApp sends.

``GlobalRateLimiter`` is the limit across every sender instance and all three queues: a GCRA (generic cell
rate algorithm) whose state — the time of the next free send slot ("TAT") — lives in one DynamoDB item per
sending phone number. Slots are spaced ``1 / rate`` seconds apart, so no 1-second window, sliding or not,
holds more than ``rate`` sends; with a backlog every slot is used, so the rate is sustained close to the
limit. A process reserves a *block* of n slots (TAT := TAT + n/rate)
and hands them to its sending threads, which wait for their slot's time; unused slots are given back when
nobody reserved after them. A reservation is one DynamoDB call in the steady state: an atomic ``ADD`` on
the schedule under a backlog, a conditional ``SET`` to now when there is spare capacity. ``margin`` keeps
the effective rate a little under the limit so that jitter between a slot's time and the request's
arrival at Meta cannot push a window over it.

**Lanes.** A block's slots are consecutive, so a sender can use a block only as fast as the schedule hands
it out: at 1,000/s, 50 slots in 52 ms. A Lambda instance bound by its CPU share sends about 90 a second (256
MB), so most of such a block goes stale unused, and a dozen instances drawing on one schedule at 1,000/s send
about 130 a second in all (``bench/limiter_bench.py --pace``). With ``lanes`` = k, the schedule is k
schedules (lanes), each at rate / k with slots k times as far apart, each its own DynamoDB item: a sender
reserves from one lane at a time, at a pace it can keep, and k senders on k lanes fill the limit. A sender
starts on a random lane; when its lane is shared (a block it appends does not follow its own last one),
its next reservation first tries up to two other lanes for an idle one. The lanes' slots together keep
every sliding second within the limit: a second holds at most (1 + late) × rate × (1 − margin) + k slots'
sends, so k is at most ``max_lanes(rate)`` (20 at 1,000/s, 1 below 97/s) and a larger value is lowered to
it.

``NoRateLimit`` is what ``RATE_LIMIT_PER_SECOND=0`` selects (limit lifted, e.g. for benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

if TYPE_CHECKING:  # aiohttp is the sender's alone
    from jastipin.data.async_dynamodb import AsyncDynamoDB

logger = Logger(child=True)

T = TypeVar("T")
# A limiter operation as steps: it yields each DynamoDB request (UpdateItem's parameters) and gets back the
# response (or has the call's ClientError thrown in); its return value is the operation's result.
Steps = Generator[dict[str, Any], dict[str, Any], T]

MICROS = 1_000_000
TTL_SECONDS = 24 * 3600
DEFAULT_MARGIN = 0.04
LANE_PROBES = 2  # other lanes tried, per reservation, for an idle one before appending to a crowded lane


def max_lanes(rate_per_second: float, margin: float = DEFAULT_MARGIN) -> int:
    """The most lanes that keep every sliding second within ``rate_per_second``: k lanes' sends in a second,
    each up to ``margin / 2`` s after its slot, number at most (1 + margin / 2) × rate × (1 − margin) + k."""
    spare = rate_per_second * (1 - (1 + margin / 2) * (1 - margin))
    return max(1, math.floor(spare + 1e-9))


class SendLimiter(Protocol):
    """What the sender needs of a limiter: ``GlobalRateLimiter``, ``NoRateLimit`` (and the tests' own). A
    limiter that keeps no reservations inherits the bookkeeping calls below, which do nothing."""

    def acquire(self, deadline: float | None = None) -> bool: ...

    def expect(self, count: int) -> None:
        """The caller is about to make ``count`` sends."""
        return None

    def release(self) -> None:
        """Give back what was reserved and not used."""
        return None

    def missed(self) -> None:
        """A slot handed out was not used in time."""
        return None


@runtime_checkable
class SlotLimiter(SendLimiter, Protocol):
    """A limiter that hands out slot times instead of blocking until them (``GlobalRateLimiter``,
    ``NoRateLimit``): the asyncio sender waits for a slot with ``asyncio.sleep``, not a thread."""

    def has_slot(self) -> bool:
        """Whether ``claim_slot`` needs no DynamoDB call."""
        ...

    def claim_slot(self, deadline: float | None = None) -> float | None:
        """The next slot's time (epoch seconds), not waited for; None: none before ``deadline``."""
        ...

    def in_time(self, slot: float) -> bool:
        """After waiting until ``slot``: whether the send may still use it."""
        ...


class GlobalRateLimiter:
    def __init__(
        self,
        dynamodb_client: Any,
        table_name: str,
        key: str,
        rate_per_second: float,
        *,
        block_seconds: float = 1.0,
        max_block: int = 50,
        margin: float = DEFAULT_MARGIN,
        lanes: int = 1,
        lane: int | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._ddb = dynamodb_client
        self._table = table_name
        self.rate = rate_per_second
        self.lanes = min(lanes, max_lanes(rate_per_second, margin))
        if self.lanes < lanes:
            logger.warning(
                "rate limit lanes lowered",
                extra={"lanes": lanes, "used": self.lanes, "rate_per_second": rate_per_second},
            )
        # Lane i's schedule is its own item; with one lane, the item is ``key`` (as before lanes).
        self._keys = [key] if self.lanes == 1 else [f"{key}#lane{i}" for i in range(self.lanes)]
        self.lane = random.randrange(self.lanes) if lane is None else lane % self.lanes
        lane_rate = rate_per_second / self.lanes
        self._spacing_us = max(1, round(MICROS / (lane_rate * (1 - margin))))
        self._block = max(1, min(max_block, int(lane_rate * block_seconds)))
        # `rate` + 1 consecutive slots span rate / (rate (1 - margin)) = 1 / (1 - margin) > 1 + margin
        # seconds, so a send up to `margin` seconds after its slot still cannot crowd a 1-second window. Half
        # of that is allowed between the slot and the request leaving (``late_seconds``: the sender checks it
        # again right before the request); the other half is for the request's way to Meta. A later slot is
        # dropped. (This was at least one slot's spacing, 104 ms at 10/s: a send that late beside on-time
        # ones put 11 sends in a second.)
        self._stale_us = int(margin / 2 * MICROS)
        self.late_seconds = self._stale_us / MICROS
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._slots: deque[int] = deque()  # reserved slot times (µs since epoch), ascending
        self._reserving: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None  # aclaim_slot's
        self._reserved_end: int | None = None  # TAT we wrote with our last reservation
        self._reserved_lane = self.lane  # the lane of that reservation
        self._lane_end: dict[int, int] = {}  # lane -> the TAT we last wrote there
        self._crowded = False  # our lane had another sender's block: look for an idle lane next time
        self._behind = True  # guess: the schedule lags real time (true on first use and when idle)
        self.calls = 0  # DynamoDB calls made (for the benchmark's AWS-call count)
        self.dropped = 0  # reserved slots that went stale unused
        self._expected = 0  # sends the caller announced (expect()): no reservation beyond them

    # -- public ------------------------------------------------------------------------------------------
    def acquire(self, deadline: float | None = None) -> bool:
        """Block until this caller's send slot; False (and no slot used) if the slot is after ``deadline``."""
        return self.acquire_slot(deadline) is not None

    def acquire_slot(self, deadline: float | None = None) -> float | None:
        """``acquire``, returning the slot's time (epoch seconds; None: no slot before ``deadline``). The
        send must leave within ``late_seconds`` of it."""
        while True:
            slot = self.claim_slot(deadline)
            if slot is None:
                return None
            wait = slot - self._clock()
            if wait > 0:
                self._sleep(wait)
            if self.in_time(slot):
                return slot

    def has_slot(self) -> bool:
        """Whether ``claim_slot`` can hand out a slot already reserved (no DynamoDB call). Never waits: while
        another caller holds the lock (it may be reserving, a DynamoDB call), False."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._drop_stale()
            return bool(self._slots)
        finally:
            self._lock.release()

    def claim_slot(self, deadline: float | None = None) -> float | None:
        """The caller's next send slot (epoch seconds), without waiting for it: reserves a block when none is
        left (a DynamoDB call); None when there is no slot before ``deadline``. The caller waits until the
        slot's time, then asks ``in_time`` (an asyncio sender waits with ``asyncio.sleep``)."""
        with self._lock:
            return self._run(self._claim(deadline))

    async def aclaim_slot(self, deadline: float | None, dynamodb: AsyncDynamoDB) -> float | None:
        """``claim_slot`` on an event loop: a reservation's DynamoDB calls go through ``dynamodb`` (the
        sender's ``AsyncDynamoDB``), the sends in flight go on meanwhile. One reservation at a time per
        loop; the limiter's state is changed only between the calls, under its lock."""
        loop = asyncio.get_running_loop()
        if self._reserving is None or self._reserving[0] is not loop:
            self._reserving = (loop, asyncio.Lock())
        async with self._reserving[1]:
            steps = self._claim(deadline)
            reply: dict[str, Any] | None = None
            error: ClientError | None = None
            while True:
                with self._lock:
                    try:
                        request = steps.throw(error) if error is not None else steps.send(reply)  # type: ignore[arg-type]
                    except StopIteration as done:
                        return cast("float | None", done.value)
                try:
                    reply, error = await dynamodb.call("UpdateItem", request), None
                except ClientError as exc:
                    reply, error = None, exc

    def _claim(self, deadline: float | None) -> Steps[float | None]:
        """``claim_slot``'s work, as steps: each DynamoDB request it needs is yielded (UpdateItem's
        parameters) and its response sent back, or its ``ClientError`` thrown in (``_run``, ``aclaim_slot``).
        Called with the lock held."""
        # A reserved slot left unused until its time has passed is dropped, not used late: a late send next
        # to on-time ones would crowd a 1-second window.
        self._drop_stale()
        if not self._slots:
            if deadline is not None and (self._reserved_end or 0) > deadline * MICROS:
                return None  # the schedule is past our last block, which ended after the deadline
            count = max(1, min(self._block, self._expected)) if self._expected else self._block
            yield from self._reserve(count)
            if deadline is not None:
                yield from self._give_back_after(int(deadline * MICROS))
            if not self._slots:
                return None  # the block was all after the deadline, and given back
        slot = self._slots.popleft()
        if deadline is not None and slot / MICROS > deadline:
            self._slots.appendleft(slot)  # keep it for a caller with more time
            return None
        self._expected = max(0, self._expected - 1)
        return slot / MICROS

    def _run(self, steps: Steps[T]) -> T:
        """Drive steps with the botocore client, on the calling thread."""
        try:
            request = next(steps)
            while True:
                try:
                    response = self._ddb.update_item(**request)
                except ClientError as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(response)
        except StopIteration as done:
            return cast(T, done.value)

    def in_time(self, slot: float) -> bool:
        """After waiting for ``slot``: whether it may still be used. Woken too late (a busy machine), it is
        dropped like a stale slot, and the send needs another."""
        if self._clock() - slot <= self._stale_us / MICROS:
            return True
        with self._lock:
            self.dropped += 1
            self._expected += 1
        return False

    def _drop_stale(self) -> None:
        stale_before = int(self._clock() * MICROS) - self._stale_us
        while self._slots and self._slots[0] < stale_before:
            self._slots.popleft()
            self.dropped += 1

    def expect(self, count: int) -> None:
        """The caller is about to make ``count`` sends: reserve no more slots than that."""
        with self._lock:
            self._expected = count

    def missed(self) -> None:
        """A slot handed out was not used in time (the send would have left late): counted as dropped, and
        the send it was for needs another."""
        with self._lock:
            self.dropped += 1
            self._expected += 1

    def release(self) -> None:
        """Give unused reserved slots back, if nobody reserved after us (best effort)."""
        with self._lock:
            if not self._slots or self._reserved_end is None:
                return
            first_unused = max(self._slots[0], int(self._clock() * MICROS))
            with contextlib.suppress(_Contended):
                self._run(self._write(self._reserved_lane, new_tat=first_unused, expected=self._reserved_end))
                self._lane_end[self._reserved_lane] = first_unused
            self._reserved_end = None
            self._slots.clear()

    # -- internals ---------------------------------------------------------------------------------------
    def _give_back_after(self, deadline_us: int) -> Steps[None]:
        """Just after a reservation: the slots after the caller's deadline (an invocation about to end) are
        given back at once, while nobody has reserved after us yet, instead of at ``release`` when another
        sender's block usually stands after them (then they would go unused: a hole in the schedule)."""
        if not self._slots or self._slots[-1] <= deadline_us or self._reserved_end is None:
            return
        keep = [s for s in self._slots if s <= deadline_us]
        first_unused = self._slots[len(keep)]
        try:
            yield from self._write(self._reserved_lane, new_tat=first_unused, expected=self._reserved_end)
        except _Contended:
            return  # someone reserved after us meanwhile: keep them (release tries again)
        self._reserved_end = first_unused
        self._lane_end[self._reserved_lane] = first_unused
        self._slots = deque(keep)

    def _reserve(self, count: int) -> Steps[None]:
        """Reserve ``count`` consecutive slots of our lane, in one DynamoDB call in either steady state:

        - backlog (the schedule is ahead of real time): an atomic ``ADD`` appends our block (no conflicts);
        - spare capacity (the schedule lags real time): a conditional ``SET`` starts our block at now.
        Each failed guess costs one more call and flips the guess; slots handed out are never in the past.
        With lanes, a lane found shared (our appended block did not follow our last one) makes the next
        reservation first try up to ``LANE_PROBES`` other lanes for an idle one (a conditional ``SET``).
        """
        span = count * self._spacing_us
        probes = min(LANE_PROBES, self.lanes - 1) if self._crowded else 0
        tried: set[int] = set()
        self._crowded = False
        while True:
            now = int(self._clock() * MICROS)
            if probes:
                probes -= 1
                other = random.choice([i for i in range(self.lanes) if i != self.lane and i not in tried])
                tried.add(other)
                try:
                    yield from self._write(other, new_tat=now + span, behind=now - self._stale_us)
                except _Contended:
                    continue  # in use too
                self.lane, self._behind = other, False
                start, end = now, now + span
            elif self._behind:
                try:
                    yield from self._write(self.lane, new_tat=now + span, behind=now - self._stale_us)
                except _Contended:
                    self._behind = False  # someone is ahead of real time: append instead
                    continue
                start, end = now, now + span
            else:
                self.calls += 1
                response = yield {
                    "TableName": self._table,
                    "Key": {"bucket": {"S": self._keys[self.lane]}},
                    "UpdateExpression": "ADD tat :span SET expires_at = :exp",
                    "ExpressionAttributeValues": {
                        ":span": {"N": str(span)},
                        ":exp": {"N": str(self._expiry())},
                    },
                    "ReturnValues": "UPDATED_NEW",
                }
                end = int(response["Attributes"]["tat"]["N"])
                start = end - span
                if end - self._spacing_us < now - self._stale_us:
                    self._behind = True  # the whole block is past (nobody uses it): start at now instead
                    continue
                # Someone else reserved on this lane since we last wrote it: with other lanes, look for an
                # idle one next time (the block is ours all the same).
                self._crowded = self.lanes > 1 and start != self._lane_end.get(self.lane)
                # A block that starts in the past (the schedule fell behind real time since our last
                # reservation) is ours all the same: its slots still ahead are used, the past ones are
                # not. Asking again for a block at now would leave the appended one unused, a block-long
                # hole in the schedule (1 s without a send, at any rate).
                first = max(0, -((start - (now - self._stale_us)) // self._spacing_us))
                start += first * self._spacing_us
                count -= first
                if first:
                    self._behind = True  # the schedule lags real time: next time try starting at now
            self._reserved_end = end
            self._reserved_lane = self.lane
            self._lane_end[self.lane] = end
            self._slots.extend(start + i * self._spacing_us for i in range(count))
            return

    def _expiry(self) -> int:
        return int(self._clock()) + TTL_SECONDS

    def _write(
        self, lane: int, *, new_tat: int, behind: int | None = None, expected: int | None = None
    ) -> Steps[None]:
        """Conditional SET of ``lane``'s schedule: when it lags ``behind`` (or is missing), or equals
        ``expected``. Raises _Contended when the condition does not hold (another sender moved the
        schedule)."""
        values = {":tat": {"N": str(new_tat)}, ":exp": {"N": str(self._expiry())}}
        if expected is not None:
            condition = "tat = :expected"
            values[":expected"] = {"N": str(expected)}
        else:
            condition = "attribute_not_exists(tat) OR tat < :behind"
            values[":behind"] = {"N": str(behind)}
        self.calls += 1
        try:
            yield {
                "TableName": self._table,
                "Key": {"bucket": {"S": self._keys[lane]}},
                "UpdateExpression": "SET tat = :tat, expires_at = :exp",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            raise _Contended() from None


class _Contended(Exception):
    """The schedule moved since we read it (another sender reserved slots)."""


class NoRateLimit(SendLimiter):
    """The limit lifted: every caller may send at once (until ``deadline``, epoch seconds on ``clock``)."""

    calls = 0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def acquire(self, deadline: float | None = None) -> bool:
        return deadline is None or self._clock() <= deadline

    def has_slot(self) -> bool:
        return True

    def claim_slot(self, deadline: float | None = None) -> float | None:
        now = self._clock()
        return now if deadline is None or now <= deadline else None

    def in_time(self, slot: float) -> bool:
        return True

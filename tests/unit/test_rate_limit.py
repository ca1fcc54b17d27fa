"""The global rate limiter against moto's DynamoDB, on a simulated clock (no real waiting)."""

from __future__ import annotations

import bisect
import heapq
import itertools
import random

import boto3
import pytest

from jastipin.outbound.rate_limit import GlobalRateLimiter, max_lanes
from tests.unit.limiters import TokenBucket


class SimClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture
def table(aws):
    return boto3.client("dynamodb", region_name="ap-southeast-3"), aws.tables["RateLimitTable"]


def limiter(table, clock, rate=10.0, **kw) -> GlobalRateLimiter:
    client, name = table
    return GlobalRateLimiter(client, name, "whatsapp#1", rate, clock=clock, sleep=clock.sleep, **kw)


def max_in_any_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + width) - i for i, t in enumerate(times))


def test_slots_are_spaced_so_no_sliding_second_exceeds_the_limit(table):
    clock = SimClock()
    # Blocks of 2 slots (0.2 s at 10/s): the two instances below take turns 2 sends at a time.
    a, b = limiter(table, clock, 10, block_seconds=0.2), limiter(table, clock, 10, block_seconds=0.2)
    sends = []
    for turn in range(30):  # two "instances" taking turns, each using the block (2 slots) it reserved
        for _ in range(2):
            (a if turn % 2 else b).acquire()
            sends.append(clock())
    assert max_in_any_window(sends) == 10
    rate = (len(sends) - 1) / (sends[-1] - sends[0])
    assert 9.5 <= rate <= 10.0  # sustained close to the limit (4 % safety margin)


def test_a_stale_slot_is_dropped_not_used_late(table):
    clock = SimClock()
    a, b = limiter(table, clock, 10, block_seconds=0.2), limiter(table, clock, 10, block_seconds=0.2)
    sends = []
    for n in range(60):  # interleaved one by one: reserved slots go stale while the other instance sends
        (a if n % 3 else b).acquire()
        sends.append(clock())
    assert max_in_any_window(sends) <= 10
    assert len(set(sends)) == len(sends)


def test_default_block_is_one_second_of_slots_and_senders_use_it_whole(table):
    """The default reserves 1 s of slots per DynamoDB write (10 at 10/s): a sender announces its sends
    (``expect``) and uses every slot it reserved, so two busy senders still fill the limit exactly."""
    clock = SimClock()
    a, b = limiter(table, clock, 10), limiter(table, clock, 10)
    sends = []
    for turn in range(6):  # two chunks of 30 recipients, each sender using whole blocks in turn
        sender = a if turn % 2 else b
        sender.expect(10)
        for _ in range(10):
            sender.acquire()
            sends.append(clock())
    assert max_in_any_window(sends) == 10
    assert len(set(sends)) == len(sends)
    rate = (len(sends) - 1) / (sends[-1] - sends[0])
    assert 9.5 <= rate <= 10.0
    assert a.calls + b.calls <= len(sends) / 10 + 2  # one write per 10 sends (plus a wrong first guess)


def test_instances_never_share_a_slot(table):
    clock = SimClock()
    a, b = limiter(table, clock, 50), limiter(table, clock, 50)
    a.acquire()
    b.acquire()  # b's first reservation contends with a's and must come after it
    slots_a, slots_b = list(a._slots), list(b._slots)
    assert not set(slots_a) & set(slots_b)
    assert min(slots_b) > max(slots_a)


def test_deadline_refuses_a_late_slot_and_keeps_it(table):
    clock = SimClock()
    lim = limiter(table, clock, 1)  # one slot per ~1.03 s
    assert lim.acquire()
    assert not lim.acquire(deadline=clock() + 0.5)
    assert lim.acquire(deadline=clock() + 2)


def test_release_gives_unused_slots_back(table):
    clock = SimClock()
    a, b = limiter(table, clock, 50), limiter(table, clock, 50)
    a.acquire()  # reserves a block (1 s: 50 slots), uses 1
    used_by_a = clock()
    a.release()
    b.acquire()
    assert clock() - used_by_a == pytest.approx(1 / (50 * 0.96), rel=1e-3)  # the very next slot, not 10 later


def test_calls_per_send_with_a_lifted_limit(table):
    clock = SimClock()
    lim = limiter(table, clock, 100_000)
    for _ in range(1000):
        lim.acquire()
    # Blocks of 50 slots: one UpdateItem per block, plus one wrong guess (spare capacity → backlog).
    assert lim.calls <= 1000 / 50 + 2


def test_token_bucket_honours_deadline():
    clock = SimClock()
    bucket = TokenBucket(2, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() and bucket.acquire()
    assert not bucket.acquire(deadline=0)  # far in the past


def test_a_block_appended_partly_in_the_past_keeps_its_future_slots_and_leaves_no_hole(table):
    """A sender that guessed "backlog" (ADD at the end of the schedule) after the schedule fell a little
    behind real time gets a block that starts in the past: it uses the block's slots still ahead and does not
    push the schedule a further block ahead (which left a block-long hole: 1 s without a send at any rate)."""
    clock = SimClock()
    a, b = limiter(table, clock, 50), limiter(table, clock, 50)
    a.expect(50)
    for _ in range(50):  # a whole block, used: the schedule ends about now
        a.acquire()
    b.expect(50)
    b.acquire()  # behind (first use) ... or contended: b now guesses "backlog"
    for _ in range(49):
        b.acquire()
    last = clock()
    clock.sleep(0.5)  # a pause shorter than a block: the schedule is 0.5 s behind real time
    a.expect(50)  # a's guess is still "backlog" (its last reservation was appended)
    a._behind = False
    before = a.calls
    a.acquire()
    assert clock() - last == pytest.approx(0.5, abs=0.03)  # at once, not a block later
    assert a.calls - before == 1  # the one ADD, kept in part
    sends = [clock()]
    for _ in range(30):
        a.acquire()
        sends.append(clock())
    assert max_in_any_window(sends) <= 50


def test_slots_reserved_past_the_deadline_are_given_back_at_once_for_the_next_sender(table):
    """An invocation near its end reserves a block that runs past its deadline: the slots after it go back to
    the schedule right away (not at ``release``, when another sender's block usually stands after them), so
    the next sender's slots follow the last one used, with no hole."""
    clock = SimClock()
    a, b = limiter(table, clock, 10), limiter(table, clock, 10)
    deadline = clock() + 0.35  # 4 slots of a 10-slot block (~1 s) fit before it
    a.expect(10)
    used = []
    while (slot := a.acquire_slot(deadline=deadline)) is not None:
        used.append(slot)
    assert len(used) == 4 and a.calls == 2  # the reservation, and the give-back
    b.acquire()
    assert clock() - used[-1] == pytest.approx(1 / (10 * 0.96), rel=1e-3)  # the very next slot


def test_no_rate_limit_hands_out_slots_until_the_deadline_on_its_clock():
    from jastipin.outbound.rate_limit import NoRateLimit

    clock = SimClock(1_000.0)
    limiter = NoRateLimit(clock=clock)
    assert limiter.acquire(None) and limiter.acquire(1_000.5)
    clock.now = 1_001.0  # past the deadline: no slot
    assert limiter.acquire(1_000.5) is False and limiter.acquire(None)


def test_claimed_slots_are_handed_out_without_waiting_and_a_late_one_is_dropped(table):
    """The asyncio sender's way in: ``claim_slot`` hands out the next slot's time at once (it waits for it
    itself), ``has_slot`` tells whether that needs a reservation (a DynamoDB call), and ``in_time`` drops a
    slot woken for too late, as ``acquire`` does."""
    clock = SimClock()
    lim = limiter(table, clock, 10, block_seconds=0.5)
    assert not lim.has_slot()  # nothing reserved yet: the first claim reserves a block (5 slots)
    calls = lim.calls
    slots = [lim.claim_slot() for _ in range(5)]
    assert lim.calls == calls + 1 and clock() == 1_800_000_000.0  # one reservation, no time passed
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(slots))  # spaced for 10/s
    assert not lim.has_slot()
    clock.now = slots[1]
    assert lim.in_time(slots[1])
    clock.now = slots[2] + lim.late_seconds + 0.001  # woken too late for its slot
    assert not lim.in_time(slots[2]) and lim.dropped == 1
    assert lim.claim_slot(deadline=clock() - 10) is None  # nothing before a deadline already past


def test_has_slot_never_waits_for_a_reservation_in_progress(table):
    """While another caller holds the limiter (reserving: a DynamoDB call), ``has_slot`` answers False at
    once instead of blocking the event loop; that caller then claims on a thread."""
    clock = SimClock()
    lim = limiter(table, clock, 10)
    lim.claim_slot()
    with lim._lock:
        assert lim.has_slot() is False
    assert lim.has_slot() is True


def paced_instances(table, clock, rate, lanes, pace, instances, seconds):
    """A discrete-event run of ``instances`` senders on one limit, each able to make ``pace`` sends a second
    (a Lambda instance bound by its CPU share), all starting on lane 0. Each instance claims a slot when it
    is free, sends at the slot's time if it can still make it (``in_time``), and is busy 1 / pace s after a
    send. Returns the send times and the limiters."""
    limiters = [limiter(table, clock, rate, lanes=lanes, lane=0) for _ in range(instances)]
    start = clock()
    events = [(start + i / 1000, i, None) for i in range(instances)]  # (time, instance, slot to send on)
    heapq.heapify(events)
    sends: list[float] = []
    while events:
        at, i, slot = heapq.heappop(events)
        clock.now = max(clock.now, at)
        if slot is not None:  # the slot's time: send if still in time, then busy for 1 / pace s
            if limiters[i].in_time(slot):
                sends.append(clock.now)
                at = clock.now + 1 / pace
            if at <= start + seconds:
                heapq.heappush(events, (at, i, None))
            continue
        slot = limiters[i].claim_slot()  # free: take the next slot, wait for it
        assert slot is not None
        heapq.heappush(events, (max(slot, clock.now), i, slot))
    return sends, limiters


def test_max_lanes_keep_every_second_within_the_limit(table):
    assert [max_lanes(r) for r in (10, 80, 96, 97, 200, 1000)] == [1, 1, 1, 2, 4, 20]
    assert limiter(table, SimClock(), 1000, lanes=50).lanes == 20
    assert limiter(table, SimClock(), 80, lanes=12).lanes == 1


def test_senders_slower_than_the_limit_fill_it_on_lanes_not_on_one_schedule(table):
    """Four senders that can each make 60 sends a second share a 200/s limit. On one schedule each block is
    50 slots 5.2 ms apart, which a sender at 60/s cannot keep up with: most slots go stale and the four
    together send far under the limit. On 4 lanes (50/s each, slots 21 ms apart) every sender keeps up with
    its lane: they leave lane 0, where they all started, for a lane each, and fill the limit. Either way no
    sliding second holds more than 200 sends."""
    random.seed(7)
    one, _ = paced_instances(table, SimClock(), 200, 1, pace=60, instances=4, seconds=20)
    laned, limiters = paced_instances(
        table, SimClock(1_900_000_000.0), 200, 4, pace=60, instances=4, seconds=20
    )
    assert max_in_any_window(one) <= 200 and max_in_any_window(laned) <= 200
    steady = [t for t in laned if t >= laned[0] + 5]  # after the senders spread over the lanes
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert rate >= 0.9 * 200 * 0.96  # the limit less its 4 % margin
    assert len(one) / 20 < 0.5 * 200
    assert sorted(lim.lane for lim in limiters) == [0, 1, 2, 3]
    assert sum(lim.calls for lim in limiters) <= len(laned) / 20  # blocks of 50 (1 s of a lane)

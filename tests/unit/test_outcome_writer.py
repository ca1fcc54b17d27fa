"""The send loop's log writer (``outbound.outcomes.OutcomeWriter``): outcomes are written as they come, side
by side across recipients, one after the other for one recipient with the latest last; a write that fails
stops what follows and is reported."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jastipin.data.models import LogStatus
from jastipin.outbound.jobs import Recipient
from jastipin.outbound.outcomes import Outcome, OutcomeWriter
from tests.harness import eventually


def outcome(rid: str, attempts: int, status: LogStatus = LogStatus.QUEUED) -> Outcome:
    return Outcome(Recipient(id=rid, phone="+6281300000001"), status, attempts)


class Log:
    """A write that blocks until released (per recipient), recording what was written in order."""

    def __init__(self) -> None:
        self.written: list[tuple[str, int]] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self.gates: dict[str, threading.Event] = {}
        self.fail: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def gate(self, rid: str) -> threading.Event:
        return self.gates.setdefault(rid, threading.Event())

    def write(self, o: Outcome) -> None:
        rid = o.recipient.id
        with self._lock:
            self.running.add(rid)
            self.most_at_once = max(self.most_at_once, len(self.running))
        self.gate(rid).wait(5)
        with self._lock:
            self.running.discard(rid)
            if (rid, o.attempts) in self.fail:
                raise RuntimeError("table unavailable")
            self.written.append((rid, o.attempts))


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def make(pool: ThreadPoolExecutor, log: Log) -> tuple[OutcomeWriter, list[int], list[BaseException]]:
    done: list[int] = []
    failures: list[BaseException] = []
    writer = OutcomeWriter(pool, log.write, written=done.append, failed=failures.append)
    return writer, done, failures


def test_recipients_are_written_side_by_side_without_waiting_for_a_batch(pool):
    log = Log()
    writer, done, failures = make(pool, log)
    for n in range(5):
        writer.add(outcome(f"p{n}", 1))
    eventually(lambda: len(log.running) == 5)  # all five at once, none waiting for the others
    for n in range(5):
        log.gate(f"p{n}").set()
    writer.wait()
    assert sorted(log.written) == [(f"p{n}", 1) for n in range(5)]
    assert sum(done) == 5 and failures == []


def test_one_recipients_outcomes_land_in_order_and_an_overtaken_one_is_not_written(pool):
    log = Log()
    writer, done, _ = make(pool, log)
    writer.add(outcome("p1", 1))  # a failure being written...
    eventually(lambda: "p1" in log.running)
    writer.add(outcome("p1", 2))  # ...when the retry's outcome comes, and then another
    writer.add(outcome("p1", 3, LogStatus.SENT))
    assert sum(done) == 1  # attempt 2 was overtaken by attempt 3 before it was written
    log.gate("p1").set()
    writer.wait()
    assert log.written == [("p1", 1), ("p1", 3)]  # never two writes of one entry at once; the latest last
    assert log.most_at_once == 1
    assert sum(done) == 3  # every outcome handed in is done with (written or overtaken)


def test_a_failed_write_is_reported_and_what_follows_it_is_not_written(pool):
    log = Log()
    log.fail.add(("p1", 1))
    writer, done, failures = make(pool, log)
    writer.add(outcome("p1", 1))
    eventually(lambda: "p1" in log.running)
    writer.add(outcome("p1", 2))
    log.gate("p1").set()
    with pytest.raises(RuntimeError, match="table unavailable"):
        writer.wait()
    assert log.written == [] and len(failures) == 1
    assert sum(done) == 2  # the failed write and the one not started after it both free their places
    writer.wait(raise_error=False)  # the send loop's error path: waits, does not raise again


def test_on_the_event_loop_the_same_rules_hold():
    """``OutcomeWriter.on_loop`` (the deployed sender's): each write a task on the loop, side by side across
    recipients, one recipient's in order with an overtaken one skipped, a failure reported and what follows
    it not written; ``written`` and ``failed`` are called on the loop's thread."""
    import asyncio

    written: list[tuple[str, int]] = []
    gates: dict[str, asyncio.Event] = {}
    running: set[str] = set()
    most = [0]
    threads: set[int] = set()

    async def write(o: Outcome) -> None:
        rid = o.recipient.id
        running.add(rid)
        most[0] = max(most[0], len(running))
        await gates.setdefault(rid, asyncio.Event()).wait()
        running.discard(rid)
        if (rid, o.attempts) == ("p9", 1):
            raise RuntimeError("table unavailable")
        written.append((rid, o.attempts))

    async def scenario() -> tuple[list[int], list[BaseException]]:
        loop = asyncio.get_running_loop()
        done: list[int] = []
        failures: list[BaseException] = []

        def on_written(n: int) -> None:
            threads.add(threading.get_ident())
            done.append(n)

        writer = OutcomeWriter.on_loop(loop, write, written=on_written, failed=failures.append)
        for n in range(3):
            writer.add(outcome(f"p{n}", 1))
        writer.add(outcome("p0", 2))
        writer.add(outcome("p0", 3, LogStatus.SENT))  # overtakes attempt 2 while attempt 1 is written
        writer.add(outcome("p9", 1))  # fails...
        writer.add(outcome("p9", 2))  # ...so this one is not written
        await asyncio.sleep(0.01)
        assert len(running) == 4  # p0, p1, p2 and p9 side by side
        for gate in ("p0", "p1", "p2", "p9"):
            gates.setdefault(gate, asyncio.Event()).set()
        await asyncio.sleep(0.01)
        gates["p0"].set()
        await asyncio.to_thread(writer.wait, raise_error=False)
        return done, failures

    done, failures = asyncio.run(scenario())
    assert sorted(written) == [("p0", 1), ("p0", 3), ("p1", 1), ("p2", 1)]
    assert written.index(("p0", 1)) < written.index(("p0", 3))
    assert [str(f) for f in failures] == ["table unavailable"]
    assert sum(done) == 7  # every outcome handed in is done with: written, overtaken or not written
    assert threads == {threading.main_thread().ident}  # on the loop's thread

"""A CPU profile of every thread of a process, by sampling: where its CPU time goes, threads included.

cProfile hooks one thread, and with ``time.process_time`` as its clock it charges the CPU of every other
thread to whatever the hooked thread is doing. This sampler instead reads, every ``interval`` seconds, each
thread's own CPU clock (``pthread_getcpuclockid``) and its current stack (``sys._current_frames``), and
charges the CPU the thread used since the last sample to that stack: a thread waiting (epoll, a lock, a
sleep) uses none, so waits cost nothing in the profile. The figures are estimates (a sample's CPU is charged
to the stack seen at its end), good to a few percent at a 1 ms interval over tens of seconds.

    sampler = CpuSampler()
    sampler.start()
    sampler.active = True      # charge only while measuring
    ...
    sampler.active = False
    sampler.stop()
    print(sampler.report())    # self and inclusive CPU by function, and by module group

The sampler's own thread is left out; its cost (a few percent of one core at 1 ms) is in the process's CPU.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from types import FrameType

GROUPS = (  # the first pattern found in a frame's file names the group of a stack's self time
    ("aiohttp", "aiohttp"),
    ("botocore", "botocore"),
    ("boto3", "botocore"),
    ("pynamodb", "pynamodb"),
    ("aws_lambda_powertools", "powertools"),
    ("pydantic", "pydantic"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/ssl.py", "ssl"),
    ("/jastipin/", "jastipin"),
)


class CpuSampler:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.active = False
        self.self_cpu: Counter[str] = Counter()  # function -> CPU seconds with it on top of the stack
        self.inclusive_cpu: Counter[str] = Counter()  # function -> CPU seconds with it anywhere on the stack
        self.groups: Counter[str] = Counter()  # library of the innermost frame that names one
        self.total = 0.0
        self._last: dict[int, float] = {}
        self._clocks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _cpu(self, ident: int) -> float | None:
        clock = self._clocks.get(ident)
        try:
            if clock is None:
                clock = self._clocks[ident] = time.pthread_getcpuclockid(ident)
            return time.clock_gettime(clock)
        except (OSError, ValueError):  # the thread ended
            self._clocks.pop(ident, None)
            return None

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                now = self._cpu(ident)
                if now is None:
                    continue
                used = now - self._last.get(ident, now)
                self._last[ident] = now
                if self.active and used > 0:
                    self._charge(frame, used)

    def _charge(self, frame: FrameType | None, used: float) -> None:
        self.total += used
        seen: set[str] = set()
        top = True
        group = None
        while frame is not None:
            code = frame.f_code
            name = f"{_short(code.co_filename)}:{code.co_firstlineno}({code.co_name})"
            if top:
                self.self_cpu[name] += used
                top = False
            if name not in seen:
                self.inclusive_cpu[name] += used
                seen.add(name)
            if group is None:
                group = next((g for pattern, g in GROUPS if pattern in code.co_filename), None)
            frame = frame.f_back
        self.groups[group or "other"] += used

    def report(self, per: int = 1, unit: str = "ms per recipient", top: int = 40) -> str:
        """Tables of the CPU, divided by ``per`` (e.g. the recipients) and shown in ms."""

        def rows(counter: Counter[str]) -> list[str]:
            return [
                f"| {name} | {cpu / per * 1000:.4f} | {cpu / self.total:.1%} |"
                for name, cpu in counter.most_common(top)
            ]

        head = [f"| function | {unit} | share |", "|---|---|---|"]
        return "\n".join(
            [
                f"CPU sampled: {self.total:.2f} s over {per:,} ({self.total / per * 1000:.3f} {unit})",
                "",
                "By library (the innermost frame that names one):",
                "",
                f"| library | {unit} | share |",
                "|---|---|---|",
                *rows(self.groups),
                "",
                "Self:",
                "",
                *head,
                *rows(self.self_cpu),
                "",
                "Inclusive:",
                "",
                *head,
                *rows(self.inclusive_cpu),
                "",
                "Inclusive, the project's functions:",
                "",
                *head,
                *rows(Counter({k: v for k, v in self.inclusive_cpu.items() if k.startswith("jastipin/")})),
            ]
        )


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/layers/common/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path

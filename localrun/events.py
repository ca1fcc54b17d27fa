"""The sample events (``events/*.json``) as a checked sequence: ``events/manifest.json`` names, in order, the
function that takes each file and what it must answer. Two runners share this: the built-artefact test
(``tests/artefact/``, the handlers imported from ``sam build``'s output in a bare interpreter) and
``make sam-invoke`` (``scripts/sam_invoke.py``, each event through ``sam local invoke`` in Docker).

A result is what the handler returned (an API Gateway v2 response dict, or an SQS batch response); a runner
that could not get one (the handler raised, the process failed) reports ``error`` instead."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = ROOT / "events"
MANIFEST = EVENTS_DIR / "manifest.json"


@dataclass(frozen=True)
class EventCase:
    file: str
    function: str
    expect: dict[str, Any]
    sandbox: int | None = None  # WhatsApp messages the sandbox must receive for this event

    @property
    def path(self) -> Path:
        return EVENTS_DIR / self.file

    def event(self) -> dict[str, Any]:
        return json.loads(self.path.read_text(encoding="utf-8"))

    def expected(self) -> str:
        """One short phrase: what a passing result looks like."""
        parts = []
        if "status" in self.expect:
            parts.append(str(self.expect["status"]))
        if "batchItemFailures" in self.expect:
            parts.append(f"batchItemFailures={len(self.expect['batchItemFailures'])}")
        if self.sandbox is not None:
            parts.append(f"whatsapp={self.sandbox}")
        return " ".join(parts)


@dataclass
class Outcome:
    case: EventCase
    got: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        case = self.case
        text = f"{mark} {case.function:<16} {case.file:<26} expected {case.expected():<22} got {self.got}"
        if self.problems:
            text += "  (" + "; ".join(self.problems) + ")"
        return text


def load_cases(manifest: Path = MANIFEST) -> list[EventCase]:
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return [
        EventCase(file=e["file"], function=e["function"], expect=e["expect"], sandbox=e.get("sandbox"))
        for e in data["events"]
    ]


def check(case: EventCase, result: Any, error: str | None = None, sandbox: int | None = None) -> Outcome:
    """Compare one handler result (or the error that replaced it) with the case's expectations."""
    if error is not None:
        return Outcome(case, "error", [error.strip().splitlines()[-1] if error.strip() else "error"])
    problems: list[str] = []
    got: list[str] = []
    expect = case.expect
    if not isinstance(result, dict):
        return Outcome(case, type(result).__name__, [f"not a dict: {result!r:.120}"])
    if "status" in expect:
        status = result.get("statusCode")
        got.append(str(status))
        if status != expect["status"]:
            problems.append(f"status {status}: {str(result.get('body', ''))[:200]}")
    if "body" in expect and result.get("body") != expect["body"]:
        problems.append(f"body {str(result.get('body'))[:120]!r} != {expect['body']!r}")
    if "json" in expect:
        try:
            body = json.loads(result.get("body") or "null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            problems.append("body is not a JSON object")
        else:
            for key, value in expect["json"].items():
                if body.get(key) != value:
                    problems.append(f"{key}={body.get(key)!r}, expected {value!r}")
    if "batchItemFailures" in expect:
        failures = result.get("batchItemFailures")
        got.append(f"batchItemFailures={len(failures) if isinstance(failures, list) else failures!r}")
        if failures != expect["batchItemFailures"]:
            problems.append(f"batchItemFailures {failures!r}")
    if case.sandbox is not None:
        got.append(f"whatsapp={sandbox}")
        if sandbox != case.sandbox:
            problems.append(f"the WhatsApp sandbox received {sandbox}, expected {case.sandbox}")
    return Outcome(case, " ".join(got) or "-", problems)

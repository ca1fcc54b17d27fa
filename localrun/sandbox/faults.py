"""Faults injected into sends (the keys and their effect are in the package docstring): each is checked and
normalised when added, and the first one matching a send, with uses left, decides its fate."""

from __future__ import annotations

from typing import Any

from localrun.sandbox.graph_errors import _error_title
from localrun.sandbox.graph_validation import _normalize_address

DEFAULT_TIMEOUT_FAULT_MS = 10_000.0

_FAULT_KEYS = frozenset({"to", "times", "http_status", "code", "message", "latency_ms", "timeout"})


def _check_fault(fault: Any) -> dict[str, Any]:
    """Validate a fault dict and return the normalized copy that is stored."""
    if not isinstance(fault, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(fault) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    to = fault.get("to")
    if to is not None and (not isinstance(to, str) or not to):
        raise ValueError("fault 'to' must be a phone number / user id string or null")
    times = fault.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("fault 'times' must be a positive integer or null (forever)")
    timeout = fault.get("timeout", False)
    if not isinstance(timeout, bool):
        raise ValueError("fault 'timeout' must be a boolean")
    latency = fault.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0
    ):
        raise ValueError("fault 'latency_ms' must be a non-negative number")
    http_status = fault.get("http_status")
    if http_status is not None and (
        isinstance(http_status, bool)
        or not isinstance(http_status, int)
        or not (http_status == 200 or 400 <= http_status <= 599)
    ):
        raise ValueError("fault 'http_status' must be 200 or a 4xx/5xx status")
    code = fault.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise ValueError("fault 'code' must be an integer")
    message = fault.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("fault 'message' must be a string")
    if http_status is not None and http_status >= 400 and code is None:
        code = 131000
    return {
        "to": None if to is None else _normalize_address(to),
        "times": times,
        "http_status": http_status,
        "code": code,
        "message": message if message is not None else (f"(#{code}) {_error_title(code)}" if code else None),
        "latency_ms": None if latency is None else float(latency),
        "timeout": timeout,
    }


def _match_fault(faults: list[dict[str, Any]], address: str) -> dict[str, Any] | None:
    """First fault for ``address`` with uses left; consumes one use. Caller holds the sandbox's lock."""
    for fault in faults:
        if fault["to"] is not None and fault["to"] != address:
            continue
        if fault["times"] is not None:
            if fault["times"] <= 0:
                continue
            fault["times"] -= 1
        return dict(fault)
    return None

"""Shared fixtures. Tables and queues always come from template.yaml itself (``LocalStack``), so tests and
template cannot drift."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
REGION = "ap-southeast-3"

os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Jastipin")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "jastipin")


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def settings_env(stack, **overrides: str) -> dict[str, str]:
    """The env vars the functions get from the template, plus local secrets: what each one's settings read."""
    from localrun.project import LOCAL_SECRETS

    env: dict[str, str] = {}
    for function in stack.functions().values():  # each function's own; the handlers share one process
        env.update(function.environment)
    env.update(LOCAL_SECRETS)
    env["SECRETS_SSM_PREFIX"] = ""
    env.update(overrides)
    return env

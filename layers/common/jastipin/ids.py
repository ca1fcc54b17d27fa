"""Identifiers: trip slugs (a trip's id), time-sortable ids for new things, stable pseudonymous ids for
people."""

from __future__ import annotations

import hashlib
import os
import re
import time

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


def normalise_slug(raw: str) -> str | None:
    """A trip slug as typed (any case, spaces around) in its one form, or None if it cannot be one."""
    slug = raw.strip().lower()
    return slug if SLUG_RE.match(slug) else None


def new_id(prefix: str) -> str:
    """`prefix_` + 12 hex digits of milliseconds + 8 random hex digits: sorts by creation time."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(4).hex()}"


def stable_id(prefix: str, *parts: str) -> str:
    """Deterministic id from parts (e.g. a participant id from a phone): same input, same id, no PII."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{prefix}_{digest[:16]}"

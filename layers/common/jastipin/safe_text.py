"""Text that ends up in a WhatsApp message must be clean: no control characters (new line and tab are
allowed where the field allows them) and no Unicode bidirectional controls (U+202A..U+202E, U+2066..U+2069,
U+200E/U+200F, U+061C), which can make a message read differently from what was sent (the right-to-left
override turns "Rp 50.000 gcp.exe" into a lookalike). Refused with a 400 that names the field; never
stripped silently, so what the jastiper sent is what participants read."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _check(value: str, allowed: str) -> str:
    for ch in value:
        if ch in allowed:
            continue
        if ch in BIDI_CONTROLS:
            raise ValueError(f"must not contain the bidirectional control U+{ord(ch):04X}")
        if unicodedata.category(ch) == "Cc":
            raise ValueError(f"must not contain the control character U+{ord(ch):04X}")
    return value


def clean_line(value: str) -> str:
    """One line: no control characters at all."""
    return _check(value, "")


def clean_text(value: str) -> str:
    """Free text: new lines and tabs allowed, no other control characters."""
    return _check(value, "\n\t")


CleanLine = Annotated[str, AfterValidator(clean_line)]
CleanText = Annotated[str, AfterValidator(clean_text)]

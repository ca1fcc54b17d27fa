"""Inbound command parser: ``JOIN <slug>``, ``INFO [slug]``, ``STOP [slug]``, tolerant of case, spacing and
punctuation ("join: JPN25!", "  Info ", "stop."). Indonesian synonyms: GABUNG, BERHENTI."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from jastipin.ids import normalise_slug


class CommandKind(StrEnum):
    JOIN = "join"
    INFO = "info"
    STOP = "stop"
    UNKNOWN = "unknown"


KEYWORDS = {
    "JOIN": CommandKind.JOIN,
    "GABUNG": CommandKind.JOIN,
    "INFO": CommandKind.INFO,
    "STOP": CommandKind.STOP,
    "BERHENTI": CommandKind.STOP,
    "UNSUBSCRIBE": CommandKind.STOP,
}

_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
MAX_COMMAND_TEXT = 200  # a command is short; longer text is chat, not a command


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    slug: str | None = None


def parse_command(text: str | None) -> Command:
    if not text:
        return Command(CommandKind.UNKNOWN)
    folded = unicodedata.normalize("NFKC", text)[: MAX_COMMAND_TEXT + 1]
    if len(folded) > MAX_COMMAND_TEXT:
        return Command(CommandKind.UNKNOWN)
    tokens = _TOKEN_RE.findall(folded)
    if not tokens:
        return Command(CommandKind.UNKNOWN)
    kind = KEYWORDS.get(tokens[0].upper())
    if kind is None:
        return Command(CommandKind.UNKNOWN)
    slug = normalise_slug(tokens[1]) if len(tokens) > 1 else None
    if kind is CommandKind.JOIN and len(tokens) > 1 and slug is None:
        return Command(CommandKind.JOIN, None)
    return Command(kind, slug)

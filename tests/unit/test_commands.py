from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jastipin.inbound.commands import Command, CommandKind, parse_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("JOIN jpn25", Command(CommandKind.JOIN, "jpn25")),
        ("join JPN25", Command(CommandKind.JOIN, "jpn25")),
        ("  Join:   jpn25!! ", Command(CommandKind.JOIN, "jpn25")),
        ("gabung korea-26", Command(CommandKind.JOIN, "korea-26")),
        ("JOIN", Command(CommandKind.JOIN, None)),
        ("JOIN ???", Command(CommandKind.JOIN, None)),
        ("info", Command(CommandKind.INFO, None)),
        ("Info.", Command(CommandKind.INFO, None)),
        ("INFO jpn25", Command(CommandKind.INFO, "jpn25")),
        ("stop", Command(CommandKind.STOP, None)),
        ("STOP!", Command(CommandKind.STOP, None)),
        ("berhenti", Command(CommandKind.STOP, None)),
        ("Stop jpn25", Command(CommandKind.STOP, "jpn25")),
        ("halo kak, ready?", Command(CommandKind.UNKNOWN)),
        ("", Command(CommandKind.UNKNOWN)),
        (None, Command(CommandKind.UNKNOWN)),
        ("JOINjpn25", Command(CommandKind.UNKNOWN)),
        ("ＪＯＩＮ　ｊｐｎ２５", Command(CommandKind.JOIN, "jpn25")),  # full-width, as some keyboards type
        ("JOIN " + "a" * 300, Command(CommandKind.UNKNOWN)),
    ],
)
def test_parse_command(text, expected):
    assert parse_command(text) == expected


@given(st.text(max_size=5000))
def test_parser_never_crashes_and_slugs_are_safe(text):
    command = parse_command(text)
    assert command.kind in CommandKind
    if command.slug is not None:
        assert command.slug == command.slug.lower() and 2 <= len(command.slug) <= 40
        assert all(c.isalnum() or c == "-" for c in command.slug)

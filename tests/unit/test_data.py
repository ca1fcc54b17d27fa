"""The data layer's contract: a write whose condition does not hold is an answer (False / None), a table
that fails raises as it is (the caller's record goes back to its queue and the work is done again)."""

from __future__ import annotations

import pytest

from jastipin.data import STORE_ERRORS, contacts, participants
from jastipin.data import trips as trip_records
from jastipin.data.models import Trip


def test_a_condition_that_does_not_hold_is_an_answer(settings) -> None:
    assert trip_records.create(Trip("jpn25", title="Japan", owner_phone="+6281234567890")) is True
    assert trip_records.create(Trip("jpn25", title="Again", owner_phone="+6281234567890")) is False
    assert trip_records.get("jpn25").title == "Japan"
    assert trip_records.get("nope") is None
    assert participants.unsubscribe("jpn25", "p_nobody") is False  # not a member: no item written
    assert participants.get("jpn25", "p_nobody") is None
    assert contacts.set_marketing_opt_out("+6281111111111", True) is False  # no such contact
    assert contacts.get("+6281111111111") is None
    new = participants.join(
        "jpn25", "p_ani", wa_key="+6281111111111", phone="+6281111111111", user_id=None, name="Ani"
    )
    assert new is True and participants.unsubscribe("jpn25", "p_ani") is True
    again = participants.join(
        "jpn25", "p_ani", wa_key="+6281111111111", phone="+6281111111111", user_id=None, name=None
    )
    assert again is False and participants.active_among("jpn25", ["p_ani", "p_nobody"]) == {"p_ani"}


def test_a_table_that_fails_raises_a_store_error(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Trip.Meta, "table_name", "no-such-table")
    monkeypatch.setattr(Trip, "_connection", None)
    with pytest.raises(STORE_ERRORS):
        trip_records.create(Trip("jpn25", title="Japan", owner_phone="+6281234567890"))

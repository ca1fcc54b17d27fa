from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jastipin.phones import InvalidPhoneNumber, to_e164


@pytest.mark.parametrize(
    "raw",
    [
        "081234567890",
        "0812-3456-7890",
        "+62 812 3456 7890",
        "6281234567890",
        "+6281234567890",
        " 0812 3456 7890 ",
    ],
)
def test_indonesian_forms_normalise_to_e164(raw):
    assert to_e164(raw) == "+6281234567890"


def test_other_countries_keep_their_code():
    assert to_e164("+65 9123 4567") == "+6591234567"


@pytest.mark.parametrize(
    "raw", ["", "abc", "0812", "+1", "12345678901234567890123456789012345", "0000000000"]
)
def test_invalid_numbers_are_rejected(raw):
    with pytest.raises(InvalidPhoneNumber):
        to_e164(raw)


@given(st.text(max_size=64))
def test_never_raises_anything_but_invalid_phone_number(raw):
    try:
        result = to_e164(raw)
    except InvalidPhoneNumber:
        return
    assert result.startswith("+") and result[1:].isdigit() and 8 <= len(result) <= 16

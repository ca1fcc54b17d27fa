"""Phone numbers: everything stored is E.164 (``+6281234567890``); Indonesian ``08…`` numbers are accepted."""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "ID"


class InvalidPhoneNumber(ValueError):
    pass


def to_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """Normalise a human- or Meta-written number (``0812-3456-7890``, ``628123…``, ``+62 812…``) to E.164."""
    text = raw.strip()
    if not text or len(text) > 32:
        raise InvalidPhoneNumber("phone number is empty or too long")
    digits = "".join(ch for ch in text if ch.isdigit())
    # Meta's wa_id and many exports carry the country code without '+': treat 62… as international.
    if not text.startswith("+") and digits.startswith("62") and len(digits) >= 10:
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

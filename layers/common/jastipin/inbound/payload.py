"""Meta's webhook payload as pydantic models, parsed at the edge. Unknown fields are ignored on purpose: Meta
adds fields over time and a parse failure would make Meta retry for 7 days."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Profile(_Loose):
    name: str | None = None


class WebhookContact(_Loose):
    wa_id: str | None = None
    user_id: str | None = None  # business-scoped user id (username users may have no wa_id)
    profile: Profile | None = None


class Text(_Loose):
    body: str = ""


class SystemChange(_Loose):
    """A ``system`` message: the user changed their number (``user_changed_number``, new ``wa_id``) or
    their business-scoped user id changed (``user_changed_user_id``, new ``user_id``)."""

    type: str | None = None
    body: str | None = None
    wa_id: str | None = None
    user_id: str | None = None


class InboundMessage(_Loose):
    id: str = Field(min_length=1, max_length=256)
    from_: str | None = Field(default=None, alias="from")
    from_user_id: str | None = None
    timestamp: str | None = None
    type: str = "unknown"
    text: Text | None = None
    system: SystemChange | None = None

    @property
    def text_body(self) -> str | None:
        return self.text.body if self.type == "text" and self.text else None


class StatusErrorDetail(_Loose):
    code: int | None = None
    title: str | None = None


class Pricing(_Loose):
    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class StatusUpdate(_Loose):
    id: str = Field(min_length=1, max_length=256)
    status: str
    timestamp: str | None = None
    recipient_id: str | None = None
    errors: list[StatusErrorDetail] = Field(default_factory=list)
    pricing: Pricing | None = None
    biz_opaque_callback_data: str | None = None  # our log key, as the sender passed it


class UserPreference(_Loose):
    wa_id: str | None = None
    user_id: str | None = None
    category: str | None = None
    value: str | None = None


class ChangeValue(_Loose):
    """One change's messages, statuses and preferences. Each is validated on its own: a malformed one is
    dropped and counted (``malformed``), the valid ones of the same payload still take effect."""

    contacts: list[WebhookContact] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    statuses: list[StatusUpdate] = Field(default_factory=list)
    user_preferences: list[UserPreference] = Field(default_factory=list)
    _malformed: int = PrivateAttr(default=0)

    @property
    def malformed(self) -> int:
        return self._malformed

    @model_validator(mode="wrap")
    @classmethod
    def _item_by_item(cls, data: Any, handler: Any) -> ChangeValue:
        dropped = 0
        if isinstance(data, dict):
            data = dict(data)
            for name, model in _ITEMS.items():
                items = data.get(name)
                if not isinstance(items, list):
                    if items is not None:
                        dropped += 1
                        data.pop(name)
                    continue
                kept = []
                for item in items:
                    try:
                        kept.append(model.model_validate(item))
                    except ValidationError:
                        dropped += 1
                data[name] = kept
        value: ChangeValue = handler(data)
        value._malformed = dropped
        return value


class Change(_Loose):
    field: str = ""
    value: ChangeValue = Field(default_factory=ChangeValue)


class Entry(_Loose):
    id: str | None = None
    changes: list[Change] = Field(default_factory=list)


class WebhookPayload(_Loose):
    object: str = ""
    entry: list[Entry] = Field(default_factory=list)


_ITEMS: dict[str, type[BaseModel]] = {
    "contacts": WebhookContact,
    "messages": InboundMessage,
    "statuses": StatusUpdate,
    "user_preferences": UserPreference,
}


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``, compared in constant time."""
    if not header or not header.isascii() or not header.startswith("sha256="):
        return False  # (compare_digest refuses non-ASCII str: a forged header must be a 403, not a crash)
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().lower(), expected)

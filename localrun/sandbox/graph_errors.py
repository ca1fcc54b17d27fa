"""Graph API errors as the sandbox answers them: the ``{"error": {...}}`` body Meta sends, and the titles of
WhatsApp's error codes (also used in "failed" status callbacks)."""

from __future__ import annotations

import secrets
from typing import Any

_ERROR_TITLES = {
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131021: "Recipient cannot be sender",
    131026: "Message undeliverable",
    131031: "Account has been locked",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131051: "Unsupported message type",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Template Param Count Mismatch",
    132001: "Template does not exist",
    133010: "Phone number not registered",
}
_ERROR_DOCS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def _fbtrace_id() -> str:
    return secrets.token_urlsafe(17)[:23]


def _error_title(code: int) -> str:
    return _ERROR_TITLES.get(code, "Error")


class GraphError(Exception):
    """A Graph API error: HTTP status plus the ``{"error": {...}}`` body Meta sends."""

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        *,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.error_type = error_type
        self.subcode = subcode
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = _fbtrace_id()
        return {"error": error}

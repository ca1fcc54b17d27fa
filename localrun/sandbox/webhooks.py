"""Meta-format webhooks: the envelope around a ``value`` (contacts and messages, or statuses), the
``X-Hub-Signature-256`` signature over its bytes, and the POST that delivers it as Meta does."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

logger = logging.getLogger(__name__)

STATUS_VALUES = ("sent", "delivered", "read", "failed")
WEBHOOK_TIMEOUT_S = 5.0
DEFAULT_DISPLAY_PHONE_NUMBER = "15550000000"
DEFAULT_WABA_ID = "100000000000001"


def webhook_envelope(
    value: dict[str, Any],
    *,
    phone_number_id: str,
    display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
    waba_id: str = DEFAULT_WABA_ID,
) -> dict[str, Any]:
    """A Meta webhook body (``field: messages``) around ``value`` (``contacts``/``messages``/``statuses``)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }


def sign(app_secret: str, body: bytes) -> str:
    """Return Meta's ``X-Hub-Signature-256`` value for ``body``: ``"sha256=" + hex(HMAC-SHA256)``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def _post_signed(
    url: str, app_secret: str | None, payload: dict[str, Any], client: httpx.Client | None
) -> int:
    """POST ``payload`` to ``url`` as Meta does, signed when there is an ``app_secret``; returns the HTTP
    status, or 0 when the webhook could not be reached. ``client`` is reused when given."""
    # Compact, ASCII-escaped JSON like Meta sends; the signature covers exactly these bytes.
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
    if app_secret is not None:
        headers["X-Hub-Signature-256"] = sign(app_secret, body)
    try:
        if client is not None:
            response = client.post(url, content=body, headers=headers)
        else:
            with httpx.Client(timeout=WEBHOOK_TIMEOUT_S, trust_env=False) as one_off:
                response = one_off.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        logger.warning("whatsapp sandbox: webhook POST to %s failed: %r", url, exc)
        return 0
    return response.status_code

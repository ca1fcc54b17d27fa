"""The package's one error hierarchy. Every error raised on purpose for a caller to answer is a
``JastipinError``: a status code, a stable ``code``, a message and the field it is about. The HTTP layer
answers each with that status and one body shape, ``{"error": {"code", "message", "field"?, "details"?}}``,
in one place (``jastipin.http.install_error_handlers``).

Errors of the outside world keep their own families, each with what its caller needs: ``WhatsAppError``
(Meta's code, subcode and fbtrace_id; ``jastipin.outbound.whatsapp``) and a failing table (raised as
PynamoDB or botocore raise it, ``jastipin.data.STORE_ERRORS``)."""

from __future__ import annotations

from typing import Any


class JastipinError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code


class NotFound(JastipinError):
    status_code = 404
    code = "not_found"


class Conflict(JastipinError):
    status_code = 409
    code = "conflict"


class Unprocessable(JastipinError):
    status_code = 422
    code = "validation_error"

"""Domain errors. The HTTP layer maps each to one status code in one place (``jastipin.http``)."""

from __future__ import annotations


class JastipinError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(JastipinError):
    status_code = 404
    code = "not_found"


class Conflict(JastipinError):
    status_code = 409
    code = "conflict"


class Unprocessable(JastipinError):
    status_code = 422
    code = "validation_error"

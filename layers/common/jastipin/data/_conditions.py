"""What the data modules share: telling a failed write condition (an expected answer, turned into a result)
from a failing table (raised as it is: the caller's record goes back to its queue, or its request answers
500, and the work is done again)."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PutError, PynamoDBException, UpdateError

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: Exception) -> bool:
    """Whether a PynamoDB write error is its condition not holding (and not the table failing)."""
    return getattr(exc, "cause_response_code", None) == CONDITION_FAILED


def written(write: Callable[[], object]) -> bool:
    """Run one conditional write: True if it was made, False if its condition did not hold. A failing table
    raises."""
    try:
        write()
    except (PutError, UpdateError) as exc:
        if not condition_failed(exc):
            raise
        return False
    return True


# What a table that fails raises, through PynamoDB or the low-level client: for the few callers that go on
# without the write (best-effort bookkeeping), so they need not know either library.
STORE_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError, PynamoDBException)

"""Meta's delivery statuses: which are worth keeping, and applying one to the notifications log."""

from __future__ import annotations

from datetime import timedelta

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from jastipin.data import notifications_log
from jastipin.data.models import LogStatus, parse_log_key, utcnow
from jastipin.inbound.payload import (
    StatusUpdate,
)

logger = Logger(child=True)


def status_worth_keeping(status: StatusUpdate) -> bool:
    """Whether a status can change the log: ``delivered``, ``read`` and ``failed``. ``sent`` adds nothing
    (only the sender gives an entry its wamid, and records "sent" with it; Meta repeats the pricing with
    ``delivered``): skipping it saves a queued message and a write on every message (README, Cost). Nor
    does a status name we do not know. Neither is queued nor applied."""
    try:
        return LogStatus(status.status) is not LogStatus.SENT
    except ValueError:
        return False


def apply_status(status: StatusUpdate, log_ttl_days: float = 3) -> bool:
    """Apply one of Meta's statuses to the notifications log (``data.notifications_log``: kept even when
    it arrives before the sender's outcome); returns False when nothing changed (a duplicate or an older
    status). A status the log cannot place is kept until it expires, and counted."""
    if not status_worth_keeping(status):
        return False
    new = LogStatus(status.status)
    change = notifications_log.StatusChange(
        wamid=status.id,
        status=new,
        key=parse_log_key(status.biz_opaque_callback_data),
        error_code=status.errors[0].code if new is LogStatus.FAILED and status.errors else None,
        pricing_category=status.pricing.category if status.pricing else None,
        pricing_type=status.pricing.type if status.pricing else None,
        billable=status.pricing.billable if status.pricing else None,
    )
    result = notifications_log.apply_status(change, utcnow() + timedelta(days=log_ttl_days))
    if result in ("kept", "unknown"):
        name = "StatusBeforeOutcome" if result == "kept" else "StatusForUnknownMessage"
        with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="service", value="jastipin")
        logger.info(
            "status kept before its outcome" if result == "kept" else "status for unknown message",
            extra={"status": new.value},
        )
    return result in ("applied", "kept")

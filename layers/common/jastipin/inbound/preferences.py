"""Marketing preferences (``user_preferences``: stop / resume marketing messages) recorded on the contact."""

from __future__ import annotations

import contextlib

from jastipin import audience_counts
from jastipin.data import contacts
from jastipin.data.models import utcnow
from jastipin.inbound.payload import (
    UserPreference,
)
from jastipin.phones import InvalidPhoneNumber, to_e164


def apply_preference(preference: UserPreference) -> None:
    """``user_preferences`` (marketing stop/resume) updates the contact's marketing consent."""
    if preference.category != "marketing_messages" or preference.value not in {"stop", "resume"}:
        return
    keys = []
    if preference.wa_id:
        with contextlib.suppress(InvalidPhoneNumber):
            keys.append(to_e164("+" + preference.wa_id.lstrip("+")))
    if preference.user_id:
        keys.append(f"bsuid:{preference.user_id}")
    for key in keys:
        # A table failure raises: the webhook answers 500, Meta delivers it again.
        if not contacts.set_marketing_opt_out(key, preference.value == "stop", updated_at=utcnow()):
            continue  # no such contact
        audience_counts.sync_person(key)  # a failure answers 500 too: Meta retries, the sync runs again

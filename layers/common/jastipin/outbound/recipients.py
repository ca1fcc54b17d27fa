"""Who gets a chunk's message: recipients whose user id WhatsApp replaced follow it, each recipient is
decided (sent to, or skipped with a reason: STOP, a closed 24-hour window, marketing consent), STOP is
honoured again right before each send (``MembershipWatch``), and a marketing opt-out Meta reports is
recorded."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from jastipin.data import STORE_ERRORS, contacts, participants
from jastipin.data.models import Contact, LogStatus, utcnow
from jastipin.ids import stable_id
from jastipin.outbound.jobs import Job, Recipient
from jastipin.outbound.outcomes import Outcome

logger = Logger(child=True)

WINDOW = timedelta(hours=24)

MAX_USER_ID_MOVES = 3  # a user id replaced again while a chunk waited: followed this many times


def follow_user_id_changes(recipients: list[Recipient]) -> list[Recipient]:
    """Recipients known only by a user id that WhatsApp has since replaced (``inbound.change_user_id``
    leaves a forward on the old id's contact) become their new identity: the new user id, and the new
    participant id under which their memberships and log entry now are. One BatchGetItem when a chunk has
    such recipients, none otherwise. A chunk delivered again after the change logs under the new id; an
    entry its first delivery wrote under the old one is not seen then, so that recipient may get it twice."""
    moved: dict[str, str] = {}  # old user id → the one that replaced it
    to_read = {r.user_id for r in recipients if not r.phone and r.user_id}
    for _ in range(MAX_USER_ID_MOVES):
        if not to_read:
            break
        found = contacts.forwards(to_read)
        moved.update(found)
        to_read = set(found.values()) - set(moved)
    if not moved:
        return recipients

    def latest(user_id: str) -> str:
        for _ in range(MAX_USER_ID_MOVES):
            user_id = moved.get(user_id, user_id)
        return user_id

    logger.info(
        "recipients whose user id changed", extra={"recipients": sum(r.user_id in moved for r in recipients)}
    )
    return [
        Recipient(
            id=stable_id("p", contacts.wa_key(None, latest(r.user_id))),
            user_id=latest(r.user_id),
            name=r.name,
        )
        if not r.phone and r.user_id in moved
        else r
        for r in recipients
    ]


def decide(
    job: Job, recipients: list[Recipient], attempts: dict[str, int], now: Callable[[], datetime] = utcnow
) -> tuple[list[Outcome], list[Recipient], set[str]]:
    """Skip who must not get this message (STOP honoured at send time, 24-hour window, marketing opt-out).
    ``now`` is the time the 24-hour window is judged at (the invocation's clock).

    Returns the skipped outcomes (for the caller to log), the recipients to send to, and those whose 24-hour
    window is open (free-form text allowed)."""
    if not recipients:
        return [], [], set()
    members: set[str] = set()  # the recipients still active in the trip (a projected read: the status)
    if job.needs_membership:
        members = participants.active_among(job.trip_id, (r.id for r in recipients))
    known: dict[str, Contact] = {}
    if not job.always_in_window:
        known = contacts.for_sending(_wa_key(r) for r in recipients)
    at = now()
    skipped: list[Outcome] = []
    sendable: list[Recipient] = []
    window_open: set[str] = set()
    for r in recipients:
        contact = known.get(_wa_key(r))
        is_open = job.always_in_window or bool(
            contact and contact.last_inbound_at and at - contact.last_inbound_at < WINDOW
        )
        reason = None
        if job.needs_membership and r.id not in members:
            reason = "unsubscribed"
        if reason is None and job.needs_marketing_consent and contact and contact.marketing_opt_out:
            reason = "marketing_opt_out"
        if reason is None and job.needs_open_window and not is_open:
            reason = "window_closed"
        if reason:
            skipped.append(Outcome(r, LogStatus.SKIPPED, attempts.get(r.id, 0), reason=reason))
        else:
            sendable.append(r)
            if is_open:
                window_open.add(r.id)
    return skipped, sendable, window_open


MEMBERSHIP_REFRESH_SECONDS = 1.0  # STOP honoured at send time: memberships re-read at most this often


class MembershipWatch:
    """Which of a chunk's recipients left the trip (STOP) while the chunk sends: a chunk at a low rate limit
    sends for tens of seconds, and a STOP answered meanwhile must hold within a second. Checked right before
    each send; the memberships of the recipients not yet sent are re-read (one BatchGetItem, status only) when
    the last read is ``MEMBERSHIP_REFRESH_SECONDS`` old, so a fast chunk reads once and a slow one about once
    a second (~0.1 calls a recipient at 10 messages/s). A read that fails raises: the chunk goes back to the
    queue rather than send to someone who may have stopped."""

    def __init__(self, trip_id: str, recipient_ids: Iterable[str], clock: Callable[[], float]) -> None:
        self._trip_id = trip_id
        self._unsent = set(recipient_ids)
        self._left: set[str] = set()
        self._clock = clock
        self._read_at = clock()  # _decide has just read them
        self._lock = threading.Lock()

    def expect(self, recipient_ids: Iterable[str]) -> None:
        """Recipients to be sent to again (a retry): they are checked again before that send."""
        with self._lock:
            self._unsent.update(recipient_ids)

    def left(self, participant_id: str) -> bool:
        """Whether this recipient has left the trip (as of at most a second ago); called once per send."""
        with self._lock:
            if self._due():
                self._refresh()
            self._unsent.discard(participant_id)
            return participant_id in self._left

    def due(self) -> bool:
        """Whether the next ``left`` would re-read the memberships (the asyncio sender then calls ``refresh``
        first, on a thread). Takes no lock, so it never waits for a re-read under way."""
        return self._due()

    def refresh(self) -> None:
        """Re-read the memberships of the recipients not yet sent, if due."""
        with self._lock:
            if self._due():
                self._refresh()

    def _due(self) -> bool:
        return self._clock() - self._read_at >= MEMBERSHIP_REFRESH_SECONDS

    def _refresh(self) -> None:
        unsent = [pid for pid in self._unsent if pid not in self._left]
        active = participants.active_among(self._trip_id, unsent)
        self._left |= {pid for pid in unsent if pid not in active}
        self._read_at = self._clock()


def _wa_key(r: Recipient) -> str:
    return contacts.wa_key(r.phone, r.user_id)


# A table failing, or a count that kept changing (audience_counts gives up with RuntimeError).
_BOOKKEEPING_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, RuntimeError)


def mark_marketing_opt_out(r: Recipient) -> None:
    """Meta refused a marketing template (131050): the person stopped marketing messages on WhatsApp's side.
    Recorded on the contact, and the person's audience counts follow, so the next estimate leaves them out."""
    from jastipin import audience_counts

    try:
        if not contacts.set_marketing_opt_out(_wa_key(r), True):
            return  # no contact: nobody to count
        audience_counts.sync_person(_wa_key(r))
    except _BOOKKEEPING_ERRORS:
        # The send itself is decided (failed, logged); the sender re-checks consent on every later send. A
        # count left behind shows as an estimate one too high until the person's next change syncs it.
        logger.warning("marketing opt-out not recorded", extra={"participant_id": r.id}, exc_info=True)

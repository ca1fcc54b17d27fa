"""The kept audience counts (``jastipin.audience_counts``) against moto: after every kind of change (JOIN,
STOP, re-join, messages, marketing stop/resume, a 131050 refusal, time passing) the estimate equals a full
count of the same audience (``jastipin.audience.count``), for every filter. Free-running concurrent syncs are
tested against dynalite (tests/integration/test_audience_counts_concurrency.py): moto applies a conditional
write in steps another thread can come between, as DynamoDB never does."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest

from jastipin import audience, audience_counts, broadcasts
from jastipin.data.models import AudienceShard, Contact, Participant, ParticipantStatus, Trip, utcnow
from jastipin.ids import stable_id
from jastipin.inbound.handler import CommandHandler
from jastipin.inbound.payload import InboundMessage, UserPreference, WebhookContact
from jastipin.inbound.preferences import apply_preference
from jastipin.outbound.jobs import AudienceFilter, Recipient
from jastipin.outbound.recipients import mark_marketing_opt_out
from jastipin.trips import CreateTripRequest, create_trip
from tests.unit.test_inbound import Queued

TRIP = "jpn25"
OTHER = "kor26"


def phone(n: int) -> str:
    return f"+62813000{n:05d}"


def pid(n: int) -> str:
    return stable_id("p", phone(n))


ALL_DAYS = range(1, audience.MAX_ACTIVE_WITHIN_DAYS + 1)


def filters(now: datetime | None = None, days: Iterable[int] = (1, 7, 30)) -> list[AudienceFilter]:
    return [
        audience.broadcast_filter(d, marketing=marketing, now=now)
        for d in days
        for marketing in (False, True)
    ]


def assert_exact(trip_id: str = TRIP, now: datetime | None = None, days: Iterable[int] = (1, 7, 30)) -> None:
    """Estimate == full count for every filter of ``days`` (each full count reads the whole trip)."""
    trip = Trip.get(trip_id)
    histogram = audience_counts.histogram(trip_id)
    for criteria in filters(now, days):
        full = audience.count(trip_id, criteria)
        assert audience_counts.counted(histogram, criteria) == full, criteria
        assert audience_counts.estimate(trip, criteria) == full


@pytest.fixture
def trips(settings) -> CommandHandler:
    for slug, title in ((TRIP, "Jastip Jepang"), (OTHER, "Jastip Korea")):
        create_trip(CreateTripRequest(slug=slug, title=title, owner_phone="+6281234567890"), settings)
    return CommandHandler(Queued())


def say(handler: CommandHandler, n: int, text: str, at: datetime | None = None) -> None:
    at = at or utcnow()
    message = InboundMessage.model_validate(
        {
            "id": f"wamid.{n}.{at.timestamp()}.{text}",
            "from": phone(n)[1:],
            "timestamp": str(int(at.timestamp())),
            "type": "text",
            "text": {"body": text},
        }
    )
    handler.handle_message(message, [WebhookContact(wa_id=phone(n)[1:], profile={"name": f"P{n}"})])


def test_a_new_trip_is_counted_from_its_first_member(trips):
    assert Trip.get(TRIP).audience_counted is True
    assert audience_counts.histogram(TRIP) == {}
    assert_exact()
    say(trips, 1, "JOIN jpn25")
    hour = audience_counts.hour_of(utcnow())
    assert audience_counts.histogram(TRIP) == {f"a{hour}": 1, f"m{hour}": 1}
    assert dict(audience_counts.codes(TRIP)) == {pid(1): hour * 2 + 1}
    assert_exact()


def test_every_change_a_participant_can_make_keeps_the_estimate_exact(trips):
    now = utcnow()
    for n in range(6):
        say(trips, n, "JOIN jpn25")
    say(trips, 0, "JOIN kor26")  # a person in two trips
    assert_exact()
    say(trips, 1, "STOP jpn25")
    assert_exact()
    say(trips, 1, "JOIN jpn25")  # re-join after STOP
    say(trips, 2, "STOP jpn25")
    assert_exact()
    apply_preference(UserPreference(wa_id=phone(3)[1:], category="marketing_messages", value="stop"))
    assert_exact()
    assert_exact(OTHER)
    mark_marketing_opt_out(Recipient(id=pid(0), phone=phone(0)))  # Meta refused a marketing send: 131050
    assert_exact()
    assert_exact(OTHER)
    apply_preference(UserPreference(wa_id=phone(3)[1:], category="marketing_messages", value="resume"))
    say(trips, 4, "INFO jpn25", at=now + timedelta(hours=2))  # a later hour of activity, in both its trips
    assert_exact()
    # Nobody does anything for days: the counts stay as they were and the cut-off moves past them.
    for later in (now + timedelta(days=1), now + timedelta(days=6, hours=23), now + timedelta(days=40)):
        assert_exact(now=later, days=ALL_DAYS)


def test_records_in_any_state_sync_to_the_exact_count(trips):
    """Members written straight into the tables with activity spread over 40 days, opted out or not,
    stopped or not, with or without a contact: one sync each makes the counts exact; again, nothing moves."""
    rng = random.Random(7)
    now = utcnow()
    for n in range(80):
        joined = now - timedelta(hours=rng.randrange(0, 40 * 24), minutes=rng.randrange(60))
        Participant(
            TRIP,
            pid(n),
            wa_key=phone(n),
            phone=phone(n),
            status=rng.choice([ParticipantStatus.ACTIVE.value] * 4 + [ParticipantStatus.UNSUBSCRIBED.value]),
            joined_at=joined,
            last_active_at=joined,
        ).save()
        if rng.random() < 0.8:
            contact = Contact(phone(n), participant_id=pid(n), marketing_opt_out=rng.random() < 0.2)
            if rng.random() < 0.7:
                contact.last_inbound_at = now - timedelta(minutes=rng.randrange(0, 40 * 24 * 60))
            contact.save()
    assert sum(audience_counts.sync_member(TRIP, pid(n)) for n in range(80)) > 50
    assert_exact(days=ALL_DAYS)
    assert not any(audience_counts.sync_member(TRIP, pid(n)) for n in range(80))
    for n in rng.sample(range(80), 20):  # then changes straight in the tables, each followed by its sync
        Participant(TRIP, pid(n)).update(
            actions=[
                Participant.status.set(rng.choice(["active", "unsubscribed"])),
                Participant.last_active_at.set(now - timedelta(hours=rng.randrange(0, 30 * 24))),
            ]
        )
        audience_counts.sync_member(TRIP, pid(n))
    assert_exact(days=ALL_DAYS)


def test_a_sync_that_read_records_before_their_last_change_never_wins(trips, monkeypatch):
    """The interleaving a code comparison alone gets wrong, played in order: a member counted as active is
    stopped; a sync (U) reads the stored code and the stopped records; before U writes, the member re-joins
    in the same hour (the same code as stored) and that change's own sync (T) runs to its end; then U writes.
    T replaced the attribute U's condition names, so U fails, reads again and finds the member active."""
    say(trips, 1, "JOIN jpn25")
    (stored,) = audience_counts.codes(TRIP)
    Participant(TRIP, pid(1)).update(actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED.value)])
    real = audience_counts._wanted_code
    interleaved: list[int | None] = []

    def records_change_before_u_writes(trip_id: str, participant_id: str) -> int | None:
        wanted = real(trip_id, participant_id)
        if not interleaved:
            interleaved.append(wanted)
            Participant(TRIP, pid(1)).update(actions=[Participant.status.set(ParticipantStatus.ACTIVE.value)])
            audience_counts.sync_member(TRIP, pid(1))  # T, from start to end
        return wanted

    monkeypatch.setattr(audience_counts, "_wanted_code", records_change_before_u_writes)
    audience_counts.sync_member(TRIP, pid(1))  # U
    assert interleaved == [None]  # U did read the stopped records first
    assert list(audience_counts.codes(TRIP)) == [stored]
    assert_exact()


def test_a_change_recorded_before_a_crash_is_applied_by_the_retry(trips, monkeypatch):
    """The member's change is written (members item, with its change number) and the process dies before the
    histogram item is updated: the estimate misses it until the message is retried, whose sync finds the
    code in place and applies the recorded change, once. Applied changes leave the log."""
    say(trips, 1, "JOIN jpn25")
    real = audience_counts._apply_pending
    crashes = []

    def crash_once(*args, **kwargs):
        if not crashes:
            crashes.append(args)
            raise ConnectionError("the function died here")
        return real(*args, **kwargs)

    monkeypatch.setattr(audience_counts, "_apply_pending", crash_once)
    Participant(TRIP, pid(1)).update(actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED.value)])
    with pytest.raises(ConnectionError):
        audience_counts.sync_member(TRIP, pid(1))
    criteria = audience.broadcast_filter(7, marketing=False)
    assert audience_counts.counted(audience_counts.histogram(TRIP), criteria) == 1  # not yet applied
    assert audience.count(TRIP, criteria) == 0
    assert audience_counts.sync_member(TRIP, pid(1)) is False  # the retry: nothing new to record ...
    assert_exact()  # ... and the recorded change is applied
    assert audience_counts.sync_member(TRIP, pid(1)) is False
    assert_exact()  # applied once, not twice
    shard = audience_counts.shard_of(pid(1))
    client = audience_counts._client()
    item = client.get_item(
        TableName=AudienceShard.Meta.table_name,
        Key={"trip_id": {"S": TRIP}, "part": {"S": f"m{shard:02d}"}},
        ConsistentRead=True,
    )["Item"]
    assert item["log"] == {"M": {}} and item["seq"] == {"N": "2"}  # JOIN, STOP: both applied and removed


def test_the_broadcast_estimate_reads_the_counts_not_the_participants(trips, monkeypatch):
    for n in range(5):
        say(trips, n, "JOIN jpn25")

    def no_full_count(*_args, **_kwargs):
        raise AssertionError("the estimate read the participants")

    monkeypatch.setattr(audience, "count", no_full_count)
    criteria = audience.broadcast_filter(7, marketing=True)
    assert broadcasts.audience_size(Trip.get(TRIP), criteria) == 5


def test_a_trip_without_counts_is_counted_in_full_until_rebuilt(settings, caplog):
    """A trip written around the counts (bulk import, data from before them) still gets an exact estimate
    (a full count, with a warning naming the rebuild); after ``rebuild`` the kept counts answer."""
    Trip(TRIP, title="Jastip Jepang", owner_phone="+6281234567890").save()  # no audience_counted
    now = utcnow()
    for n in range(250):
        Participant(
            TRIP, pid(n), wa_key=phone(n), phone=phone(n), last_active_at=now - timedelta(hours=n)
        ).save()
    criteria = audience.broadcast_filter(7, marketing=False)
    # n = 0 .. 168 hours ago: the cut-off is the start of the hour 7 days (168 hours) ago
    assert broadcasts.audience_size(Trip.get(TRIP), criteria) == audience.count(TRIP, criteria) == 169
    assert "rebuild" in caplog.text
    assert audience_counts.main(["rebuild", TRIP]) == 0
    assert Trip.get(TRIP).audience_counted is True
    assert len(list(audience_counts.codes(TRIP))) == 250
    assert AudienceShard.count(TRIP) == 2 * audience_counts.SHARDS  # members and histogram items
    assert_exact()


def test_a_cut_off_inside_an_hour_counts_only_the_hours_wholly_after_it(settings):
    hour = 500_000
    histogram = {f"a{hour - 1}": 2, f"a{hour}": 3, f"a{hour + 1}": 4, f"m{hour + 1}": 1}
    start = datetime.fromtimestamp(hour * 3600).astimezone()
    exact = AudienceFilter(active_since=start, marketing=False)
    inside = AudienceFilter(active_since=start + timedelta(minutes=1), marketing=False)
    assert audience_counts.counted(histogram, exact) == 7
    assert audience_counts.counted(histogram, inside) == 4
    assert audience_counts.counted(histogram, AudienceFilter(active_since=start, marketing=True)) == 1

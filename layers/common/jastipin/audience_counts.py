"""Kept counts of every trip's broadcast audience, so that the estimate never reads the participants: a
constant number of small reads answers it at any trip size (``estimate``), and it stays exactly what a full
count (``jastipin.audience.count``) gives.

What is counted. Each active membership has a *code*: the hour of its last activity
(``audience.last_activity``: joining the trip, or any message the person sent) and whether marketing
templates may reach it (not opted out). A STOPped membership has none. An audience filter asks "active since
the start of hour H (and, for a marketing template, not opted out)", so a histogram of codes per trip answers
it: the sum of its entries from H on. ``audience.broadcast_filter`` puts the cut-off on an hour boundary for
exactly this reason, and the fan-out uses the same cut-off, so estimate and recipients agree.

Layout (table ``audience``, ``AudienceShard``): a trip's members are spread over ``SHARDS`` shards by a hash
of the participant id, and a shard is two items. The *members* item (``part`` ``m00`` … ``m63``) holds one
attribute per member, named by its participant id (``"<code>|<writes>"``, ``"-|<writes>"`` when not counted),
the number of the shard's last change (``seq``) and the changes not yet applied (``log``: number -> histogram
deltas). The *histogram* item (``h00`` … ``h63``) holds ``hist`` (``a<hour>``: members last active in that
hour; ``m<hour>``: those of them marketing may reach) and the number of the last change applied to it
(``applied``). The estimate reads only the 64 histogram items: a few KB, whatever the trip's size.

Exactness without transactions (which the local DynamoDB does not have). A member's move is one conditional
write of its members item: the member's new attribute and change number ``seq + 1`` with its deltas, on the
condition that neither the attribute nor ``seq`` moved since they were read. The change is then applied to
the histogram item by a conditional write that moves ``applied`` from n - 1 to n, so each change is applied
once and in order, by whichever sync gets there first; applied changes leave the log. A crash between the two
writes leaves the change recorded: the next sync of any member of that shard (the retried message's own, at
the latest) applies it.

Keeping them. ``sync_member`` makes a member's stored code match its participant and contact records. It
reads the member attribute first and the records second, consistently, and writes on the condition that the
attribute has not changed since (every write changes it): of two concurrent syncs the one that read older
records fails the condition, reads again and writes what the newer records say. Every change that can move a
code calls it after writing the records (JOIN, STOP, an inbound message that starts a new hour of activity, a
marketing opt-out or resume); a change whose sync failed is retried with the message that carried it (SQS
redelivery, Meta's webhook retry). Going quiet needs no write: the hour of last activity stays, and the
cut-off moves past it.

Trips written around this module (bulk imports, tables from before it) have no counts:
``Trip.audience_counted`` is unset, the estimate falls back to a full count (and says so in the log), and
``rebuild`` (``python -m jastipin.audience_counts rebuild <trip_id>``) counts the trip once, while it is
quiet.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from jastipin.data import contacts, participants
from jastipin.data import trips as trip_records
from jastipin.data.models import AudienceShard, Contact, Participant, ParticipantStatus, Trip
from jastipin.outbound.jobs import AudienceFilter

logger = Logger(child=True)

SHARDS = 64  # per trip: 100,000 members are ~1,600 per members item (~45 KB; the item limit is 400 KB)
HOUR = 3600
MAX_ATTEMPTS = 8  # a member's code is rarely contended; each lost race costs one more read-and-write


def shard_of(participant_id: str) -> int:
    return int.from_bytes(hashlib.sha256(participant_id.encode()).digest()[:4], "big") % SHARDS


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // HOUR


def hour_start(moment: datetime) -> datetime:
    return datetime.fromtimestamp(hour_of(moment) * HOUR, UTC)


def code_of(participant: Participant | None, contact: Contact | None) -> int | None:
    """A membership's code: ``hour * 2 + (1 if marketing may reach it)``; None when it is not counted."""
    from jastipin.audience import last_activity

    if participant is None or participant.status != ParticipantStatus.ACTIVE.value:
        return None
    last = last_activity(participant, contact)
    if last is None:
        return None
    marketing = not (contact is not None and contact.marketing_opt_out)
    return hour_of(last) * 2 + int(marketing)


def _entries(code: int | None) -> list[str]:
    if code is None:
        return []
    hour, marketing = divmod(code, 2)
    return [f"a{hour}", f"m{hour}"] if marketing else [f"a{hour}"]


def _client() -> Any:
    return AudienceShard._get_connection().connection.client


def _table() -> str:
    return AudienceShard.Meta.table_name


def _key(trip_id: str, part: str) -> dict[str, Any]:
    return {"trip_id": {"S": trip_id}, "part": {"S": part}}


def _members(shard: int) -> str:
    return f"m{shard:02d}"


def _hist(shard: int) -> str:
    return f"h{shard:02d}"


def _delta(old: int | None, new: int | None) -> dict[str, int]:
    deltas: Counter[str] = Counter()
    for entry in _entries(old):
        deltas[entry] -= 1
    for entry in _entries(new):
        deltas[entry] += 1
    return {entry: n for entry, n in sorted(deltas.items()) if n}


def _conditional(call: Any, **kwargs: Any) -> bool:
    """A conditional write; False if its condition failed."""
    try:
        call(TableName=_table(), **kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


# -- keeping the counts --------------------------------------------------------------------------------------


def sync_member(trip_id: str, participant_id: str) -> bool:
    """Make the member's stored code match its records; True if the counts moved.

    Every sync writes the member attribute, even when the code is unchanged, and every write stores a new
    write count: a sync that read the records before their last change can then never succeed after the sync
    that read them after it (its condition names an attribute value that write replaced). Comparing codes
    alone would let it: a member active, then stopped, then active again shows the same code before and
    after. A change of code is also recorded as change number ``seq + 1`` in the members item's log, in the
    same write, and then applied to the histogram item (``_apply_pending``)."""
    client, shard = _client(), shard_of(participant_id)
    members = _key(trip_id, _members(shard))
    for _ in range(MAX_ATTEMPTS):
        item = client.get_item(
            TableName=_table(),
            Key=members,
            ProjectionExpression="#p, #q",
            ExpressionAttributeNames={"#p": participant_id, "#q": "seq"},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            _create(client, trip_id, shard)
            continue
        stored = item[participant_id]["S"] if participant_id in item else None
        seq = int(item["seq"]["N"])
        wanted = _wanted_code(trip_id, participant_id)
        old, writes = parse_member(stored)
        delta = _delta(old, wanted)
        names = {"#p": participant_id}
        values: dict[str, Any] = {":new": {"S": f"{'-' if wanted is None else wanted}|{writes + 1}"}}
        if stored is None:
            condition = "attribute_not_exists(#p)"
        else:
            condition = "#p = :old"
            values[":old"] = {"S": stored}
        if not delta:
            # Nothing to count, but the write still replaces the attribute (see above), and a change
            # recorded earlier whose histogram update never happened (a crash in between) is finished now.
            if _conditional(
                client.update_item,
                Key=members,
                UpdateExpression="SET #p = :new",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            ):
                _apply_pending(client, trip_id, shard, seq)
                return False
            continue
        number = seq + 1
        names.update({"#q": "seq", "#l": "log", "#n": str(number)})
        values.update(
            {
                ":seq": {"N": str(seq)},
                ":number": {"N": str(number)},
                ":delta": {"M": {entry: {"N": str(n)} for entry, n in delta.items()}},
            }
        )
        if _conditional(
            client.update_item,
            Key=members,
            UpdateExpression="SET #p = :new, #q = :number, #l.#n = :delta",
            ConditionExpression=f"({condition}) AND #q = :seq",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        ):
            _apply_pending(client, trip_id, shard, number, known={number: delta})
            return True
    raise RuntimeError(f"audience count of {participant_id} in {trip_id} kept moving; gave up")


def parse_member(value: str | None) -> tuple[int | None, int]:
    """A member attribute: ``"<code>|<writes>"``, ``"-|<writes>"`` once no longer counted."""
    if value is None:
        return None, 0
    code, _, writes = value.partition("|")
    return (None if code == "-" else int(code)), int(writes)


def sync_person(wa_key: str) -> int:
    """Sync every membership of one person (their activity or marketing consent changed); returns how many
    counts moved. The memberships come from the ``by_participant`` index, whose lag cannot hide a membership
    from its count: JOIN syncs the membership it creates itself."""
    from jastipin.ids import stable_id

    participant_id = stable_id("p", wa_key)
    trips = [m.trip_id for m in participants.memberships(participant_id)]
    return sum(sync_member(trip_id, participant_id) for trip_id in trips)


def _wanted_code(trip_id: str, participant_id: str) -> int | None:
    participant = participants.get(trip_id, participant_id, consistent=True)
    if participant is None:
        return None
    return code_of(participant, contacts.get(participant.wa_key))


def _create(client: Any, trip_id: str, shard: int) -> None:
    """A shard's two items, each created once (a concurrent creator wins; its items are the same)."""
    for part, attributes in (
        (_hist(shard), {"hist": {"M": {}}, "applied": {"N": "0"}}),
        (_members(shard), {"seq": {"N": "0"}, "log": {"M": {}}}),
    ):
        _conditional(
            client.put_item,
            Item={**_key(trip_id, part), **attributes},
            ConditionExpression="attribute_not_exists(trip_id)",
        )


def _apply_pending(
    client: Any, trip_id: str, shard: int, upto: int, known: dict[int, dict[str, int]] | None = None
) -> None:
    """Apply the shard's recorded changes up to ``upto`` to its histogram item, each exactly once and in
    order: change n is applied by a conditional write that moves ``applied`` from n - 1 to n, whoever makes
    it. Then the applied change is removed from the members item's log (it is never needed again)."""
    known = dict(known or {})
    hist, members = _key(trip_id, _hist(shard)), _key(trip_id, _members(shard))
    applied = upto - 1 if upto in known else None  # first try: ours is the only change waiting
    for _ in range(MAX_ATTEMPTS * 4):
        if applied is None:
            applied = int(
                client.get_item(TableName=_table(), Key=hist, ConsistentRead=True)["Item"]["applied"]["N"]
            )
        if applied >= upto:
            return
        number = applied + 1
        delta = known.get(number)
        if delta is None:
            item = client.get_item(
                TableName=_table(),
                Key=members,
                ProjectionExpression="#l.#n",
                ExpressionAttributeNames={"#l": "log", "#n": str(number)},
                ConsistentRead=True,
            ).get("Item", {})
            recorded = item.get("log", {}).get("M", {}).get(str(number))
            if recorded is None:  # applied and removed meanwhile by another sync
                applied = None
                continue
            delta = {entry: int(v["N"]) for entry, v in recorded["M"].items()}
        names = {"#h": "hist", "#a": "applied"}
        values: dict[str, Any] = {
            ":zero": {"N": "0"},
            ":before": {"N": str(applied)},
            ":after": {"N": str(number)},
        }
        sets = ["#a = :after"]
        for i, (entry, n) in enumerate(sorted(delta.items())):
            names[f"#e{i}"] = entry
            values[f":d{i}"] = {"N": str(n)}
            sets.append(f"#h.#e{i} = if_not_exists(#h.#e{i}, :zero) + :d{i}")
        if _conditional(
            client.update_item,
            Key=hist,
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="#a = :before",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        ):
            client.update_item(
                TableName=_table(),
                Key=members,
                UpdateExpression="REMOVE #l.#n",
                ExpressionAttributeNames={"#l": "log", "#n": str(number)},
            )
            applied = number
        else:
            applied = None  # another sync applied it: read where the histogram is
    raise RuntimeError(f"audience histogram of {trip_id} shard {shard} kept moving; gave up")


# -- reading them --------------------------------------------------------------------------------------------


def histogram(trip_id: str) -> Counter[str]:
    """The trip's histogram, summed over its shards: one BatchGetItem of ``SHARDS`` small items."""
    client = _client()
    total: Counter[str] = Counter()
    pending: dict[str, Any] = {
        _table(): {
            "Keys": [_key(trip_id, _hist(shard)) for shard in range(SHARDS)],
            "ProjectionExpression": "#h",
            "ExpressionAttributeNames": {"#h": "hist"},
            "ConsistentRead": True,
        }
    }
    while pending:
        response = client.batch_get_item(RequestItems=pending)
        for item in response["Responses"].get(_table(), []):
            for entry, value in item.get("hist", {}).get("M", {}).items():
                total[entry] += int(value["N"])
        pending = response.get("UnprocessedKeys") or {}
    return total


def counted(histogram_: Counter[str], criteria: AudienceFilter) -> int:
    """Members in the audience of ``criteria`` (its cut-off on an hour boundary) by the histogram."""
    since = hour_of(criteria.active_since)
    if hour_start(criteria.active_since) != criteria.active_since:
        since += 1  # a cut-off inside an hour: only later hours are wholly after it
    prefix = "m" if criteria.marketing else "a"
    return sum(n for entry, n in histogram_.items() if entry[0] == prefix and int(entry[1:]) >= since)


def estimate(trip: Trip, criteria: AudienceFilter) -> int | None:
    """The size of the trip's audience from the kept counts; None if the trip is not counted."""
    if not trip.audience_counted:
        return None
    return counted(histogram(trip.trip_id), criteria)


# -- counting a trip from scratch ----------------------------------------------------------------------------


def rebuild(trip_id: str) -> int:
    """Count the trip from its records and replace its count items; returns the members counted. For a trip
    whose members were written around ``sync_member`` (bulk import, data from before the counts), run while
    nobody joins or leaves it: a change made during the rebuild may be overwritten."""
    from jastipin.audience import PAGE, chunked

    shards: list[dict[str, int]] = [{} for _ in range(SHARDS)]
    members = 0
    for page in chunked(participants.of_trip(trip_id), PAGE):
        known = contacts.many(p.wa_key for p in page)
        for participant in page:
            code = code_of(participant, known.get(participant.wa_key))
            if code is not None:
                shards[shard_of(participant.participant_id)][participant.participant_id] = code
                members += 1
    client = _client()
    for shard, codes_ in enumerate(shards):
        hist = Counter(entry for code in codes_.values() for entry in _entries(code))
        client.put_item(
            TableName=_table(),
            Item={
                **_key(trip_id, _members(shard)),
                "seq": {"N": "0"},
                "log": {"M": {}},
                **{pid: {"S": f"{code}|0"} for pid, code in codes_.items()},
            },
        )
        client.put_item(
            TableName=_table(),
            Item={
                **_key(trip_id, _hist(shard)),
                "applied": {"N": "0"},
                "hist": {"M": {entry: {"N": str(n)} for entry, n in hist.items()}},
            },
        )
    trip_records.mark_counted(trip_id)
    return members


def codes(trip_id: str) -> Iterator[tuple[str, int]]:
    """Every counted member of the trip and its code (tests and the rebuild check)."""
    client = _client()
    for shard in range(SHARDS):
        item = client.get_item(
            TableName=_table(), Key=_key(trip_id, _members(shard)), ConsistentRead=True
        ).get("Item")
        for name, value in (item or {}).items():
            if name not in {"trip_id", "part", "seq", "log"}:
                code, _ = parse_member(value["S"])
                if code is not None:
                    yield name, code


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m jastipin.audience_counts rebuild <trip_id>...`` with the deployment's table names in the
    environment (TRIPS_TABLE, PARTICIPANTS_TABLE, CONTACTS_TABLE, AUDIENCE_TABLE; README, Operations)."""
    import argparse
    import os

    from jastipin.data.models import ALL_MODELS

    parser = argparse.ArgumentParser(prog="python -m jastipin.audience_counts")
    commands = parser.add_subparsers(dest="command", required=True)
    rebuild_cmd = commands.add_parser("rebuild", help="count trips from their participants (while quiet)")
    rebuild_cmd.add_argument("trip_ids", nargs="+")
    args = parser.parse_args(list(argv) if argv is not None else None)
    for field, model in ALL_MODELS.items():
        name = os.environ.get(field.upper())
        if name and name != model.Meta.table_name:
            model.Meta.table_name = name
            model._connection = None
    for trip_id in args.trip_ids:
        print(f"{trip_id}: {rebuild(trip_id)} members counted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

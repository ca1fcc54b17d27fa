"""Concurrent syncs of the kept audience counts against dynalite, whose writes are atomic as DynamoDB's are
(moto's in-process conditional writes are not, so a race test there tests moto): eight threads change the
same members' records and sync them; whatever the interleaving, the counts end exactly a full count."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from jastipin import audience, audience_counts
from jastipin.data.models import ALL_MODELS, Contact, Participant, Trip, utcnow
from jastipin.ids import stable_id
from localrun.dynamo_local import DynaliteProcess
from localrun.stack import LocalStack
from tests.conftest import REGION, ROOT

TRIP = "jpn25"
MEMBERS = 12


def phone(n: int) -> str:
    return f"+62813000{n:05d}"


def pid(n: int) -> str:
    return stable_id("p", phone(n))


@pytest.fixture
def dynalite_tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    dynamodb = DynaliteProcess(region=REGION).start()
    try:
        stack = LocalStack(ROOT / "template.yaml", endpoint_url=dynamodb.url, region=REGION).create_tables()
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.url)
        env = {  # every function's variables (each names its own tables)
            name: value
            for resource in stack.template["Resources"].values()
            if resource["Type"] == "AWS::Serverless::Function"
            for name, value in resource["Properties"]["Environment"]["Variables"].items()
        }
        saved = {model: model.Meta.table_name for model in ALL_MODELS.values()}
        for field, model in ALL_MODELS.items():
            model.Meta.table_name = stack.tables[env[field.upper()]["Ref"]]
            model._connection = None
        yield
        for model, name in saved.items():
            model.Meta.table_name = name
            model._connection = None
    finally:
        dynamodb.stop()


def test_concurrent_syncs_of_changing_members_end_exact(dynalite_tables: None) -> None:
    """A sync that read the records before their last change loses its conditional write to the sync that
    read them after it (every write changes the member attribute), then reads again."""
    now = utcnow()
    Trip(TRIP, title="Jastip Jepang", owner_phone="+6281234567890", audience_counted=True).save()
    for n in range(MEMBERS):
        Participant(TRIP, pid(n), wa_key=phone(n), phone=phone(n), last_active_at=now).save()
        Contact(phone(n), participant_id=pid(n), marketing_opt_out=n % 3 == 0).save()
        audience_counts.sync_member(TRIP, pid(n))
    stop = threading.Event()
    errors: list[BaseException] = []
    syncs = [0]

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                n = rng.randrange(MEMBERS)
                Participant(TRIP, pid(n)).update(
                    actions=[
                        Participant.status.set(rng.choice(["active", "active", "unsubscribed"])),
                        Participant.last_active_at.set(now - timedelta(hours=rng.randrange(0, 20 * 24))),
                    ]
                )
                audience_counts.sync_member(TRIP, pid(n))
                syncs[0] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    threading.Event().wait(4)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert syncs[0] > 100  # enough contention to mean something: 12 members, 8 threads
    histogram = audience_counts.histogram(TRIP)
    for days in range(1, audience.MAX_ACTIVE_WITHIN_DAYS + 1):
        for marketing in (False, True):
            criteria = audience.broadcast_filter(days, marketing=marketing)
            assert audience_counts.counted(histogram, criteria) == audience.count(TRIP, criteria), criteria

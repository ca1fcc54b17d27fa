"""Sender logic against moto (mock_aws) and a scripted WhatsApp API (httpx.MockTransport): every recipient
ends with exactly one logged outcome; only transient failures are retried; redelivery never re-sends."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from jastipin.data.models import Contact, NotificationLog, Participant, ParticipantStatus, Trip, utcnow
from jastipin.outbound.delivery import Deadline, Sender, SendingHalted
from jastipin.outbound.jobs import JobKind, ProductUpdateJob, Recipient
from tests.unit.conftest import RecordingQueues, graph_client
from tests.unit.limiters import TokenBucket


def phone(n: int) -> str:
    return f"+62812000{n:05d}"


def seed(count: int, *, trip: str = "jpn25", inbound_hours_ago: float | None = 1.0) -> list[Recipient]:
    Trip(trip, title="Jastip Jepang", owner_phone="+6281234567890").save()
    recipients = []
    for n in range(count):
        pid = f"p_{n:016d}"
        Participant(trip, pid, wa_key=phone(n), phone=phone(n), name=f"P{n}").save()
        contact = Contact(phone(n), participant_id=pid, phone=phone(n))
        if inbound_hours_ago is not None:
            contact.last_inbound_at = utcnow() - timedelta(hours=inbound_hours_ago)
        contact.save()
        recipients.append(Recipient(id=pid, phone=phone(n), name=f"P{n}"))
    return recipients


def product_job(recipients: list[Recipient] | None, job_id: str = "job_1") -> ProductUpdateJob:
    return ProductUpdateJob(
        job_id=job_id,
        kind=JobKind.PRODUCT_UPDATE,
        trip_id="jpn25",
        product_id="prd_1",
        participants=recipients,
        template="product_update",
        message="Ada produk baru: A - Rp1.000",
    )


def log_of(job_id: str) -> dict[str, NotificationLog]:
    return {e.participant_id: e for e in NotificationLog.query(job_id)}


def test_sends_text_and_logs_one_sent_entry_per_recipient(sender, graph):
    recipients = seed(3)
    result = sender.send_chunk(product_job(recipients), Deadline(None))
    assert sorted(graph.sent_to()) == sorted(r.phone.lstrip("+") for r in recipients)
    first_to = graph.requests[0]["json"]["to"]
    first_id = next(r.id for r in recipients if r.phone == "+" + first_to)
    assert graph.requests[0]["json"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": first_to,
        "biz_opaque_callback_data": f"job_1|{first_id}",  # the log key: statuses update the entry by it
        "type": "text",
        "text": {"body": "Ada produk baru: A - Rp1.000", "preview_url": False},
    }
    assert graph.requests[0]["url"] == "https://graph.test/v23.0/123/messages"
    assert graph.requests[0]["headers"]["authorization"] == "Bearer tok"
    log = log_of("job_1")
    assert {e.status for e in log.values()} == {"sent"}
    assert {e.provider_msg_id for e in log.values()} == {"wamid.test1", "wamid.test2", "wamid.test3"}
    assert all(e.attempts == 1 and e.trip_id == "jpn25" and e.expires_at for e in log.values())
    assert result.count("sent") == 3


def test_log_holds_no_phone_numbers_or_text(sender):
    recipients = seed(1)
    sender.send_chunk(product_job(recipients), Deadline(None))
    raw = NotificationLog._get_connection().scan()["Items"]
    dumped = repr(raw)
    assert recipients[0].phone.lstrip("+") not in dumped and "Ada produk" not in dumped


def test_unsubscribed_after_queueing_is_skipped_at_send_time(sender, graph):
    recipients = seed(2)
    Participant("jpn25", recipients[0].id).update(
        actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED)]
    )
    sender.send_chunk(product_job(recipients), Deadline(None))
    log = log_of("job_1")
    assert (log[recipients[0].id].status, log[recipients[0].id].reason) == ("skipped", "unsubscribed")
    assert log[recipients[1].id].status == "sent"
    assert graph.sent_to() == [recipients[1].phone.lstrip("+")]


def test_closed_window_is_skipped_unless_trip_uses_a_template(sender, graph):
    recipients = seed(2, inbound_hours_ago=30)
    sender.send_chunk(product_job(recipients), Deadline(None))
    assert {(e.status, e.reason) for e in log_of("job_1").values()} == {("skipped", "window_closed")}
    assert graph.requests == []

    from jastipin.outbound.jobs import TemplateRef

    job = product_job(recipients, "job_2").model_copy(
        update={"template_ref": TemplateRef(name="product_update", parameters=["Jastip Jepang", "A"])}
    )
    sender.send_chunk(job, Deadline(None))
    assert {e.status for e in log_of("job_2").values()} == {"sent"}
    assert graph.requests[0]["json"]["type"] == "template"
    assert graph.requests[0]["json"]["template"] == {
        "name": "product_update",
        "language": {"code": "id"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Jastip Jepang"}, {"type": "text", "text": "A"}],
            }
        ],
    }


def test_a_user_known_only_by_user_id_goes_to_recipient_and_131062_fails_with_a_clear_reason(sender, graph):
    """Username users may have no phone: the message goes to ``recipient`` (the business-scoped user id; in
    ``to`` Meta would accept it and drop the message), and a message type Meta cannot send to a user id
    (131062) fails at once with a reason an operator can read."""
    Trip("jpn25", title="Jastip Jepang", owner_phone="+6281234567890").save()
    people = []
    for n, bsuid in enumerate(("ID.111", "ID.222")):
        pid = f"p_bsuid{n}"
        Participant("jpn25", pid, wa_key=f"bsuid:{bsuid}", user_id=bsuid).save()
        Contact(f"bsuid:{bsuid}", participant_id=pid, user_id=bsuid, last_inbound_at=utcnow()).save()
        people.append(Recipient(id=pid, user_id=bsuid))
    graph.fail("ID.222", (400, 131062))
    sender.send_chunk(product_job(people), Deadline(None))
    assert [r["json"].get("to") for r in graph.requests] == [None, None]
    assert sorted(graph.sent_to()) == ["ID.111", "ID.222"]  # once each: no retry
    log = log_of("job_1")
    assert log["p_bsuid0"].status == "sent"
    assert (log["p_bsuid1"].status, log["p_bsuid1"].reason, log["p_bsuid1"].error_code) == (
        "failed",
        "user_id_not_supported",
        131062,
    )


def test_invalid_number_fails_without_retry(sender, graph):
    recipients = seed(1)
    graph.fail(recipients[0].phone.lstrip("+"), (400, 131026))
    sender.send_chunk(product_job(recipients), Deadline(None))
    entry = log_of("job_1")[recipients[0].id]
    assert (entry.status, entry.reason, entry.error_code, entry.attempts) == (
        "failed",
        "whatsapp_error_131026",
        131026,
        1,
    )
    assert len(graph.requests) == 1


@pytest.mark.parametrize(("status", "code"), [(429, 130429), (500, 1), (400, 131056), (503, 0)])
def test_transient_failure_is_retried_with_backoff_then_sent(sender, graph, no_sleep, status, code):
    recipients = seed(2)
    target = recipients[0].phone.lstrip("+")
    if code == 0:
        graph.script[target] = [(503, {})]
    else:
        graph.fail(target, (status, code))
    sender.send_chunk(product_job(recipients), Deadline(None))
    log = log_of("job_1")
    assert (log[recipients[0].id].status, log[recipients[0].id].attempts) == ("sent", 2)
    assert log[recipients[1].id].attempts == 1
    assert graph.sent_to().count(target) == 2
    assert graph.sent_to().count(recipients[1].phone.lstrip("+")) == 1  # only the failed one is retried
    assert no_sleep.waits == [2.0]


def test_transient_failure_three_times_is_logged_failed(sender, graph, no_sleep):
    recipients = seed(1)
    graph.fail(recipients[0].phone.lstrip("+"), (500, 131000), (429, 130429), (500, 131000))
    sender.send_chunk(product_job(recipients), Deadline(None))
    entry = log_of("job_1")[recipients[0].id]
    assert (entry.status, entry.attempts, entry.reason) == ("failed", 3, "whatsapp_error_131000")
    assert no_sleep.waits == [2.0, 4.0]


def test_redelivered_chunk_does_not_resend(sender, graph):
    recipients = seed(3)
    sender.send_chunk(product_job(recipients), Deadline(None))
    sender.send_chunk(product_job(recipients), Deadline(None))
    assert len(graph.requests) == 3
    assert len(log_of("job_1")) == 3


def test_token_error_halts_raises_and_a_redelivery_sends_the_rest(sender, graph):
    recipients = seed(3)
    for r in recipients:
        graph.fail(r.phone.lstrip("+"), (401, 190))
    with pytest.raises(SendingHalted):
        sender.send_chunk(product_job(recipients), Deadline(None))
    assert not any(e.status in {"sent", "failed"} for e in log_of("job_1").values())
    graph.script.clear()  # the token is fixed; SQS redelivers: everyone is sent once, no attempt burnt
    sender.send_chunk(product_job(recipients), Deadline(None))
    log = log_of("job_1")
    assert {(e.status, e.attempts) for e in log.values()} == {("sent", 1)}


def test_marketing_opt_out_code_marks_the_contact(sender, graph):
    recipients = seed(1)
    graph.fail(recipients[0].phone.lstrip("+"), (400, 131050))
    sender.send_chunk(product_job(recipients), Deadline(None))
    assert log_of("job_1")[recipients[0].id].status == "failed"
    assert Contact.get(recipients[0].phone).marketing_opt_out is True


def test_out_of_time_requeues_the_rest_without_counting_an_attempt(settings, whatsapp_client, graph):
    recipients = seed(4)
    queues = RecordingQueues()
    sender = Sender(settings, queues, whatsapp_client, TokenBucket(10_000))
    result = sender.send_chunk(product_job(recipients), Deadline(lambda: 1000))  # 1 s left: below the margin
    assert graph.requests == []
    assert sorted(r.id for r in result.requeued) == [r.id for r in recipients]
    ((job, _suffix, delay),) = queues.sent
    assert sorted(r.id for r in job.participants) == [r.id for r in recipients] and delay == 0


def test_fan_out_pages_active_participants_into_chunks(settings, whatsapp_client):
    seed(7)
    Participant("jpn25", "p_0000000000000003").update(
        actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED)]
    )
    queues = RecordingQueues()
    sender = Sender(
        settings.model_copy(update={"chunk_size": 3}), queues, whatsapp_client, TokenBucket(10_000)
    )
    assert sender.fan_out(product_job(None)) == 6
    chunks = [job.participants for job, _, _ in queues.sent]
    assert [len(c) for c in chunks] == [3, 3]
    assert sorted(r.id for c in chunks for r in c) == sorted(f"p_{n:016d}" for n in range(7) if n != 3)
    assert {job.job_id for job, _, _ in queues.sent} == {"job_1"}


def test_a_timed_out_send_whose_status_arrives_in_the_backoff_is_not_sent_again(settings, no_sleep):
    """The send to one recipient times out, yet Meta took it: its "delivered" status (echoing our log key)
    arrives while the sender waits out the backoff, so the sender does not send a second copy."""
    import json

    import httpx

    from jastipin.inbound.payload import StatusUpdate
    from jastipin.inbound.statuses import apply_status

    recipients = seed(3)
    stalled = recipients[1]
    requests: list[str] = []

    def graph(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body["to"])
        if body["to"] == stalled.phone.lstrip("+") and requests.count(body["to"]) == 1:
            raise httpx.ReadTimeout("stalled past the client timeout", request=request)
        return httpx.Response(200, json={"messages": [{"id": f"wamid.{len(requests)}"}]})

    def status_arrives(seconds: float) -> None:
        no_sleep(seconds)
        # The status comes through the webhook and a queue, after the failure's own log write has landed
        # (the writer runs beside the send loop; the in-process moto would let two writes of one item race,
        # which DynamoDB does not). A status that comes first is tests/e2e/test_status_race.py's case.
        deadline = time.monotonic() + 5
        while not list(NotificationLog.query("job_t", NotificationLog.participant_id == stalled.id)):
            assert time.monotonic() < deadline, "the failure was never logged"
            time.sleep(0.01)
        apply_status(
            StatusUpdate(
                id="wamid.taken-by-meta",
                status="delivered",
                biz_opaque_callback_data=f"job_t|{stalled.id}",
            )
        )

    sender = Sender(
        settings,
        RecordingQueues(),
        graph_client(graph),
        TokenBucket(1000),
        sleep=status_arrives,
        clock=no_sleep.clock,
    )
    job = ProductUpdateJob(
        job_id="job_t",
        kind=JobKind.PRODUCT_UPDATE,
        trip_id="jpn25",
        participants=recipients,
        message="Produk baru",
    )
    sender.send_chunk(job, Deadline(lambda: 60_000))
    assert requests.count(stalled.phone.lstrip("+")) == 1  # not sent twice
    assert len(requests) == 3  # three recipients, each sent once
    entry = NotificationLog.get("job_t", stalled.id)
    assert (entry.status, entry.provider_msg_id) == ("delivered", "wamid.taken-by-meta")
    assert no_sleep.waits == [5.0]  # the wait for its status before deciding (AMBIGUOUS_WAIT_SECONDS)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sender_one_at_a_time(settings, graph, on_send, clock):
    """A sender that sends one message at a time (in the chunk's order), calling ``on_send(to)`` as each
    reaches the WhatsApp API."""

    def handler(request):
        response = graph.handler(request)
        on_send(graph.sent_to()[-1])
        return response

    one_at_a_time = settings.model_copy(update={"send_concurrency": 1})
    queues = RecordingQueues()
    return Sender(
        one_at_a_time, queues, graph_client(handler), TokenBucket(10_000), sleep=lambda s: None, clock=clock
    )


@pytest.mark.parametrize("seconds_per_send", [1.1, 0.0])
def test_a_stop_while_a_chunk_sends_holds_within_a_second(settings, graph, seconds_per_send):
    """r4 sends STOP while the chunk is sending to r1. With a second passing per send (a slow chunk) the next
    send re-reads the memberships and r4 is skipped; within the same second (0 s per send) the snapshot is
    not re-read, and r4, whose STOP is less than a second old, still gets it: the promise is one second."""
    recipients = seed(6)
    clock = _Clock()

    def on_send(to: str) -> None:
        if to == recipients[1].phone.lstrip("+"):
            Participant("jpn25", recipients[4].id).update(
                actions=[Participant.status.set(ParticipantStatus.UNSUBSCRIBED)]
            )
        clock.now += seconds_per_send

    sender = _sender_one_at_a_time(settings, graph, on_send, clock)
    sender.send_chunk(product_job(recipients), Deadline(None))
    log = log_of("job_1")
    stopped = recipients[4]
    if seconds_per_send:
        assert (log[stopped.id].status, log[stopped.id].reason) == ("skipped", "unsubscribed")
        assert stopped.phone.lstrip("+") not in graph.sent_to()
        assert len(graph.sent_to()) == 5
    else:
        assert log[stopped.id].status == "sent"
        assert len(graph.sent_to()) == 6
    assert all(log[r.id].status == "sent" for r in recipients if r is not stopped)


def test_a_slow_log_holds_up_no_send_and_every_outcome_is_written(sender, graph, monkeypatch):
    """Outcomes are written as they come on the log pool (8 threads); with every write slow, more outcomes
    than that are waiting at once: the chunk still ends, with every recipient logged once. (Written through a
    helper that itself waited on the same pool, 8 slow writes took every thread and the chunk hung.)"""
    import threading
    import time as real_time

    from jastipin.data import notifications_log

    record = notifications_log.record

    def slow_record(*args, **kwargs):
        real_time.sleep(0.05)
        return record(*args, **kwargs)

    monkeypatch.setattr(notifications_log, "record", slow_record)
    recipients = seed(40)
    done = threading.Event()
    result = []

    def send() -> None:
        result.append(sender.send_chunk(product_job(recipients), Deadline(None)))
        done.set()

    threading.Thread(target=send, daemon=True).start()
    assert done.wait(30), "the chunk did not end"
    assert result[0].count("sent") == 40
    assert {e.status for e in log_of("job_1").values()} == {"sent"} and len(log_of("job_1")) == 40


def test_a_chunk_queued_before_a_user_id_changed_reaches_the_new_id(sender, graph):
    """A username user (no phone) is in a chunk that waits in the queue while WhatsApp replaces their user id,
    twice. The chunk is sent to the newest id, checked against the membership that moved with them, and
    logged under their new participant id; another user of the chunk is untouched."""
    from jastipin.inbound.identity import Identity, change_user_id

    Trip("jpn25", title="Jastip Jepang", owner_phone="+6281234567890").save()
    old = Identity(phone=None, user_id="ID.old")
    Participant("jpn25", old.participant_id, wa_key=old.wa_key, user_id="ID.old", name="Ana").save()
    Contact(old.wa_key, participant_id=old.participant_id, user_id="ID.old", last_inbound_at=utcnow()).save()
    other = seed(1)[0]
    job = product_job([Recipient(id=old.participant_id, user_id="ID.old", name="Ana"), other])

    change_user_id(old, "ID.mid")
    change_user_id(Identity(phone=None, user_id="ID.mid"), "ID.new")
    sender.send_chunk(job, Deadline(None))

    assert sorted(graph.sent_to()) == sorted(["ID.new", other.phone.lstrip("+")])
    newest = Identity(phone=None, user_id="ID.new").participant_id
    log = log_of("job_1")
    assert (log[newest].status, log[other.id].status) == ("sent", "sent")
    assert old.participant_id not in log
    sender.send_chunk(job, Deadline(None))  # the chunk delivered again: nobody is sent it twice
    assert len(graph.sent_to()) == 2


def test_the_deadline_is_read_on_its_own_clock():
    from datetime import UTC, datetime

    from jastipin.outbound.delivery import SAFETY_MARGIN_SECONDS

    now, remaining_ms = [1_000.0], [60_000]
    deadline = Deadline(lambda: remaining_ms[0], clock=lambda: now[0])
    assert deadline.latest_start(10) == 1_000.0 + 60 - 10 - SAFETY_MARGIN_SECONDS
    assert deadline.utcnow() == datetime.fromtimestamp(1_000.0, UTC)
    now[0], remaining_ms[0] = 1_030.0, 30_000  # half a minute on: the same latest start
    assert deadline.latest_start(10) == 1_000.0 + 60 - 10 - SAFETY_MARGIN_SECONDS
    assert deadline.allows(20) and not deadline.allows(30)
    assert Deadline(None, clock=lambda: now[0]).latest_start(10) is None


class _StaleFirstSlot(TokenBucket):
    """A limiter whose first send slot is handed out at 1000.0 and every later one at 2000.0 (epoch)."""

    late_seconds = 0.02

    def __init__(self) -> None:
        super().__init__(10_000)
        self.slots = [1_000.0]
        self.misses = 0

    def acquire_slot(self, deadline: float | None = None) -> float:
        return self.slots.pop(0) if self.slots else 2_000.0

    def missed(self) -> None:
        self.misses += 1


def test_a_send_late_for_its_slot_by_the_deadlines_clock_takes_another(settings, whatsapp_client, graph):
    """Whether a send would leave too late for its slot is judged on the deadline's clock: at 1000.5 the slot
    of 1000.0 is half a second old (another slot is taken), the slot of 2000.0 is not yet due."""
    (recipient,) = seed(1)
    limiter = _StaleFirstSlot()
    sender = Sender(settings, RecordingQueues(), whatsapp_client, limiter)
    sender.send_chunk(product_job([recipient]), Deadline(None, clock=lambda: 1_000.5))
    assert limiter.misses == 1 and limiter.slots == []
    assert graph.sent_to() == [recipient.phone.lstrip("+")] and log_of("job_1")[recipient.id].status == "sent"


def test_the_24_hour_window_is_judged_at_the_time_given(settings):
    """``decide`` reads the window at ``now``: a contact who wrote an hour ago is inside it now, and outside
    it a day later (a product update without a window template is then skipped)."""
    from jastipin.outbound.recipients import decide

    recipients = seed(1, inbound_hours_ago=1.0)
    job = product_job(recipients)
    skipped, sendable, window_open = decide(job, recipients, {}, now=utcnow)
    assert (skipped, [r.id for r in sendable], window_open) == ([], [recipients[0].id], {recipients[0].id})
    skipped, sendable, window_open = decide(job, recipients, {}, now=lambda: utcnow() + timedelta(hours=24))
    assert [(o.recipient.id, o.reason) for o in skipped] == [(recipients[0].id, "window_closed")]
    assert sendable == [] and window_open == set()

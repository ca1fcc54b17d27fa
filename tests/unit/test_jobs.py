"""Queue message bodies (``outbound.jobs``): one model per kind, and the wire format they share. Jobs wait in
queues and DLQs across a deploy, so a body written before the kinds had their own models must still be read,
and be written back the same."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from jastipin.outbound.jobs import (
    AutoReplyJob,
    BroadcastJob,
    Job,
    ProductUpdateJob,
    ProofJob,
    Recipient,
    parse_job,
)

# Bodies exactly as ``Job.to_body()`` wrote them when one model held every kind (a fan-out with the trip's
# window template, a fan-out continuation, a chunk, an auto reply to a username user, a broadcast
# continuation, a proof by media id).
TODAYS_BODIES = [
    (
        ProductUpdateJob,
        '{"jobId":"job_01","kind":"product_update","tripId":"jpn25","productId":"prd_01",'
        '"template":"product_update","message":"Ada produk baru: Action Figure A - Rp450.000",'
        '"templateRef":{"name":"product_update","language":"id","parameters":["Jastip Jepang",'
        '"Action Figure A"],"category":"utility"},"alwaysInWindow":false}',
    ),
    (
        ProductUpdateJob,
        '{"jobId":"job_01","kind":"product_update","tripId":"jpn25","productId":"prd_01",'
        '"template":"product_update","message":"Ada produk baru: Action Figure A - Rp450.000",'
        '"alwaysInWindow":false,"cursor":"p_380f83950b4fde49","nextChunk":10}',
    ),
    (
        ProductUpdateJob,
        '{"jobId":"job_01","kind":"product_update","tripId":"jpn25","productId":"prd_01",'
        '"participants":[{"id":"p_380f83950b4fde49","phone":"+6281311112222","name":"Ani"}],'
        '"template":"product_update","message":"Ada produk baru: Action Figure A - Rp450.000",'
        '"alwaysInWindow":false}',
    ),
    (
        AutoReplyJob,
        '{"jobId":"rpl_0123456789abcdef","kind":"auto_reply","tripId":"jpn25",'
        '"participants":[{"id":"p_1111111111111111","userId":"ID.ani","name":"Ani"}],'
        '"template":"auto_reply","message":"Kamu sudah bergabung","alwaysInWindow":true}',
    ),
    (
        BroadcastJob,
        '{"jobId":"bc_5a6794fab411b928","kind":"broadcast","tripId":"jpn25","template":"trip_reminder",'
        '"templateRef":{"name":"trip_reminder","language":"id","parameters":["Jastip Jepang Mei"],'
        '"category":"marketing"},"audience":{"activeSince":"2026-05-25T03:00:00Z","marketing":true},'
        '"alwaysInWindow":false,"cursor":"p_380f83950b4fde49","nextChunk":3}',
    ),
    (
        ProofJob,
        '{"jobId":"prf_21769bf8d61cb1d1","kind":"proof","tripId":"jpn25",'
        '"participants":[{"id":"p_62397bbd6a8c9ae5","phone":"+6281234567890"}],"template":"proof",'
        '"templateRef":{"name":"proof_received","language":"id","parameters":["Ani","ORD-001"],'
        '"category":"utility","headerImageId":"1234567890"},"mediaId":"1234567890",'
        '"caption":"Bukti dari Ani untuk pesanan ORD-001: Transfer","alwaysInWindow":false}',
    ),
]


@pytest.mark.parametrize(("kind", "body"), TODAYS_BODIES)
def test_bodies_in_the_shape_written_before_still_parse_and_are_written_the_same(kind, body):
    job = parse_job(body)
    assert type(job) is kind
    assert job.to_body() == body  # field for field, in the same order


def test_a_body_without_always_in_window_still_parses():
    """Bodies written before ``alwaysInWindow`` existed (the sample notifications event)."""
    body = json.loads(TODAYS_BODIES[2][1])
    del body["alwaysInWindow"]
    job = parse_job(json.dumps(body))
    assert isinstance(job, ProductUpdateJob) and job.always_in_window is False


def _changed(index: int, **fields: object) -> str:
    body = json.loads(TODAYS_BODIES[index][1])
    for name, value in fields.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return json.dumps(body)


@pytest.mark.parametrize(
    "body",
    [
        _changed(2, kind="sms"),  # an unknown kind
        _changed(2, kind=None),  # no kind
        _changed(2, audience={"activeSince": "2026-05-25T03:00:00Z"}),  # a broadcast's
        _changed(2, imageUrl="https://example.com/p.jpg"),  # a proof's
        _changed(2, alwaysInWindow=True),  # an auto reply's
        _changed(3, templateRef={"name": "product_update"}),  # an auto reply has no template
        _changed(4, message="Halo"),  # a broadcast sends its template only
        _changed(4, productId="prd_01"),  # a product update's
        _changed(5, message="Halo"),
        _changed(5, imageUrl="https://example.com/p.jpg"),  # a proof is a link xor a media id
        _changed(5, mediaId=None),
        _changed(4, templateRef=None),  # what a kind always has is required
        _changed(0, message=None),
        _changed(3, participants=None),
    ],
)
def test_an_unknown_kind_or_a_field_another_kind_owns_is_refused(body):
    with pytest.raises(ValidationError):
        parse_job(body)


def test_chunks_and_continuations_keep_their_kind():
    job: Job = parse_job(TODAYS_BODIES[4][1])
    assert isinstance(job, BroadcastJob) and job.is_fan_out and job.needs_marketing_consent
    chunk = job.chunk([Recipient(id="p_1", phone="+6281311112222")])
    assert isinstance(chunk, BroadcastJob) and not chunk.is_fan_out and chunk.cursor is None
    assert parse_job(chunk.to_body()) == chunk
    more = job.continuation("p_9", 4)
    assert isinstance(more, BroadcastJob) and (more.cursor, more.next_chunk) == ("p_9", 4)


def test_what_each_kind_asks_of_its_recipients():
    product, template_product, reply, broadcast, proof = (
        parse_job(TODAYS_BODIES[i][1]) for i in (2, 0, 3, 4, 5)
    )
    assert (product.needs_membership, product.needs_open_window) == (True, True)
    assert template_product.needs_open_window is False  # the trip's window template outside it
    assert (reply.needs_membership, reply.needs_open_window, reply.always_in_window) == (False, False, True)
    assert (broadcast.needs_membership, broadcast.needs_open_window) == (True, False)
    assert (proof.needs_membership, proof.needs_open_window) == (False, False)
    assert [j.needs_marketing_consent for j in (product, reply, proof)] == [False, False, False]
    utility = parse_job(_changed(4, templateRef={"name": "trip_update", "category": "utility"}))
    assert broadcast.needs_marketing_consent and not utility.needs_marketing_consent

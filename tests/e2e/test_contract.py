"""docs/openapi.yaml against the running system: schemathesis generates requests from the description (valid
ones and invalid ones: wrong types, missing fields, values out of range, no token) and sends them to the local
runtime's HTTP API. Every answer must be a status the description lists for that route, with the documented
content type, headers and body shape, never a 5xx; invalid requests must be refused and a missing token must
be a 401.

Path parameters are drawn by the fuzzer (unknown trips: 404) and half the time replaced by trips created here,
so that valid bodies reach the code behind the trip lookup; the member seeded in the first trip is the proofs
example of the description, so the examples phase submits a proof that is queued.

Checks left out, and why:
- ``positive_data_acceptance``: valid by the schema is not enough to be accepted: the template must be
  registered and given its number of parameters, the participant must be a member, ``confirm`` must repeat
  the queue's name. Those are documented 422s that JSON Schema cannot express.
- ``unsupported_method``: a method no route declares is answered by API Gateway (and the local runtime)
  with 404, not 405.
- ``use_after_free``, ``ensure_resource_availability``, ``object_level_authorization``: need links between
  operations or several identities; the description has neither."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st

from localrun.project import LOCAL_SECRETS
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port
from tests.e2e.helpers import API_AUTH, create_trip, seed_participants, upload_product, wait_for_log

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
TRIPS = ("jpn25", "kor26")  # jpn25 is the trip of the description's examples (and of the README)
MEMBER = 11112222  # helpers.phone(MEMBER) is +6281311112222, Ani of the README
EXAMPLES_PER_OPERATION = 40  # the fuzzing phase; the examples and coverage phases add their own cases

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20250601,
        "suppress-health-check": ["too_slow"],  # generation time varies on a loaded 2-core machine
        # deterministic: the same cases on every run (CI); no example database written to disk
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True, "database": "none"},
        "operations": [
            {
                # each request these accept ends with a 1-second SQS long poll that finds nothing more
                "include-path-regex": "^/admin/api/queues/\\{queue\\}/(dlq/redrive|dlq/purge|purge)$",
                "generation": {"max-examples": 10},
            }
        ],
        "phases": {
            "stateful": {"enabled": False},
            # TRACE and QUERY are left out: the local runtime's http.server answers them 501 before any route
            "coverage": {"unexpected-methods": ["get", "put", "post", "delete", "options", "patch"]},
        },
        "auth": {
            "openapi": {
                "apiToken": {"bearer": LOCAL_SECRETS["API_TOKEN"]},
                "adminToken": {"bearer": LOCAL_SECRETS["ADMIN_TOKEN"]},
            }
        },
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "ignored_auth": {"enabled": True},
            "missing_required_header": {"enabled": True},
        },
    }
)
schema = schemathesis.openapi.from_path(DOC, config=CONFIG)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half of the drawn trip ids become trips that exist."""
    if "tripId" not in (path_parameters or {}):
        return st.just(path_parameters)
    return st.sampled_from([None, *TRIPS]).map(
        lambda trip: path_parameters if trip is None else {**path_parameters, "tripId": trip}
    )


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    """Two trips; in the first, a member who got a product update, a broadcast and a proof went to the owner
    (so the ledger and the outcomes have entries); a DLQ holding a job and a body that is not one. Then the
    pollers stop: the fuzzing is of the HTTP API only."""
    config = RuntimeConfig(
        api_port=free_port(), sandbox_port=free_port(), moto_port=free_port(), status_callbacks=False
    )
    with LocalRuntime(config) as rt:
        for trip in TRIPS:
            create_trip(rt, trip)
        (member,) = seed_participants(rt, TRIPS[0], 1, start=MEMBER)
        assert member == "p_380f83950b4fde49"  # the participant_id of the proofs example
        api = f"{rt.api.url}/api/trips/{TRIPS[0]}"  # type: ignore[union-attr]
        broadcast = {"template": "trip_reminder", "parameters": ["Jastip Jepang"]}
        proof = {"participant_id": member, "order_ref": "ORD-001", "media_id": "1234"}
        jobs = [
            upload_product(rt, TRIPS[0]),
            httpx.post(f"{api}/broadcasts", json=broadcast, headers=API_AUTH).json()["job_id"],
            httpx.post(f"{api}/proofs", json=proof, headers=API_AUTH).json()["job_id"],
        ]
        for job in jobs:
            wait_for_log(rt, job, 1)
        rt.stop_pollers()
        sqs = rt.client("sqs")
        for body in ('{"jobId": "job_contract", "kind": "product_update", "tripId": "jpn25"}', "not a job"):
            sqs.send_message(QueueUrl=rt.queue_url("NotificationsDLQ"), MessageBody=body)
        yield rt


@schema.parametrize()
def test_every_answer_is_documented(case, runtime: LocalRuntime) -> None:
    case.call_and_validate(base_url=runtime.api.url)  # type: ignore[union-attr]

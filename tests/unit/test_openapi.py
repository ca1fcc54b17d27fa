"""docs/openapi.yaml is generated from the routes of the API functions (``localrun.openapi``): the committed
document is exactly what the code generates, it is a valid OpenAPI document, and it describes exactly the
HTTP API routes template.yaml gives the backend and admin functions, each with its token and the errors every
route of its kind can give. (tests/e2e/test_contract.py checks the running API's answers against it.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from openapi_spec_validator import validate

from jastipin.data.models import LogStatus
from jastipin.operations.dlq import ADMIN_QUEUES
from jastipin.operations.views import OutcomeStatus
from localrun import openapi
from localrun.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
DESCRIBED_FUNCTIONS = ("EnqueueFunction", "AdminFunction")
# the admin HTML page and the documents themselves
NOT_DESCRIBED = {"GET /admin/queues", "GET /api/openapi.json", "GET /admin/api/openapi.json"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return openapi.generate()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(openapi.DOC.read_text(encoding="utf-8"))


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"POST /api/trips": operation, ...}."""
    return {
        f"{method.upper()} {path}": operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def test_the_committed_document_is_what_the_code_generates(generated: dict[str, Any]) -> None:
    committed = openapi.DOC.read_text(encoding="utf-8")
    assert committed == openapi.render(generated), "stale: run python -m localrun.openapi --write"
    assert openapi.main(["--check"]) == 0


def test_is_a_valid_openapi_document(doc: dict[str, Any]) -> None:
    validate(doc)


def test_describes_exactly_the_template_routes_of_the_backend_and_admin_apis(doc: dict[str, Any]) -> None:
    resources = load_template(ROOT / "template.yaml")["Resources"]
    routes = {
        f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}"
        for function in DESCRIBED_FUNCTIONS
        for event in resources[function]["Properties"]["Events"].values()
        if event["Type"] == "HttpApi"
    }
    assert routes >= NOT_DESCRIBED  # still routes of their functions
    assert set(operations(doc)) == routes - NOT_DESCRIBED


def test_every_operation_names_its_token_and_the_answers_without_it(doc: dict[str, Any]) -> None:
    for route, operation in operations(doc).items():
        scheme = "adminToken" if " /admin/" in route else "apiToken"
        assert operation["security"] == [{scheme: []}], route
        assert {"401", "403"} <= set(operation["responses"]), route
        if "requestBody" in operation:  # not JSON, too large, not valid
            assert {"400", "413", "422"} <= set(operation["responses"]), route
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "422" in operation["responses"], route
        path_parameters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        named = {part[1:-1] for part in route.split("/") if part.startswith("{")}
        assert named == path_parameters, route
        if named:
            assert "404" in operation["responses"], route
        for status, answer in operation["responses"].items():
            (schema,) = (c["schema"] for c in answer["content"].values())
            if status.startswith(("4", "5")):  # one error body (or API Gateway's own 404 / 413)
                assert schema["$ref"].rsplit("/", 1)[1] in {"Error", "ErrorOrGateway"}, (route, status)


def test_request_bodies_refuse_unknown_fields_and_carry_an_example(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for route, operation in operations(doc).items():
        if "requestBody" not in operation:
            continue
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = schemas[ref.rsplit("/", 1)[1]]
        assert body["additionalProperties"] is False, route  # extra="forbid": an unknown field is a 422
        assert body.get("examples"), route  # the contract test's examples phase sends it


def test_enums_match_the_code() -> None:
    assert list(get_args(OutcomeStatus)) == ["", *(s.value for s in LogStatus)]  # empty: any status
    assert set(ADMIN_QUEUES) == {"notifications", "broadcast", "proof_notify", "inbound"}

"""docs/openapi.yaml cannot drift: it is a valid OpenAPI document, it describes exactly the HTTP API routes
template.yaml gives the backend and admin functions, and its request schemas follow the pydantic models the
handlers parse requests with. (tests/e2e/test_contract.py checks the answers against it.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate
from pydantic import BaseModel

from jastipin.broadcasts import BroadcastRequest, EstimateQuery
from jastipin.data.models import BroadcastStatus, LogStatus
from jastipin.operations.dlq import ADMIN_QUEUES
from jastipin.operations.views import PurgeRequest, RedriveRequest
from jastipin.proofs import ProofRequest
from jastipin.templates import TemplateCategory
from jastipin.trips import CreateTripRequest, NewProductRequest
from localrun.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
DESCRIBED_FUNCTIONS = ("EnqueueFunction", "AdminFunction")
NOT_DESCRIBED = {"GET /admin/queues"}  # the admin HTML page
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "CreateTripRequest": CreateTripRequest,
    "NewProductRequest": NewProductRequest,
    "BroadcastRequest": BroadcastRequest,
    "ProofRequest": ProofRequest,
    "RedriveRequest": RedriveRequest,
    "PurgeRequest": PurgeRequest,
}

ENUMS: dict[str, list[str]] = {  # the enums the models refer to (e.g. WindowPolicy), by name
    name: spec["enum"]
    for model in REQUEST_MODELS.values()
    for name, spec in model.model_json_schema().get("$defs", {}).items()
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"POST /api/trips": operation, ...}, each with its path item's parameters added."""
    found = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                shared = item.get("parameters", [])
                found[f"{method.upper()} {path}"] = {
                    **operation,
                    "parameters": shared + operation.get("parameters", []),
                }
    return found


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, section, name = node["$ref"].split("/")
        node = {**doc["components"][section][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


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
    assert routes >= NOT_DESCRIBED  # the page is still a route of the admin function
    assert set(operations(doc)) == routes - NOT_DESCRIBED


def test_every_operation_names_its_token_and_the_answers_without_it(doc: dict[str, Any]) -> None:
    for route, operation in operations(doc).items():
        scheme = "adminToken" if " /admin/" in route else "apiToken"
        assert operation["security"] == [{scheme: []}], route
        assert {"401", "403"} <= set(operation["responses"]), route
        if "requestBody" in operation:  # parse_body: not JSON, too large, not valid
            assert {"400", "413", "422"} <= set(operation["responses"]), route
        path_parameters = {resolve(doc, p)["name"] for p in operation["parameters"]}
        named = {part[1:-1] for part in route.split("/") if part.startswith("{")}
        assert named <= path_parameters, route
        if named:
            assert "404" in operation["responses"], route


def field_schema(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A pydantic JSON schema property without its ``None`` branch, and whether it takes ``null``."""
    branches = spec.get("anyOf", [spec])
    kept = [b for b in branches if b.get("type") != "null"]
    assert len(kept) == 1, spec
    return {**spec, **kept[0]}, len(kept) < len(branches)


def assert_within(doc: dict[str, Any], where: str, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """What the description allows, the model accepts: its bounds are the model's or tighter."""
    ours = resolve(doc, ours)
    types = ours["type"] if isinstance(ours["type"], list) else [ours["type"]]
    theirs, nullable = field_schema(theirs)
    if "$ref" in theirs:  # a pydantic enum
        *_, name = theirs["$ref"].split("/")
        assert ours["enum"] == ENUMS[name], where
    else:
        assert theirs["type"] in types, where
    assert ("null" in types) == nullable, where
    for key in ("minLength", "minimum", "minItems"):
        if key in theirs:
            assert ours.get(key, -1) >= theirs[key], f"{where}: {key}"
    for key in ("maxLength", "maximum", "maxItems"):
        if key in theirs:
            assert ours.get(key, theirs[key] + 1) <= theirs[key], f"{where}: {key}"
    if "pattern" in theirs:
        assert ours.get("pattern") == theirs["pattern"], f"{where}: pattern"
    if "default" in theirs:
        assert ours.get("default") == theirs["default"], f"{where}: default"
    if "items" in theirs:
        assert_within(doc, f"{where}[]", ours["items"], theirs["items"])


@pytest.mark.parametrize("name", REQUEST_MODELS)
def test_request_bodies_follow_the_pydantic_models(doc: dict[str, Any], name: str) -> None:
    model = REQUEST_MODELS[name].model_json_schema()
    documented = doc["components"]["schemas"][name]
    assert documented["additionalProperties"] is False  # extra="forbid": unknown fields are a 422
    assert set(documented["properties"]) == set(model["properties"])
    assert set(documented.get("required", [])) == set(model.get("required", []))
    for field, spec in model["properties"].items():
        assert_within(doc, f"{name}.{field}", documented["properties"][field], spec)


def test_estimate_query_follows_its_pydantic_model(doc: dict[str, Any]) -> None:
    model = EstimateQuery.model_json_schema()
    operation = operations(doc)["GET /api/trips/{tripId}/broadcasts/estimate"]
    query = {p["name"]: p for p in (resolve(doc, p) for p in operation["parameters"]) if p["in"] == "query"}
    assert set(query) == set(model["properties"])
    assert {n for n, p in query.items() if p.get("required")} == set(model["required"])
    for field, spec in model["properties"].items():
        assert_within(doc, f"estimate.{field}", query[field]["schema"], spec)


def test_enums_match_the_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["QueueName"]["enum"] == list(ADMIN_QUEUES)
    assert schemas["LogStatus"]["enum"] == [s.value for s in LogStatus]
    assert schemas["TemplateCategory"]["enum"] == [c.value for c in TemplateCategory]
    assert schemas["BroadcastFields"]["properties"]["status"]["enum"] == [s.value for s in BroadcastStatus]
    assert list(schemas["StatusCounts"]["properties"]) == [s.value for s in LogStatus]
    status = next(
        p
        for p in operations(doc)["GET /admin/api/trips/{tripId}/outcomes"]["parameters"]
        if p.get("name") == "status"
    )
    assert status["schema"]["enum"] == ["", *(s.value for s in LogStatus)]  # empty: any status

"""Invariants of template.yaml and of the sample events in events/ (no AWS, no Docker)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jastipin.settings import FUNCTION_SETTINGS, SECRET_NAMES
from localrun.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
BIN = Path(sys.executable).parent
TOOL_ENV = {**os.environ, "AWS_DEFAULT_REGION": "ap-southeast-3", "SAM_CLI_TELEMETRY": "0"}

WEBHOOK_APP_SECRET = b"local-app-secret"
EXPECTED_ROUTES = {
    "POST /api/trips": "EnqueueFunction",
    "POST /api/trips/{tripId}/products": "EnqueueFunction",
    "POST /api/trips/{tripId}/broadcasts": "EnqueueFunction",
    "GET /api/trips/{tripId}/broadcasts/estimate": "EnqueueFunction",
    "POST /api/trips/{tripId}/proofs": "EnqueueFunction",
    "GET /api/trips/{tripId}/ledger": "EnqueueFunction",
    "GET /api/openapi.json": "EnqueueFunction",  # each API function serves its part of docs/openapi.yaml
    # Kept for Meta apps still pointed at the HTTP API (and served locally); Meta's callback is the webhook's
    # function URL (output WebhookUrl), see test_meta_calls_the_webhook_through_its_function_url.
    "GET /api/webhooks/whatsapp": "WebhookFunction",
    "POST /api/webhooks/whatsapp": "WebhookFunction",
    "GET /admin/queues": "AdminFunction",
    "GET /admin/api/queues": "AdminFunction",
    "GET /admin/api/queues/{queue}/dlq": "AdminFunction",
    "POST /admin/api/queues/{queue}/dlq/redrive": "AdminFunction",
    "POST /admin/api/queues/{queue}/dlq/purge": "AdminFunction",
    "POST /admin/api/queues/{queue}/purge": "AdminFunction",
    "GET /admin/api/trips/{tripId}/outcomes": "AdminFunction",
    "GET /admin/api/openapi.json": "AdminFunction",
}
MAIN_QUEUES = {"NotificationsQueue", "BroadcastQueue", "ProofNotifyQueue"}  # the sender's job queues
QUEUES_WITH_DLQ = MAIN_QUEUES | {"InboundQueue"}  # plus the webhook's inbound messages
GLOBAL_ENV = {
    "SECRETS_SSM_PREFIX",
    "SENTRY_DSN",
    "AWS_ENDPOINT_URL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
# Read by the SDKs and Powertools, not by the functions' settings.
NOT_SETTINGS = {
    "AWS_ENDPOINT_URL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
# A table a function's settings name is a table its policies open (Read or Crud), and the other way round.
TABLE_OF_VARIABLE = {
    "TRIPS_TABLE": "TripsTable",
    "PRODUCTS_TABLE": "ProductsTable",
    "PARTICIPANTS_TABLE": "ParticipantsTable",
    "CONTACTS_TABLE": "ContactsTable",
    "NOTIFICATIONS_LOG_TABLE": "NotificationsLogTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "RATE_LIMIT_TABLE": "RateLimitTable",
    "BROADCASTS_TABLE": "BroadcastsTable",
    "JOBS_TABLE": "JobsTable",
    "AUDIENCE_TABLE": "AudienceTable",
}
# SAM policy templates the functions may use; anything else (inline statements, managed ARNs) is a finding.
ALLOWED_POLICY_TEMPLATES = {
    "DynamoDBCrudPolicy",
    "DynamoDBReadPolicy",
    "SQSSendMessagePolicy",
    "SQSPollerPolicy",
    "SSMParameterReadPolicy",
    "SSMParameterWithSlashPrefixReadPolicy",
    "CloudWatchPutMetricPolicy",
}


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def of_type(resources: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in resources.items() if res["Type"] == rtype}


def function_prop(template: dict[str, Any], name: str, prop: str) -> Any:
    """A function property, falling back to Globals.Function as SAM does."""
    props = template["Resources"][name]["Properties"]
    return props.get(prop, template.get("Globals", {}).get("Function", {}).get(prop))


def events_of_type(resources: dict[str, Any], event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(function, event name, event properties) for every event of that type."""
    found = []
    for fn_name, fn in of_type(resources, "AWS::Serverless::Function").items():
        for ev_name, ev in fn["Properties"].get("Events", {}).items():
            if ev["Type"] == event_type:
                found.append((fn_name, ev_name, ev["Properties"]))
    return found


def template_routes(resources: dict[str, Any]) -> dict[str, str]:
    routes: dict[str, str] = {}
    for fn_name, _, props in events_of_type(resources, "HttpApi"):
        route = f"{props['Method'].upper()} {props['Path']}"
        assert route not in routes, f"route {route} declared twice"
        routes[route] = fn_name
    return routes


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def all_event_files() -> list[str]:
    return sorted(p.name for p in EVENTS.glob("*.json") if p.name != "manifest.json")


def ref_target(value: Any) -> str:
    """Logical id named by {"Ref": X} or {"Fn::GetAtt": [X, attr]}."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0]


# ---------------------------------------------------------------- queues and event sources


def test_every_main_queue_has_a_dlq_with_three_receives(resources: dict[str, Any]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    with_redrive = {name for name, q in queues.items() if "RedrivePolicy" in q["Properties"]}
    assert with_redrive == QUEUES_WITH_DLQ
    dlqs = set(queues) - QUEUES_WITH_DLQ
    targets = set()
    for name in QUEUES_WITH_DLQ:
        props = queues[name]["Properties"]
        redrive = props["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == 3, name
        dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
        assert dlq[1] == "Arn" and dlq[0] in dlqs, name
        targets.add(dlq[0])
        dlq_props = queues[dlq[0]]["Properties"]
        # A FIFO queue's DLQ must be FIFO; the DLQ must outlive the source's retention.
        assert bool(props.get("FifoQueue")) == bool(dlq_props.get("FifoQueue")), name
        assert dlq_props["MessageRetentionPeriod"] > props.get("MessageRetentionPeriod", 345600), name
    assert targets == dlqs, "each queue needs its own DLQ"


def test_visibility_timeout_is_at_least_six_sender_timeouts(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    sender_timeout = function_prop(template, "SenderFunction", "Timeout")
    for name in MAIN_QUEUES:
        assert resources[name]["Properties"]["VisibilityTimeout"] >= 6 * sender_timeout, name
    inbound_timeout = function_prop(template, "InboundFunction", "Timeout")
    assert resources["InboundQueue"]["Properties"]["VisibilityTimeout"] >= 6 * inbound_timeout


def test_queues_are_encrypted(resources: dict[str, Any]) -> None:
    for name, queue in of_type(resources, "AWS::SQS::Queue").items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, name


def test_broadcast_queue_is_fifo_per_trip(resources: dict[str, Any]) -> None:
    props = resources["BroadcastQueue"]["Properties"]
    assert props["FifoQueue"] is True
    assert props["ContentBasedDeduplication"] is False
    assert props["DeduplicationScope"] == "messageGroup"
    assert props["FifoThroughputLimit"] == "perMessageGroupId"


def test_every_sqs_event_source_reports_partial_failures_and_is_capped(resources: dict[str, Any]) -> None:
    sources = events_of_type(resources, "SQS")
    consumed = sorted(ref_target(props["Queue"]) for _, _, props in sources)
    assert consumed == sorted(QUEUES_WITH_DLQ), "each main queue has exactly one consumer"
    assert {fn for fn, _, props in sources if ref_target(props["Queue"]) == "InboundQueue"} == {
        "InboundFunction"
    }
    for fn_name, ev_name, props in sources:
        where = f"{fn_name}.{ev_name}"
        assert "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []), where
        assert 2 <= props["ScalingConfig"]["MaximumConcurrency"] <= 1000, where  # AWS's allowed range
        if resources[ref_target(props["Queue"])]["Properties"].get("FifoQueue"):
            assert "MaximumBatchingWindowInSeconds" not in props, f"{where}: FIFO has no batching window"


def test_sender_reserved_concurrency_covers_its_event_sources(resources: dict[str, Any]) -> None:
    caps = [
        props["ScalingConfig"]["MaximumConcurrency"]
        for fn_name, _, props in events_of_type(resources, "SQS")
        if fn_name == "SenderFunction"
    ]
    reserved = resources["SenderFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert caps and reserved >= sum(caps)


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("table", "attribute"),
    [
        ("NotificationsLogTable", "expires_at"),
        ("IdempotencyTable", "expiration"),
        ("RateLimitTable", "expires_at"),
        ("JobsTable", "expires_at"),
    ],
)
def test_ttl_is_enabled(resources: dict[str, Any], table: str, attribute: str) -> None:
    ttl = resources[table]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": attribute, "Enabled": True}


def test_tables_are_on_demand_and_encrypted(resources: dict[str, Any]) -> None:
    for name, table in of_type(resources, "AWS::DynamoDB::Table").items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", name
        assert props["SSESpecification"] == {"SSEEnabled": True}, name


def test_log_table_indexes(resources: dict[str, Any]) -> None:
    gsis = resources["NotificationsLogTable"]["Properties"]["GlobalSecondaryIndexes"]
    indexes = {gsi["IndexName"]: gsi for gsi in gsis}
    assert set(indexes) == {"by_provider_msg_id", "by_trip_keys"}
    by_wamid = indexes["by_provider_msg_id"]
    assert by_wamid["KeySchema"] == [{"AttributeName": "provider_msg_id", "KeyType": "HASH"}]
    by_trip = indexes["by_trip_keys"]
    assert by_trip["KeySchema"] == [
        {"AttributeName": "trip_id", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    # Status callbacks read only the key, and the trip's readers fetch entries from the table: projecting
    # status into either index would double the write cost of each delivered/read callback.
    for index in (by_wamid, by_trip):
        assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}, index["IndexName"]


def test_log_indexes_match_the_pynamodb_model(resources: dict[str, Any]) -> None:
    from pynamodb.indexes import GlobalSecondaryIndex

    from jastipin.data.models import NotificationLog

    gsis = resources["NotificationsLogTable"]["Properties"]["GlobalSecondaryIndexes"]
    in_template = {g["IndexName"]: g["Projection"]["ProjectionType"] for g in gsis}
    in_model = {
        index.Meta.index_name: index.Meta.projection.projection_type
        for index in vars(NotificationLog).values()
        if isinstance(index, GlobalSecondaryIndex)
    }
    assert in_model == in_template


# ---------------------------------------------------------------- functions, IAM, env


def test_no_policy_grants_full_access(template: dict[str, Any]) -> None:
    assert "FullAccess" not in json.dumps(template)


def test_functions_use_only_sam_policy_templates(resources: dict[str, Any]) -> None:
    for name, fn in of_type(resources, "AWS::Serverless::Function").items():
        for policy in fn["Properties"].get("Policies", []):
            assert isinstance(policy, dict) and len(policy) == 1, f"{name}: {policy}"
            assert set(policy) <= ALLOWED_POLICY_TEMPLATES, f"{name}: {policy}"


def test_admin_function_has_least_privilege(resources: dict[str, Any]) -> None:
    props = resources["AdminFunction"]["Properties"]
    granted: dict[str, set[str]] = {}
    for policy in props["Policies"]:
        ((name, args),) = policy.items()
        target = args.get("QueueName") or args.get("TableName") or args.get("ParameterName")
        granted.setdefault(name, set()).add(json.dumps(target, sort_keys=True))

    def names(*logical_ids: str, attribute: str | None = "QueueName") -> set[str]:
        return {
            json.dumps({"Fn::GetAtt": [i, attribute]} if attribute else {"Ref": i}, sort_keys=True)
            for i in logical_ids
        }

    dlqs = set(of_type(resources, "AWS::SQS::Queue")) - QUEUES_WITH_DLQ
    assert set(granted) == {
        "SQSPollerPolicy",
        "SQSSendMessagePolicy",
        "DynamoDBReadPolicy",
        "SSMParameterWithSlashPrefixReadPolicy",
    }
    assert granted["SQSPollerPolicy"] == names(*QUEUES_WITH_DLQ, *dlqs)  # counts, looks, deletes
    assert granted["SQSSendMessagePolicy"] == names(*QUEUES_WITH_DLQ)  # redrive goes to the main queues only
    assert granted["DynamoDBReadPolicy"] == names("NotificationsLogTable", "JobsTable", attribute=None)
    assert granted["SSMParameterWithSlashPrefixReadPolicy"] == {
        json.dumps({"Fn::Sub": "${SecretsSsmPrefix}/admin_token"})
    }
    # no secret in its environment: secrets are read one by one as requests need them
    assert not {name.upper() for name in SECRET_NAMES} & set(props["Environment"]["Variables"])


def test_every_route_exists_with_the_right_function(resources: dict[str, Any]) -> None:
    assert template_routes(resources) == EXPECTED_ROUTES
    for fn_name, ev_name, props in events_of_type(resources, "HttpApi"):
        assert props["ApiId"] == {"Ref": "HttpApi"}, f"{fn_name}.{ev_name}"


def test_meta_calls_the_webhook_through_its_function_url(template: dict[str, Any]) -> None:
    """Function URL requests have no charge of their own (README, Cost): Meta's callback URL is the webhook
    function's URL, public because Meta signs every POST (checked in code) and GET is the token handshake."""
    functions = of_type(template["Resources"], "AWS::Serverless::Function")
    with_url = {name for name, fn in functions.items() if "FunctionUrlConfig" in fn["Properties"]}
    assert with_url == {"WebhookFunction"}
    assert functions["WebhookFunction"]["Properties"]["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert template["Outputs"]["WebhookUrl"]["Value"] == {
        "Fn::Sub": "${WebhookFunctionUrl.FunctionUrl}api/webhooks/whatsapp"
    }


def test_sam_makes_the_function_url_public_and_invokable(template: dict[str, Any]) -> None:
    """SAM's transform (offline) creates the URL and both resource-policy statements that a public function
    URL needs since October 2025: lambda:InvokeFunctionUrl, and lambda:InvokeFunction via the URL only."""
    import copy

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    document = copy.deepcopy(template)
    for resource in document["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in (resource.get("Properties") or {}):
                resource["Properties"][key] = "s3://bucket/key"  # sam build's job; irrelevant here
    resources = transform(document, {}, NoManagedPolicies())["Resources"]
    url = resources["WebhookFunctionUrl"]
    assert url["Type"] == "AWS::Lambda::Url"
    assert url["Properties"] == {"TargetFunctionArn": {"Ref": "WebhookFunction"}, "AuthType": "NONE"}
    grants = {
        (
            r["Properties"]["Action"],
            r["Properties"].get("FunctionUrlAuthType"),
            r["Properties"].get("InvokedViaFunctionUrl"),
        )
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Ref": "WebhookFunction"}
        and r["Properties"]["Principal"] == "*"
    }
    assert grants == {("lambda:InvokeFunctionUrl", "NONE", None), ("lambda:InvokeFunction", None, True)}


def settings_variables(kind: type) -> tuple[set[str], set[str]]:
    """The env vars a settings class reads, and those of them it cannot do without."""
    names, required = set(), set()
    for name, field in kind.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else name
        names.add(alias.upper())
        if field.is_required():
            required.add(alias.upper())
    return names, required


def test_globals_env_vars_are_exact_and_locally_resolvable(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(env) == GLOBAL_ENV  # what every function reads, or the SDKs and Powertools do
    known = set(template["Resources"]) | set(template["Parameters"])
    functions = of_type(template["Resources"], "AWS::Serverless::Function")
    for variables in [env, *(f["Properties"]["Environment"]["Variables"] for f in functions.values())]:
        for name, value in variables.items():
            if isinstance(value, str):
                continue
            assert isinstance(value, dict) and set(value) <= {"Ref", "Fn::GetAtt"}, f"{name}: {value}"
            assert ref_target(value) in known, f"{name}: {value}"


@pytest.mark.parametrize("function", sorted(FUNCTION_SETTINGS))
def test_each_function_gets_exactly_the_variables_its_settings_read(
    template: dict[str, Any], function: str
) -> None:
    functions = of_type(template["Resources"], "AWS::Serverless::Function")
    given = set(template["Globals"]["Function"]["Environment"]["Variables"]) | set(
        functions[function]["Properties"]["Environment"]["Variables"]
    )
    reads, needs = settings_variables(FUNCTION_SETTINGS[function])
    assert given - NOT_SETTINGS <= reads, f"{function} is given what it does not read"
    assert needs <= given, f"{function} is not given what it needs"
    tables = {TABLE_OF_VARIABLE[name] for name in given if name in TABLE_OF_VARIABLE}
    opened = {
        next(iter(policy.values()))["TableName"]["Ref"]
        for policy in functions[function]["Properties"]["Policies"]
        if isinstance(policy, dict) and next(iter(policy)) in ("DynamoDBCrudPolicy", "DynamoDBReadPolicy")
    }
    assert tables == opened, f"{function}: the tables its settings name are the tables its policies open"


def test_dashboard_body_is_valid_json(resources: dict[str, Any]) -> None:
    body = resources["OpsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    known = set(resources) | {"AWS::Region"}
    for ref in re.findall(r"\$\{([^}]+)\}", body):
        assert ref.split(".")[0] in known, ref
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    rows = [row for widget in widgets for row in widget["properties"]["metrics"]]
    metric_names = {item for row in rows for item in row if isinstance(item, str)}
    expected = {"NotificationSent", "NotificationFailed", "NotificationSkipped", "WhatsAppRateLimited"}
    assert expected <= metric_names


def test_every_dlq_has_an_alarm_and_every_alarm_notifies_the_topic(resources: dict[str, Any]) -> None:
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    watched = {
        d["Value"]["Fn::GetAtt"][0]
        for a in alarms.values()
        for d in a["Properties"].get("Dimensions", [])
        if d["Name"] == "QueueName"
    }
    queues = of_type(resources, "AWS::SQS::Queue")
    assert watched == set(queues) - QUEUES_WITH_DLQ
    for name, alarm in alarms.items():
        assert {"Ref": "AlertTopic"} in alarm["Properties"]["AlarmActions"], name


# ---------------------------------------------------------------- sample events


FUNCTION_URL_EVENTS = {"webhook_url_verify.json": "GET", "webhook_url_message.json": "POST"}


def test_there_is_an_event_for_every_route_and_queue(resources: dict[str, Any]) -> None:
    api_routes = {load_event(f).get("routeKey") for f in all_event_files()} - {None, "$default"}
    assert api_routes == set(template_routes(resources))
    url_events = {f for f in all_event_files() if load_event(f).get("routeKey") == "$default"}
    assert url_events == set(
        FUNCTION_URL_EVENTS
    )  # Meta's two calls, as the webhook's function URL sends them
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    for name in all_event_files():
        assert f"events/{name}" in readme, f"{name} missing from events/README.md"


def test_the_manifest_runs_every_event_once_with_the_function_that_takes_it(
    resources: dict[str, Any],
) -> None:
    from localrun.events import load_cases

    cases = load_cases()
    assert sorted(c.file for c in cases) == all_event_files()
    queue_function = {
        props["Queue"]["Fn::GetAtt"][0]: fn_name for fn_name, _, props in events_of_type(resources, "SQS")
    }
    for case in cases:
        event = load_event(case.file)
        if "Records" in event:
            queue = event["Records"][0]["eventSourceARN"].rsplit(":", 1)[1].removesuffix(".fifo")
            assert queue_function[queue] == case.function, case.file
            assert set(case.expect) == {"batchItemFailures"}, case.file
        elif event["routeKey"] == "$default":
            assert case.function == "WebhookFunction", case.file
        else:
            assert template_routes(resources)[event["routeKey"]] == case.function, case.file
            assert "status" in case.expect, case.file


@pytest.mark.parametrize("name", all_event_files())
def test_event_parses_and_matches_the_template(resources: dict[str, Any], name: str) -> None:
    event = load_event(name)
    if "Records" in event:  # SQS
        queues = of_type(resources, "AWS::SQS::Queue")
        for record in event["Records"]:
            assert record["eventSource"] == "aws:sqs"
            queue = record["eventSourceARN"].rsplit(":", 1)[1]
            fifo = queue.endswith(".fifo")
            assert queue.removesuffix(".fifo") in QUEUES_WITH_DLQ, queue
            assert bool(queues[queue.removesuffix(".fifo")]["Properties"].get("FifoQueue")) == fifo
            assert ("MessageGroupId" in record["attributes"]) == fifo
            assert record["attributes"]["ApproximateReceiveCount"] == "1"
            assert (
                hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest() == record["md5OfBody"]
            )
            if queue == "InboundQueue":  # one inbound WhatsApp message, as the webhook queues it
                from jastipin.inbound.queued import InboundWork

                assert InboundWork.model_validate_json(record["body"]).message.text_body
                continue
            job = json.loads(record["body"])
            assert job["tripId"] and job["participants"] and job["kind"]
        return
    assert event["version"] == "2.0"
    if event["routeKey"] == "$default":  # a function URL's event: same format, no route, the URL's own domain
        assert "FunctionUrlConfig" in resources["WebhookFunction"]["Properties"]
        assert event["requestContext"]["routeKey"] == "$default" and "pathParameters" not in event
        assert event["requestContext"]["domainName"] == event["headers"]["host"]
        assert event["headers"]["host"].endswith(".lambda-url.ap-southeast-3.on.aws")
        method, route_path = FUNCTION_URL_EVENTS[name], "/api/webhooks/whatsapp"
    else:
        assert event["routeKey"] in template_routes(resources)
        method, route_path = event["routeKey"].split(" ", 1)
    assert event["requestContext"]["http"]["method"] == method
    assert event["requestContext"]["http"]["path"] == event["rawPath"]
    expected_path = route_path
    for key, value in event.get("pathParameters", {}).items():
        expected_path = expected_path.replace(f"{{{key}}}", value)
    assert event["rawPath"] == expected_path
    assert event["isBase64Encoded"] is False
    if "body" in event:
        json.loads(event["body"])
        assert event["headers"]["content-type"] == "application/json"
    if template_routes(resources).get(event["routeKey"]) == "EnqueueFunction":
        assert event["headers"]["authorization"] == "Bearer local-api-token"
    if event["routeKey"].startswith(("GET /admin/api/", "POST /admin/api/")):
        assert event["headers"]["authorization"] == "Bearer local-admin-token"


@pytest.mark.parametrize("name", ["webhook_message.json", "webhook_url_message.json"])
def test_webhook_event_signature_verifies(name: str) -> None:
    event = load_event(name)
    expected = "sha256=" + hmac.new(WEBHOOK_APP_SECRET, event["body"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(event["headers"]["x-hub-signature-256"], expected)
    message = json.loads(event["body"])["entry"][0]["changes"][0]["value"]["messages"][0]
    assert (message["from"], message["text"]["body"]) == ("6281234567890", "JOIN jpn25")


# ---------------------------------------------------------------- linters


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=TOOL_ENV, capture_output=True, text=True, timeout=300)


def test_sam_validate_lint_is_clean() -> None:
    result = run_tool(str(BIN / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_is_clean() -> None:
    result = run_tool(str(BIN / "cfn-lint"), str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr

"""scripts/sam_invoke.py (``make sam-invoke``): its pure parts, and the whole run end to end with a fake
``sam`` (a script answering from canned responses per event file, which sends WhatsApp messages with the
token it reads from SSM, as the sender does) against a real moto server and a real WhatsApp sandbox. No
Docker."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from localrun.cfn_yaml import load_template
from localrun.events import EventCase, load_cases
from localrun.runtime import free_port
from localrun.sandbox import WhatsAppSandbox
from localrun.stack import LocalStack
from tests.conftest import REGION, ROOT

_spec = importlib.util.spec_from_file_location("sam_invoke", ROOT / "scripts" / "sam_invoke.py")
assert _spec and _spec.loader
sam_invoke = importlib.util.module_from_spec(_spec)
sys.modules["sam_invoke"] = sam_invoke
_spec.loader.exec_module(sam_invoke)

PHONE_NUMBER_ID = "000000000000000"  # the template's WhatsAppPhoneNumberId default
SECRETS = {
    "/jastipin/dev/wa_access_token": "local-wa-token",
    "/jastipin/dev/wa_app_secret": "local-app-secret",
    "/jastipin/dev/wa_verify_token": "local-verify-token",
    "/jastipin/dev/api_token": "local-api-token",
    "/jastipin/dev/admin_token": "local-admin-token",
}


def case(file: str) -> EventCase:
    return next(c for c in load_cases() if c.file == file)


# -- pure functions ------------------------------------------------------------------------------------------
def test_command_line_for_a_case() -> None:
    overrides = sam_invoke.parameter_overrides(
        "http://127.0.0.1:5001", "http://127.0.0.1:8900", "host.docker.internal", "/jastipin/dev"
    )
    command = sam_invoke.invoke_command(
        case("create_trip.json"), sam=".venv/bin/sam", overrides=overrides, env_vars="/tmp/env.json"
    )
    assert command == [
        ".venv/bin/sam",
        "local",
        "invoke",
        "EnqueueFunction",
        "-e",
        "events/create_trip.json",
        "--template",
        ".aws-sam/build/template.yaml",
        "--skip-pull-image",
        "--region",
        "ap-southeast-3",
        "--parameter-overrides",
        "AwsEndpointUrl=http://host.docker.internal:5001",
        "WhatsAppApiBaseUrl=http://host.docker.internal:8900",
        "SecretsSsmPrefix=/jastipin/dev",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--env-vars",
        "/tmp/env.json",
    ]


def test_command_line_with_an_ip_as_docker_host_has_no_add_host() -> None:
    overrides = sam_invoke.parameter_overrides(
        "http://127.0.0.1:5002/", "http://localhost:8901", "172.17.0.1", "/jastipin/test/"
    )
    assert overrides == [
        "AwsEndpointUrl=http://172.17.0.1:5002",
        "WhatsAppApiBaseUrl=http://172.17.0.1:8901",
        "SecretsSsmPrefix=/jastipin/test",
    ]
    command = sam_invoke.invoke_command(case("sqs_inbound.json"), docker_host="172.17.0.1")
    assert "--add-host" not in command
    assert command[3:6] == ["InboundFunction", "-e", "events/sqs_inbound.json"]


def test_secret_parameters_are_the_local_secrets_under_the_prefix() -> None:
    assert sam_invoke.secret_parameters("/jastipin/dev/") == SECRETS


def test_parse_a_normal_response() -> None:
    response = {
        "statusCode": 201,
        "headers": {"content-type": "application/json"},
        "body": '{"slug": "jpn25"}',
    }
    assert sam_invoke.parse_output(json.dumps(response)) == (response, None)
    # only the last JSON line counts; whatever came before it is ignored
    assert sam_invoke.parse_output('some text\n{"x": 1}\n' + json.dumps(response) + "\n") == (response, None)
    assert sam_invoke.parse_output('{"batchItemFailures": []}') == ({"batchItemFailures": []}, None)


def test_parse_an_error_response() -> None:
    error = {
        "errorMessage": "secret /jastipin/dev/api_token could not be read from SSM:\n  boom",
        "errorType": "RuntimeError",
        "requestId": "c1d2",
        "stackTrace": ['  File "/var/task/app.py", line 1\n'],
    }
    result, problem = sam_invoke.parse_output(json.dumps(error))
    assert result is None
    assert problem == "RuntimeError: secret /jastipin/dev/api_token could not be read from SSM: boom"


def test_parse_no_json() -> None:
    assert sam_invoke.parse_output("") == (None, "no response on sam's stdout")
    assert sam_invoke.parse_output("not json\nat all") == (None, "no response on sam's stdout")
    stderr = "Invoking app.handler\nError: Running AWS SAM projects locally requires a container runtime.\n"
    assert sam_invoke.result_of(1, "", stderr) == (
        None,
        "sam exited with 1: Error: Running AWS SAM projects locally requires a container runtime.",
    )
    assert sam_invoke.result_of(0, "", "") == (None, "no response on sam's stdout: nothing")


def test_queue_env_vars_name_the_fifo_queues_as_moto_has_them() -> None:
    template = load_template(str(ROOT / "template.yaml"))
    base = "http://127.0.0.1:5001/123456789012/"
    names = ["NotificationsQueue", "NotificationsDLQ", "BroadcastQueue.fifo", "BroadcastDLQ.fifo"]
    names += ["ProofNotifyQueue", "ProofNotifyDLQ", "InboundQueue", "InboundDLQ"]
    values, missing = sam_invoke.queue_env_vars(template, [base + n for n in names], "host.docker.internal")
    container = "http://host.docker.internal:5001/123456789012/"
    assert values["BROADCAST_QUEUE_URL"] == container + "BroadcastQueue.fifo"
    assert values["BROADCAST_DLQ_URL"] == container + "BroadcastDLQ.fifo"
    assert values["NOTIFICATIONS_QUEUE_URL"] == container + "NotificationsQueue"
    assert values["INBOUND_DLQ_URL"] == container + "InboundDLQ"
    assert missing == []
    values, missing = sam_invoke.queue_env_vars(template, [base + "NotificationsQueue"], "h")
    assert values == {"NOTIFICATIONS_QUEUE_URL": "http://h:5001/123456789012/NotificationsQueue"}
    assert "BroadcastQueue" in missing


def test_sam_environment_keeps_sts_local_and_the_template_variables_out() -> None:
    base = {
        "PATH": "/bin",
        "AWS_PROFILE": "prod",
        "AWS_ENDPOINT_URL": "http://x",
        "WA_API_BASE_URL": "http://y",
    }
    env = sam_invoke.sam_environment("ap-southeast-3", "http://127.0.0.1:5001/", {"WA_API_BASE_URL"}, base)
    assert env["PATH"] == "/bin"
    assert env["AWS_ENDPOINT_URL_STS"] == "http://127.0.0.1:5001"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "ap-southeast-3"
    assert env["SAM_CLI_TELEMETRY"] == "0"
    assert not {"AWS_PROFILE", "AWS_ENDPOINT_URL", "WA_API_BASE_URL"} & set(env)


def test_select_cases() -> None:
    cases = load_cases()
    chosen = sam_invoke.select_cases(cases, ["sqs_inbound.json", "events/create_trip.json", "ledger"])
    wanted = {"create_trip.json", "ledger.json", "sqs_inbound.json"}
    assert [c.file for c in chosen] == [c.file for c in cases if c.file in wanted]  # manifest order
    assert sam_invoke.select_cases(cases, []) == cases
    with pytest.raises(ValueError, match=r"nope\.json"):
        sam_invoke.select_cases(cases, ["nope.json"])


# -- end to end: fake sam, real moto, real sandbox ---------------------------------------------------------
FAKE_SAM = '''\
#!{python}
"""A stand-in for `sam local invoke`: answers from {responses} by event file, logs each call to {log}."""
import json, os, sys, urllib.request

argv = sys.argv[1:]
assert argv[:2] == ["local", "invoke"], argv
function, event = argv[2], argv[argv.index("-e") + 1]
overrides = {{}}
for token in argv[argv.index("--parameter-overrides") + 1:]:
    if token.startswith("--"):
        break
    key, value = token.split("=", 1)
    overrides[key] = value
env_vars = json.load(open(argv[argv.index("--env-vars") + 1]))
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": argv, "env_vars": env_vars, "sts": os.environ.get("AWS_ENDPOINT_URL_STS"),
                          "endpoint": os.environ.get("AWS_ENDPOINT_URL")}}) + "\\n")
canned = json.load(open({responses!r}))[os.path.basename(event)]
print("Invoking app.handler (python3.12)", file=sys.stderr)
if canned.get("send"):  # what the sender does: its token from SSM, then POST /<version>/<phone id>/messages
    import boto3
    region = argv[argv.index("--region") + 1]
    ssm = boto3.client("ssm", endpoint_url=overrides["AwsEndpointUrl"], region_name=region)
    token = ssm.get_parameter(Name=overrides["SecretsSsmPrefix"] + "/wa_access_token", WithDecryption=True)
    for i in range(canned["send"]):
        body = {{"messaging_product": "whatsapp", "to": "628123456789%d" % i, "type": "text",
                "text": {{"body": "hello"}}}}
        request = urllib.request.Request(
            overrides["WhatsAppApiBaseUrl"] + "/v23.0/{phone}/messages", data=json.dumps(body).encode(),
            headers={{"Authorization": "Bearer " + token["Parameter"]["Value"],
                     "Content-Type": "application/json"}})
        urllib.request.urlopen(request, timeout=10).read()
print("END RequestId: 1\\nREPORT RequestId: 1  Duration: 1 ms", file=sys.stderr)
sys.stdout.write(canned["stdout"])  # like sam: the response, no newline after it
'''


def canned_response(c: EventCase) -> dict[str, Any]:
    """What a passing handler would return for this case."""
    if "batchItemFailures" in c.expect:
        return {"batchItemFailures": c.expect["batchItemFailures"]}
    if "body" in c.expect:
        body = c.expect["body"]
    elif "json" in c.expect:
        body = json.dumps(c.expect["json"])
    else:
        body = "{}"
    return {"statusCode": c.expect["status"], "headers": {"content-type": "application/json"}, "body": body}


@pytest.fixture
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    httpx.post(url + "/moto-api/reset")
    try:
        yield url
    finally:
        httpx.post(url + "/moto-api/reset")
        server.stop()


@pytest.fixture
def sandbox() -> Iterator[WhatsAppSandbox]:
    with WhatsAppSandbox(
        host="127.0.0.1", port=0, access_token="local-wa-token", phone_number_id=PHONE_NUMBER_ID
    ) as sandbox:
        yield sandbox


@pytest.fixture
def fake_sam(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The fake sam, the log it writes, and its canned answers (edit them before the run)."""
    responses = tmp_path / "responses.json"
    log = tmp_path / "calls.jsonl"
    sam = tmp_path / "sam"
    sam.write_text(
        textwrap.dedent(FAKE_SAM).format(
            python=sys.executable, responses=str(responses), log=str(log), phone=PHONE_NUMBER_ID
        )
    )
    sam.chmod(sam.stat().st_mode | stat.S_IXUSR)
    canned = {
        c.file: {"stdout": json.dumps(canned_response(c)), "send": c.sandbox or 0} for c in load_cases()
    }
    return sam, log, canned


def run_script(fake: tuple[Path, Path, dict[str, Any]], moto_url: str, sandbox_url: str, *extra: str) -> int:
    sam, _, canned = fake
    (sam.parent / "responses.json").write_text(json.dumps(canned))
    return sam_invoke.main(
        [
            "--sam",
            str(sam),
            "--template",
            str(ROOT / "template.yaml"),  # the fake does not read it; the script reads its queue references
            "--moto-url",
            moto_url,
            "--sandbox-url",
            sandbox_url,
            "--docker-host",
            "127.0.0.1",  # the "containers" are processes on this machine
            "--region",
            REGION,
            "--settle",
            "0.2",
            "--timeout",
            "60",
            *extra,
        ]
    )


def test_every_event_end_to_end(
    fake_sam: tuple[Path, Path, dict[str, Any]],
    moto_url: str,
    sandbox: WhatsAppSandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    LocalStack(ROOT / "template.yaml", moto_url, REGION).create()  # the queues and tables make run creates
    _, log, canned = fake_sam
    cases = load_cases()
    counted = next(c for c in cases if c.sandbox is not None)
    canned[counted.file]["send"] = counted.sandbox + 1  # one WhatsApp message too many
    raised = next(c for c in reversed(cases) if "status" in c.expect and c.sandbox is None)
    canned[raised.file]["stdout"] = json.dumps(
        {"errorMessage": "boom", "errorType": "RuntimeError", "requestId": "r1", "stackTrace": []}
    )

    assert run_script(fake_sam, moto_url, sandbox.url) == 1

    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(cases) + 1, "\n".join(out)
    assert out[-1] == f"{len(cases) - 2} passed, 2 failed", "\n".join(out)
    lines = dict(zip((c.file for c in cases), out, strict=False))
    for c in cases:
        if c not in (counted, raised):
            assert lines[c.file].startswith(f"ok   {c.function:<16} {c.file}"), lines[c.file]
        if c.sandbox is not None and c is not counted:
            assert lines[c.file].endswith(f"got batchItemFailures=0 whatsapp={c.sandbox}")
    assert lines["create_trip.json"].endswith("got 201")
    assert lines[counted.file].startswith(f"FAIL {counted.function:<16} {counted.file}")
    assert (
        f"the WhatsApp sandbox received {counted.sandbox + 1}, expected {counted.sandbox}"
        in lines[counted.file]
    )
    assert lines[raised.file].startswith(f"FAIL {raised.function:<16} {raised.file}")
    assert lines[raised.file].endswith("got error  (RuntimeError: boom)")
    # each sent with the token the fake read from SSM (the sandbox refuses any other)
    assert len(sandbox.messages()) == sum(entry["send"] for entry in canned.values())

    ssm = boto3.client("ssm", endpoint_url=moto_url, region_name=REGION)
    for name, value in SECRETS.items():
        parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        assert (parameter["Type"], parameter["Value"]) == ("SecureString", value)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["argv"][2] for call in calls] == [c.function for c in cases]
    assert [call["argv"][4] for call in calls] == [f"events/{c.file}" for c in cases]
    first = calls[0]
    port = moto_url.rsplit(":", 1)[1]
    assert f"AwsEndpointUrl=http://127.0.0.1:{port}" in first["argv"]
    assert f"WhatsAppApiBaseUrl={sandbox.url}" in first["argv"]
    assert "--skip-pull-image" in first["argv"]
    queue_urls = first["env_vars"]["Parameters"]
    assert queue_urls["BROADCAST_QUEUE_URL"] == f"http://127.0.0.1:{port}/123456789012/BroadcastQueue.fifo"
    assert queue_urls["NOTIFICATIONS_QUEUE_URL"] == f"http://127.0.0.1:{port}/123456789012/NotificationsQueue"
    assert first["sts"] == moto_url
    assert first["endpoint"] is None


def test_only_some_events(
    fake_sam: tuple[Path, Path, dict[str, Any]],
    moto_url: str,
    sandbox: WhatsAppSandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_script(
        fake_sam, moto_url, sandbox.url, "--only", "sqs_notifications.json", "--only", "create_trip"
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(out)
    chosen = [c for c in load_cases() if c.file in ("create_trip.json", "sqs_notifications.json")]
    assert [line[:48] for line in out[:2]] == [f"ok   {c.function:<16} {c.file:<26}" for c in chosen]
    assert out[2] == "2 passed, 0 failed"
    assert len(sandbox.messages()) == case("sqs_notifications.json").sandbox


def test_without_make_run_it_stops_before_invoking(
    fake_sam: tuple[Path, Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    assert run_script(fake_sam, nothing, nothing) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "make run" in captured.err
    assert not (fake_sam[0].parent / "calls.jsonl").exists()


def test_prepare_only_writes_the_secrets_and_the_env_vars_file(
    fake_sam: tuple[Path, Path, dict[str, Any]], moto_url: str, tmp_path: Path
) -> None:
    LocalStack(ROOT / "template.yaml", moto_url, REGION).create()
    env_vars = tmp_path / "sam-env.json"
    nothing = f"http://127.0.0.1:{free_port()}"  # no sandbox needed
    assert run_script(fake_sam, moto_url, nothing, "--prepare", str(env_vars)) == 0
    port = moto_url.rsplit(":", 1)[1]
    values = json.loads(env_vars.read_text())["Parameters"]
    assert values["BROADCAST_DLQ_URL"] == f"http://127.0.0.1:{port}/123456789012/BroadcastDLQ.fifo"
    assert len(values) == 8
    ssm = boto3.client("ssm", endpoint_url=moto_url, region_name=REGION)
    assert ssm.get_parameter(Name="/jastipin/dev/api_token", WithDecryption=True)["Parameter"]["Value"] == (
        "local-api-token"
    )
    assert not (fake_sam[0].parent / "calls.jsonl").exists()


def test_runs_as_a_script() -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sam_invoke.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--docker-host" in done.stdout

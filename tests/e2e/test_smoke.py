"""scripts/smoke.py (the smoke test of a deployed stack, docs/deploy.md) run as an operator runs it, against
the local runtime: every check passes, a wrong app secret fails the signature check, a dead-lettered job fails
the DLQ check, the --to / --expect-join round trip (the sandbox plays the operator's phone), and --stack-name
reading outputs and secrets from CloudFormation and SSM (the runtime's moto server)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.project import LOCAL_SECRETS
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "smoke.py"
BASE_CHECKS = [
    "api-auth",
    "api-token",
    "admin-api",
    "dlq-empty",
    "webhook-verify",
    "webhook-wrong-token",
    "webhook-signed-post",
    "webhook-bad-signature",
]
LINE = re.compile(r"^(ok|FAIL)\s+(\S+)\s+\d+ ms\s+(.*)$")


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    # No automatic status callbacks: the sandbox would post them the instant it accepts a send, and a status
    # that beats the sender's log write is still lost (the race of issue 14). The round-trip tests post the
    # reply's "delivered" themselves once the reply is logged, as Meta's arrives (seconds later).
    config = RuntimeConfig(
        api_port=free_port(), sandbox_port=free_port(), moto_port=free_port(), status_callbacks=False
    )
    with LocalRuntime(config) as rt:
        yield rt


def run_expect_join(runtime: LocalRuntime, args: list[str], phone: str) -> tuple[int, str]:
    """Run the smoke test with --expect-join, playing the operator's phone: send the JOIN when the script
    asks for it (if it does), and report the reply delivered once the script has seen it sent."""
    sandbox = runtime.sandbox
    assert sandbox is not None
    process = subprocess.Popen(
        [sys.executable, str(SMOKE), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if found := re.match(r"^    JOIN (smoke[0-9a-f]{6})$", line):
                assert sandbox.send_inbound(from_phone=phone, text=f"JOIN {found[1]}") == 200
            if re.match(r"^ok\s+join-reply ", line):
                (reply,) = sandbox.messages(to=phone)
                assert sandbox.send_status(reply["id"], "delivered", phone) == 200
        return process.wait(timeout=60), "".join(lines)
    finally:
        process.kill()
        process.wait()


def options(runtime: LocalRuntime, **override: str) -> list[str]:
    return options_for(runtime.api.url, **override)  # type: ignore[union-attr]


def options_for(api_url: str, **override: str) -> list[str]:
    """The URL and token options, as an operator would pass them for `make run` (local tokens)."""
    given = {
        "api-url": api_url,
        "webhook-url": f"{api_url}/api/webhooks/whatsapp",
        "verify-token": LOCAL_SECRETS["WA_VERIFY_TOKEN"],
        "app-secret": LOCAL_SECRETS["WA_APP_SECRET"],
        "admin-token": LOCAL_SECRETS["ADMIN_TOKEN"],
        "api-token": LOCAL_SECRETS["API_TOKEN"],
        **override,
    }
    return [arg for name, value in given.items() for arg in (f"--{name}", value)]


def smoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run the script; returns its exit status, {check: (ok|FAIL, detail)} and the whole output."""
    done = subprocess.run(
        [sys.executable, str(SMOKE), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    checks = {m[2]: (m[1], m[3]) for m in map(LINE.match, done.stdout.splitlines()) if m}
    return done.returncode, checks, done.stdout + done.stderr


def test_every_check_passes_against_the_local_runtime(runtime):
    status, checks, output = smoke(*options(runtime))
    assert status == 0, output
    assert list(checks) == BASE_CHECKS, output
    assert all(result == "ok" for result, _ in checks.values()), output
    assert "8 of 8 checks ok: smoke test passed" in output


def test_wrong_app_secret_fails_the_signature_check(runtime):
    status, checks, output = smoke(*options(runtime, **{"app-secret": "not-the-app-secret"}))
    assert status == 1, output
    result, detail = checks["webhook-signed-post"]
    assert result == "FAIL" and "403" in detail, output
    assert checks["webhook-bad-signature"][0] == "ok"  # a wrong signature is still refused
    assert "smoke test FAILED" in output


def test_a_job_in_a_dead_letter_queue_fails_the_dlq_check(runtime):
    sqs = runtime.client("sqs")
    dlq = runtime.queue_url("ProofNotifyDLQ")
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"not": "a job"}))
    try:
        status, checks, output = smoke(*options(runtime))
    finally:
        sqs.purge_queue(QueueUrl=dlq)
    assert status == 1, output
    result, detail = checks["dlq-empty"]
    assert result == "FAIL" and "proof_notify DLQ: 1 message(s)" in detail, output
    assert [name for name, (r, _) in checks.items() if r == "FAIL"] == ["dlq-empty"], output


def test_to_then_expect_join_sees_the_reply_delivered(runtime):
    status, checks, output = smoke(*options(runtime), "--to", "081311115555")
    assert status == 0 and checks["trip-created"][0] == "ok", output
    slug = re.search(r"^    JOIN (smoke[0-9a-f]{6})$", output, re.MULTILINE)[1]  # type: ignore[index]
    assert f"--expect-join {slug}" in output
    # The operator's phone sends the JOIN (the sandbox signs and posts it as Meta does).
    assert runtime.sandbox.send_inbound(from_phone="6281311115555", text=f"JOIN {slug}") == 200  # type: ignore[union-attr]
    status, output = run_expect_join(
        runtime, [*options(runtime), "--expect-join", slug, "--join-timeout", "20"], "6281311115555"
    )
    assert status == 0, output
    checks = {m[2]: (m[1], m[3]) for m in map(LINE.match, output.splitlines()) if m}
    assert checks["join-reply"][0] == "ok" and checks["reply-status"][0] == "ok", output
    (reply,) = runtime.sandbox.messages(to="6281311115555")  # type: ignore[union-attr]
    assert reply["body"]["text"]["body"].startswith("Terima kasih sudah join!")


def test_to_with_expect_join_waits_in_the_same_run(runtime):
    status, output = run_expect_join(
        runtime, [*options(runtime), "--to", "081311116666", "--expect-join"], "6281311116666"
    )
    assert status == 0, output
    assert re.search(r"^ok\s+join-reply ", output, re.MULTILINE), output
    assert re.search(r"^ok\s+reply-status ", output, re.MULTILINE), output


def test_unreachable_api_fails_every_check():
    status, checks, output = smoke(*options_for(f"http://127.0.0.1:{free_port()}"))
    assert status == 1, output
    assert list(checks) == BASE_CHECKS and all(r == "FAIL" for r, _ in checks.values()), output
    assert "ConnectError" in checks["api-auth"][1]


def test_expect_join_without_the_join_fails_after_the_timeout(runtime):
    status, checks, output = smoke(*options(runtime), "--expect-join", "smoke000000", "--join-timeout", "1")
    assert status == 1, output
    assert checks["join-reply"][0] == "FAIL" and "no reply logged" in checks["join-reply"][1], output


def test_stack_name_reads_outputs_and_secrets_from_aws(runtime):
    """CloudFormation and SSM are the runtime's moto server (AWS_ENDPOINT_URL); the outputs point at the local
    HTTP API as a deployed stack's point at API Gateway and the function URL."""
    api = runtime.api.url  # type: ignore[union-attr]
    template = {
        "Parameters": {"SecretsSsmPrefix": {"Type": "String", "Default": "/jastipin/dev"}},
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": "/smoke-test/marker", "Type": "String", "Value": "-"},
            }
        },
        "Outputs": {
            "ApiUrl": {"Value": f"{api}/"},
            "WebhookUrl": {"Value": f"{api}/api/webhooks/whatsapp"},
            "DashboardName": {"Value": "jastipin-smoke-ap-southeast-3"},
        },
    }
    runtime.client("cloudformation").create_stack(
        StackName="jastipin-smoke",
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "SecretsSsmPrefix", "ParameterValue": "/jastipin/smoke"}],
    )
    ssm = runtime.client("ssm")
    names = {
        "wa_verify_token": "WA_VERIFY_TOKEN",
        "wa_app_secret": "WA_APP_SECRET",
        "admin_token": "ADMIN_TOKEN",
    }
    for name, secret in names.items():
        ssm.put_parameter(Name=f"/jastipin/smoke/{name}", Value=LOCAL_SECRETS[secret], Type="SecureString")
    env = {
        "AWS_ENDPOINT_URL": runtime.moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    status, checks, output = smoke("--stack-name", "jastipin-smoke", "--region", "ap-southeast-3", env=env)
    assert status == 0, output
    # no api_token in SSM: that check is left out (only --to needs it)
    assert list(checks) == ["stack-outputs", "ssm-secrets", *(c for c in BASE_CHECKS if c != "api-token")]
    assert (
        "Dashboard: https://console.aws.amazon.com/cloudwatch/home?region=ap-southeast-3"
        "#dashboards:name=jastipin-smoke-ap-southeast-3"
    ) in output

    status, checks, output = smoke("--stack-name", "no-such-stack", "--region", "ap-southeast-3", env=env)
    assert status == 1 and checks["stack-outputs"][0] == "FAIL", output

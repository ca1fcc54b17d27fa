"""Smoke test of a deployed Jastipin messaging stack (or of ``make run``): a few seconds, nothing sent.

    .venv/bin/python scripts/smoke.py --stack-name jastipin-dev --region ap-southeast-3
    .venv/bin/python scripts/smoke.py --local                    # against `make run` on 127.0.0.1:3000
    .venv/bin/python scripts/smoke.py --api-url URL --webhook-url URL --verify-token T --app-secret S \\
        --admin-token A [--api-token B]

With ``--stack-name`` the URLs come from the stack's outputs (ApiUrl, WebhookUrl, DashboardName) and the
secrets from SSM (``<prefix>/wa_verify_token``, ``wa_app_secret``, ``admin_token``, ``api_token``; the prefix
is the stack's SecretsSsmPrefix unless ``--ssm-prefix`` is given). Options given on the command line win.

Checks, one line each (``ok`` or ``FAIL``, with the time taken):

- ``api-auth``: a backend route and an admin route without a token answer 401 with a JSON error;
- ``api-token``: the backend accepts the API token (a trip that does not exist: 404), when the token is known;
- ``admin-api``: ``GET /admin/api/queues`` with the admin token answers 200;
- ``dlq-empty``: no dead-letter queue holds a message;
- ``webhook-verify``: Meta's verification handshake on the webhook URL echoes ``hub.challenge``;
- ``webhook-wrong-token``: the handshake with a wrong verify token is refused (403);
- ``webhook-signed-post``: a signed status webhook (for a message that does not exist) is accepted (200);
- ``webhook-bad-signature``: the same body with a wrong signature is refused (403).

One real message through the whole system (optional): ``--to +62...`` creates a trip ``smoke<random>`` owned
by that number and prints what to do next: from WhatsApp on that phone, send ``JOIN <slug>`` to the business
number. The system then answers "Terima kasih sudah join!". ``--expect-join <slug>`` (in a later run) waits
for that reply in the trip's log: ``join-reply`` passes when it was sent, ``reply-status`` when Meta reported
it delivered or read. ``--to ... --expect-join`` (no slug) does both in one run. The backend API cannot send a
message to a number that has not written first (a proof needs a participant; product updates need the
24-hour window), hence the JOIN from the phone.

Exit status 0 only when every check passed (1 otherwise, 2 for bad options). Network calls go only to the
URLs given or the stack's outputs (and, with ``--stack-name``, to CloudFormation and SSM). The dashboard
link is printed, never fetched. Needs only the standard library, httpx and (``--stack-name``) boto3.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

WEBHOOK_PATH = "api/webhooks/whatsapp"
LOCAL = {
    "api_url": "http://127.0.0.1:3000",
    "verify_token": "local-verify-token",
    "app_secret": "local-app-secret",
    "admin_token": "local-admin-token",
    "api_token": "local-api-token",
}
SSM_NAMES = {  # option -> SSM parameter name under the prefix
    "verify_token": "wa_verify_token",
    "app_secret": "wa_app_secret",
    "admin_token": "admin_token",
    "api_token": "api_token",
}
DEFAULT_SSM_PREFIX = "/jastipin/dev"
REPLY_FINAL = {"sent", "delivered", "read"}


class CheckFailed(Exception):
    """A check's expectation was not met; the message says what was seen."""


@dataclass
class Target:
    api_url: str  # with a trailing slash
    webhook_url: str
    verify_token: str | None = None
    app_secret: str | None = None
    admin_token: str | None = None
    api_token: str | None = None
    region: str | None = None
    dashboard: str | None = None


@dataclass
class Report:
    results: list[bool] = field(default_factory=list)

    def check(self, name: str, run: Callable[[], str]) -> bool:
        """Run one check and print its line: ``ok``/``FAIL``, name, milliseconds, what was seen."""
        start = time.perf_counter()
        try:
            detail, ok = run(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except httpx.HTTPError as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        elapsed = (time.perf_counter() - start) * 1000
        print(f"{'ok' if ok else 'FAIL':<4}  {name:<22} {elapsed:>7.0f} ms  {detail}", flush=True)
        self.results.append(ok)
        return ok

    def skip(self, name: str, detail: str) -> None:
        print(f"{'skip':<4}  {name:<22} {'':>7}     {detail}", flush=True)

    def fail(self, name: str, detail: str) -> None:
        print(f"{'FAIL':<4}  {name:<22} {0:>7.0f} ms  {detail}", flush=True)
        self.results.append(False)


# ---------------------------------------------------------------------------------------------- options
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/smoke.py",
        description="Smoke test of a deployed Jastipin messaging stack (see docs/deploy.md).",
    )
    where = parser.add_argument_group("where (one of)")
    where.add_argument("--stack-name", help="read ApiUrl, WebhookUrl, DashboardName and the secrets from AWS")
    where.add_argument("--local", action="store_true", help="`make run` on 127.0.0.1:3000 with its tokens")
    where.add_argument("--api-url", help="the HTTP API's base URL (stack output ApiUrl)")
    aws = parser.add_argument_group("AWS (with --stack-name)")
    aws.add_argument("--region", help="AWS region (default: the AWS CLI's configured region)")
    aws.add_argument(
        "--ssm-prefix",
        help=f"SSM path of the secrets (default: the stack's SecretsSsmPrefix, else {DEFAULT_SSM_PREFIX})",
    )
    given = parser.add_argument_group("given directly (override what the stack or --local gives)")
    given.add_argument("--webhook-url", help=f"Meta's callback URL (default: <api-url>/{WEBHOOK_PATH})")
    given.add_argument("--verify-token", help="the webhook verify token (secret wa_verify_token)")
    given.add_argument("--app-secret", help="the Meta app secret (secret wa_app_secret)")
    given.add_argument("--admin-token", help="the admin API token (secret admin_token)")
    given.add_argument("--api-token", help="the backend API token (secret api_token); needed by --to")
    given.add_argument("--dashboard-name", help="CloudWatch dashboard name, for the link (stack output)")
    message = parser.add_argument_group("one real message (optional)")
    message.add_argument("--to", metavar="PHONE", help="create a trip smoke<random> owned by this number")
    message.add_argument(
        "--expect-join",
        nargs="?",
        const="",
        metavar="SLUG",
        help="wait for the reply to 'JOIN SLUG' (no SLUG: the trip --to just created)",
    )
    message.add_argument("--join-timeout", type=float, default=180.0, help="seconds to wait (default 180)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per HTTP request (default 20)")
    args = parser.parse_args(argv)
    if args.stack_name and args.local:
        parser.error("give --stack-name or --local, not both")
    if not (args.stack_name or args.local or args.api_url):
        parser.error("give one of --stack-name, --local or --api-url")
    if not args.stack_name and not args.local:
        missing = [o for o in ("verify_token", "app_secret", "admin_token") if not getattr(args, o)]
        if missing:
            parser.error("--api-url also needs " + ", ".join(f"--{o.replace('_', '-')}" for o in missing))
    if args.expect_join and args.to:
        parser.error("--to creates a new trip: give --expect-join without a slug to wait for its JOIN")
    if args.expect_join == "" and not args.to:
        parser.error("--expect-join without a slug needs --to (or give the slug an earlier run printed)")
    return args


def target_from_stack(args: argparse.Namespace, report: Report) -> Target | None:
    """Outputs from CloudFormation, secrets from SSM (decrypted). None (and a FAIL line) if unreadable."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session(region_name=args.region)
    region = session.region_name
    if not region:
        report.fail("stack-outputs", "no region: give --region or configure one (aws configure)")
        return None
    found: dict[str, Any] = {}

    def outputs() -> str:
        try:
            stack = session.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"][0]
        except (BotoCoreError, ClientError) as exc:
            raise CheckFailed(f"cannot read stack {args.stack_name} in {region}: {exc}") from None
        values = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        missing = [name for name in ("ApiUrl", "WebhookUrl") if name not in values]
        if missing:
            raise CheckFailed(f"stack {args.stack_name} ({stack['StackStatus']}) has no output {missing}")
        params = {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}
        found.update(values, prefix=params.get("SecretsSsmPrefix") or DEFAULT_SSM_PREFIX)
        return f"{args.stack_name} in {region} ({stack['StackStatus']})"

    if not report.check("stack-outputs", outputs):
        return None
    prefix = (args.ssm_prefix or found["prefix"]).rstrip("/")
    wanted = {option: f"{prefix}/{name}" for option, name in SSM_NAMES.items() if not getattr(args, option)}

    def read_secrets() -> str:
        if not wanted:
            return "all given on the command line"
        try:
            answer = session.client("ssm").get_parameters(Names=list(wanted.values()), WithDecryption=True)
        except (BotoCoreError, ClientError) as exc:
            raise CheckFailed(f"cannot read {prefix}/*: {exc}") from None
        values = {p["Name"]: p["Value"] for p in answer["Parameters"]}
        for option, name in wanted.items():
            if name in values:
                setattr(args, option, values[name])
        # api_token is needed only by --to (and the api-token check, which is skipped without it)
        missing = [name for option, name in wanted.items() if name not in values and option != "api_token"]
        if missing:
            raise CheckFailed(f"missing SSM parameters: {', '.join(missing)}")
        return f"{len(values)} secrets read under {prefix}/"

    if not report.check("ssm-secrets", read_secrets):
        return None
    return Target(
        api_url=args.api_url or found["ApiUrl"],
        webhook_url=args.webhook_url or found["WebhookUrl"],
        verify_token=args.verify_token,
        app_secret=args.app_secret,
        admin_token=args.admin_token,
        api_token=args.api_token,
        region=region,
        dashboard=args.dashboard_name or found.get("DashboardName"),
    )


def target_given(args: argparse.Namespace) -> Target:
    """From the options, with ``--local``'s defaults (those of ``make run``) under them."""
    defaults = LOCAL if args.local else {}

    def pick(option: str) -> str | None:
        return getattr(args, option) or defaults.get(option)

    api_url = pick("api_url") or ""
    return Target(
        api_url=api_url,
        webhook_url=args.webhook_url or f"{api_url.rstrip('/')}/{WEBHOOK_PATH}",
        verify_token=pick("verify_token"),
        app_secret=pick("app_secret"),
        admin_token=pick("admin_token"),
        api_token=pick("api_token"),
        region=args.region,
        dashboard=args.dashboard_name,
    )


# ---------------------------------------------------------------------------------------------- checks
def url(target: Target, path: str) -> str:
    return f"{target.api_url.rstrip('/')}/{path.lstrip('/')}"


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(response: httpx.Response) -> str:
    """The JSON error's code, or a CheckFailed naming what came back instead."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(
            f"{response.status_code} without a JSON error body: {response.text[:120]!r}"
        ) from None


def expect_status(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise CheckFailed(f"{what}: expected {status}, got {response.status_code} {response.text[:160]!r}")


def status_payload(wamid: str) -> bytes:
    """A Meta-shaped webhook: one ``delivered`` status for a message this system never sent (it changes
    nothing: the webhook finds no log entry for the wamid)."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "0",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "0", "phone_number_id": "0"},
                            "statuses": [
                                {"id": wamid, "status": "delivered", "timestamp": str(int(time.time()))}
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def run_checks(client: httpx.Client, target: Target, report: Report) -> None:
    probe_trip = "smoke-check-" + secrets.token_hex(3)  # a trip that does not exist

    def api_auth() -> str:
        for path in (f"api/trips/{probe_trip}/ledger", "admin/api/queues"):
            response = client.get(url(target, path))
            expect_status(response, 401, f"GET /{path} without a token")
            if (code := error_code(response)) != "unauthorized":
                raise CheckFailed(f"GET /{path} without a token: 401 but error code {code!r}")
        return "401 JSON without a token on /api/trips/{tripId}/ledger and /admin/api/queues"

    def api_token() -> str:
        response = client.get(url(target, f"api/trips/{probe_trip}/ledger"), headers=bearer(target.api_token))
        if response.status_code in (401, 403):
            raise CheckFailed(
                f"the API token was refused ({response.status_code}): is SSM api_token current?"
            )
        expect_status(response, 404, "GET /api/trips/{unknown trip}/ledger with the API token")
        return "the API token is accepted (404 for a trip that does not exist)"

    queues: list[dict[str, Any]] = []

    def admin_api() -> str:
        response = client.get(url(target, "admin/api/queues"), headers=bearer(target.admin_token))
        if response.status_code in (401, 403):
            raise CheckFailed(f"the admin token was refused ({response.status_code})")
        expect_status(response, 200, "GET /admin/api/queues")
        queues.extend(response.json()["queues"])
        return f"GET /admin/api/queues: 200, {len(queues)} queues"

    def dlq_empty() -> str:
        if not queues:
            raise CheckFailed("no queue counts (the admin API failed)")
        held = {q["name"]: q["dlq"]["visible"] + q["dlq"]["in_flight"] + q["dlq"]["delayed"] for q in queues}
        full = {name: count for name, count in held.items() if count}
        if full:
            listed = ", ".join(f"{name} DLQ: {n} message(s)" for name, n in full.items())
            raise CheckFailed(f"{listed}; see {url(target, 'admin/queues')}")
        waiting = ", ".join(f"{q['name']} {q['queue']['visible']}" for q in queues)
        return f"every DLQ empty (waiting: {waiting})"

    def webhook_verify() -> str:
        challenge = str(secrets.randbelow(10**9))
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": target.verify_token,
            "hub.challenge": challenge,
        }
        response = client.get(target.webhook_url, params=params)
        if response.status_code == 403:
            raise CheckFailed("403: the verify token differs from the deployed wa_verify_token")
        expect_status(response, 200, "GET handshake")
        if response.text != challenge:
            raise CheckFailed(f"200 but the body is {response.text[:80]!r}, not the challenge {challenge}")
        return "GET hub.mode=subscribe echoes hub.challenge"

    def webhook_wrong_token() -> str:
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": f"{target.verify_token}-wrong",
            "hub.challenge": "1",
        }
        expect_status(client.get(target.webhook_url, params=params), 403, "GET with a wrong verify token")
        return "a wrong verify token: 403"

    body = status_payload(f"wamid.smoke-{secrets.token_hex(8)}")

    def webhook_signed_post() -> str:
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(target.app_secret, body),
        }
        response = client.post(target.webhook_url, content=body, headers=headers)
        if response.status_code == 403:
            raise CheckFailed("403: the signature was refused (the app secret differs from wa_app_secret)")
        expect_status(response, 200, "signed POST")
        answer = response.json()
        if answer.get("status") != "ok":
            raise CheckFailed(f"200 but {answer!r} (expected status ok)")
        return "a signed status webhook: 200 ok"

    def webhook_bad_signature() -> str:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        expect_status(client.post(target.webhook_url, content=body, headers=headers), 403, "bad signature")
        return "the same body with a wrong signature: 403"

    report.check("api-auth", api_auth)
    if target.api_token:
        report.check("api-token", api_token)
    else:
        report.skip("api-token", "no API token (SSM api_token or --api-token): not checked")
    report.check("admin-api", admin_api)
    report.check("dlq-empty", dlq_empty)
    report.check("webhook-verify", webhook_verify)
    report.check("webhook-wrong-token", webhook_wrong_token)
    report.check("webhook-signed-post", webhook_signed_post)
    report.check("webhook-bad-signature", webhook_bad_signature)


# ---------------------------------------------------------------------------------------------- one message
def create_smoke_trip(client: httpx.Client, target: Target, phone: str, report: Report) -> str | None:
    slug = "smoke" + secrets.token_hex(3)

    def create() -> str:
        if not target.api_token:
            raise CheckFailed("--to needs the API token (--api-token, or SSM api_token with --stack-name)")
        response = client.post(
            url(target, "api/trips"),
            json={"slug": slug, "title": "Smoke test", "owner_phone": phone},
            headers=bearer(target.api_token),
        )
        expect_status(response, 201, "POST /api/trips")
        return f"trip {slug} created, owned by the --to number"

    return slug if report.check("trip-created", create) else None


def join_instructions(slug: str, phone: str, *, waiting: bool) -> None:
    then = (
        "This run waits for the reply."
        if waiting
        else f"Then run this command again without --to, adding:  --expect-join {slug}"
    )
    print(
        f"\nNext: from WhatsApp on {phone}, send this message to the business number:\n"
        f"    JOIN {slug}\n"
        f'The system answers "Terima kasih sudah join!". {then}\n',
        flush=True,
    )


def expect_join(client: httpx.Client, target: Target, slug: str, timeout: float, report: Report) -> None:
    """The reply to ``JOIN <slug>`` in the trip's log (admin API): sent, then delivered or read."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}

    def reply() -> dict[str, Any] | None:
        response = client.get(
            url(target, f"admin/api/trips/{slug}/outcomes"),
            params={"limit": 10},
            headers=bearer(target.admin_token),
        )
        expect_status(response, 200, f"GET /admin/api/trips/{slug}/outcomes")
        replies = [o for o in response.json()["outcomes"] if o["message_type"] == "auto_reply"]
        return replies[0] if replies else None

    def sent() -> str:
        while time.monotonic() < deadline:
            entry = reply()
            if entry and entry["status"] in REPLY_FINAL:
                seen.update(entry)
                return f"the reply to JOIN {slug} was sent (participant {entry['participant_id']})"
            if entry and entry["status"] in {"failed", "skipped"}:
                why = entry.get("reason") or entry.get("error_code")
                raise CheckFailed(f"the reply to JOIN {slug} is {entry['status']}: {why}")
            time.sleep(1)
        raise CheckFailed(
            f"no reply logged for trip {slug} within {timeout:.0f} s: did 'JOIN {slug}' reach the webhook? "
            "(inbound queue and DLQ on the admin page; WebhookFunction and InboundFunction logs)"
        )

    def delivered() -> str:
        entry = seen
        until = max(deadline, time.monotonic() + 30)  # Meta's status follows the send within seconds
        while entry["status"] not in {"delivered", "read"} and time.monotonic() < until:
            time.sleep(1)
            entry = reply() or entry
        if entry["status"] not in {"delivered", "read"}:
            raise CheckFailed(
                f"still '{entry['status']}': no delivery status from Meta (is the phone online? is the "
                "webhook subscribed to 'messages'?)"
            )
        return f"Meta reported the reply {entry['status']}"

    print(f"waiting up to {timeout:.0f} s for the reply to JOIN {slug} ...", flush=True)
    if report.check("join-reply", sent):
        report.check("reply-status", delivered)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    target = target_from_stack(args, report) if args.stack_name else target_given(args)
    if target is None:
        print("\nsmoke test FAILED: the stack could not be read")
        return 1
    print(f"Smoke test of {target.api_url} (webhook {target.webhook_url})", flush=True)
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as client:
        run_checks(client, target, report)
        slug = args.expect_join or None
        if args.to:
            slug = create_smoke_trip(client, target, args.to, report)
            if slug:
                join_instructions(slug, args.to, waiting=args.expect_join is not None)
        if slug and args.expect_join is not None:
            expect_join(client, target, slug, args.join_timeout, report)
    if target.dashboard and target.region:
        print(
            "Dashboard: https://console.aws.amazon.com/cloudwatch/home"
            f"?region={target.region}#dashboards:name={target.dashboard}"
        )
    passed = sum(report.results)
    verdict = "passed" if all(report.results) else "FAILED"
    print(f"\n{passed} of {len(report.results)} checks ok: smoke test {verdict}")
    return 0 if all(report.results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""``make sam-invoke``: every sample event (``events/manifest.json``, in its order) through SAM's own
``sam local invoke``, each function in a Lambda container, against the moto server and the WhatsApp sandbox
of a running ``make run ARGS="--host 0.0.0.0 --dynamodb moto"``; each result is checked with
``localrun.events.check``.

In order (see docs/sam-local.md):

1. puts the local secrets into moto's SSM, SecureString parameters under ``--ssm-prefix`` (the functions read
   them there: ``sam local invoke --env-vars`` cannot add variables the template does not declare);
2. writes an ``--env-vars`` file with the queue URLs as moto has them (SAM resolves ``!Ref SomeQueue`` to
   the bare logical id, which is not the name of a FIFO queue, ``SomeQueue.fifo``);
3. for each event runs ``sam local invoke <Function> -e events/<file> --template
   .aws-sam/build/template.yaml --skip-pull-image --parameter-overrides AwsEndpointUrl=...
   WhatsAppApiBaseUrl=... SecretsSsmPrefix=... --add-host host.docker.internal:host-gateway ...``, takes the
   handler's return value from the last JSON line of sam's stdout (its logs go to stderr; sam exits 0 even
   when the handler raised, and then prints an ``errorMessage``/``errorType`` object), counts the WhatsApp
   messages the sandbox received during the event when the manifest gives a number, and prints one line per
   event, then ``N passed, M failed``.

It does not build: ``make sam-invoke`` runs ``sam build`` first. ``--prepare FILE`` does steps 1 and 2 only
(the ``--env-vars`` file goes to FILE), for ``sam local invoke`` or ``start-api`` by hand. Exit status: 0 all
passed, 1 an event failed, 2 it could not start (no built template, no sam, moto or the sandbox not
reachable)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "layers" / "common"):  # also when run without the Makefile's PYTHONPATH
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from localrun.cfn_yaml import load_template  # noqa: E402
from localrun.events import EventCase, check, load_cases  # noqa: E402
from localrun.project import LOCAL_SECRETS  # noqa: E402

DEFAULT_MOTO_URL = "http://127.0.0.1:5001"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8900"
DEFAULT_DOCKER_HOST = "host.docker.internal"
DEFAULT_SSM_PREFIX = "/jastipin/dev"
DEFAULT_TEMPLATE = ".aws-sam/build/template.yaml"
DEFAULT_SAM = ROOT / ".venv" / "bin" / "sam"
DEFAULT_REGION = "ap-southeast-3"
# Dummy credentials for moto: sam hands the caller's credentials to the container, and these are all it needs.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


# -- pure helpers --------------------------------------------------------------------------------------------
def secret_parameters(prefix: str) -> dict[str, str]:
    """The SSM parameters the functions read (``<prefix>/<secret name>``) with the local secrets' values."""
    prefix = prefix.rstrip("/")
    return {f"{prefix}/{env_name.lower()}": value for env_name, value in LOCAL_SECRETS.items()}


def container_url(url: str, docker_host: str) -> str:
    """``url`` as a Lambda container sees it: the same scheme, port and path on ``docker_host``."""
    parts = urlsplit(url)
    netloc = docker_host if parts.port is None else f"{docker_host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parameter_overrides(moto_url: str, sandbox_url: str, docker_host: str, ssm_prefix: str) -> list[str]:
    """The template parameters that point the functions at moto, the sandbox and the local secrets."""
    return [
        f"AwsEndpointUrl={container_url(moto_url, docker_host).rstrip('/')}",
        f"WhatsAppApiBaseUrl={container_url(sandbox_url, docker_host).rstrip('/')}",
        f"SecretsSsmPrefix={ssm_prefix.rstrip('/')}",
    ]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def invoke_command(
    case: EventCase,
    *,
    sam: str = str(DEFAULT_SAM),
    template: str = DEFAULT_TEMPLATE,
    overrides: Sequence[str] = (),
    docker_host: str = DEFAULT_DOCKER_HOST,
    region: str = DEFAULT_REGION,
    env_vars: str | None = None,
) -> list[str]:
    """The ``sam local invoke`` command line for one event (run from the repository root)."""
    command = [
        sam,
        "local",
        "invoke",
        case.function,
        "-e",
        f"events/{case.file}",
        "--template",
        template,
        "--skip-pull-image",
        "--region",
        region,
        "--parameter-overrides",
        *overrides,
    ]
    if not is_ip(docker_host):  # a name: make it resolve, in the container, to the Docker host
        command += ["--add-host", f"{docker_host}:host-gateway"]
    if env_vars:
        command += ["--env-vars", env_vars]
    return command


def parse_output(stdout: str) -> tuple[Any, str | None]:
    """The handler's return value from ``sam local invoke``'s stdout, as ``(result, error)``.

    sam writes only the return value to stdout (as one JSON document, the last line); when the handler raised,
    that value is Lambda's error object (``errorMessage``, ``errorType``, ``stackTrace``): then ``error`` is
    ``"<errorType>: <errorMessage>"``. No JSON at all gives ``(None, "no response ...")``."""
    text = stdout.strip()
    value: Any = None
    found = False
    if text:
        try:
            value, found = json.loads(text), True
        except ValueError:
            for line in reversed(text.splitlines()):
                try:
                    value, found = json.loads(line), True
                    break
                except ValueError:
                    continue
    if not found:
        return None, "no response on sam's stdout"
    if isinstance(value, dict) and "errorMessage" in value and "statusCode" not in value:
        kind = value.get("errorType") or "Error"
        message = " ".join(str(value.get("errorMessage") or "").split())
        return None, f"{kind}: {message}" if message else str(kind)
    return value, None


def result_of(returncode: int, stdout: str, stderr: str) -> tuple[Any, str | None]:
    """``parse_output`` plus what sam said on stderr when there was no response (e.g. no Docker)."""
    result, error = parse_output(stdout)
    if error is not None and result is None and error.startswith("no response"):
        last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
        error = f"sam exited with {returncode}: {last}" if returncode else f"{error}: {last or 'nothing'}"
    return result, error


def environment_variables(template: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every (name, value) the template declares in a function's environment, globally or per function."""
    resources = template.get("Resources", {}) or {}
    blocks = [((template.get("Globals") or {}).get("Function") or {}).get("Environment")]
    blocks += [
        (res.get("Properties") or {}).get("Environment")
        for res in resources.values()
        if res.get("Type") == "AWS::Serverless::Function"
    ]
    return [
        (name, value)
        for block in blocks
        if isinstance(block, dict)
        for name, value in (block.get("Variables") or {}).items()
    ]


def queue_refs(template: dict[str, Any]) -> dict[str, str]:
    """Environment variables that hold ``!Ref <an SQS queue>``: name → the queue's logical id."""
    resources = template.get("Resources", {}) or {}
    queues = {lid for lid, res in resources.items() if res.get("Type") == "AWS::SQS::Queue"}
    return {
        name: value["Ref"]
        for name, value in environment_variables(template)
        if isinstance(value, dict) and value.get("Ref") in queues
    }


def queue_names(template: dict[str, Any], logical_id: str) -> list[str]:
    """The names a queue may have in moto: its ``QueueName``, else the logical id (``.fifo`` for FIFO)."""
    props = (template["Resources"][logical_id].get("Properties") or {}) if template.get("Resources") else {}
    if isinstance(props.get("QueueName"), str):
        return [props["QueueName"]]
    if str(props.get("FifoQueue")).lower() == "true":
        return [f"{logical_id}.fifo", logical_id]
    return [logical_id]


def queue_env_vars(
    template: dict[str, Any], moto_queue_urls: Sequence[str], docker_host: str
) -> tuple[dict[str, str], list[str]]:
    """``--env-vars`` values (name → queue URL as the container reaches it) for every queue reference, and the
    logical ids of referenced queues that moto does not have."""
    by_name = {url.rstrip("/").rsplit("/", 1)[-1]: url for url in moto_queue_urls}
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, logical_id in sorted(queue_refs(template).items()):
        url = next((by_name[n] for n in queue_names(template, logical_id) if n in by_name), None)
        if url is None:
            if logical_id not in missing:
                missing.append(logical_id)
            continue
        values[name] = container_url(url, docker_host)
    return values, missing


def select_cases(cases: list[EventCase], only: Sequence[str]) -> list[EventCase]:
    """The cases named by ``--only`` (``x.json``, ``events/x.json`` or ``x``), in manifest order."""
    if not only:
        return cases
    wanted = {Path(name).name if name.endswith(".json") else f"{Path(name).name}.json" for name in only}
    unknown = wanted - {case.file for case in cases}
    if unknown:
        raise ValueError(f"not in events/manifest.json: {', '.join(sorted(unknown))}")
    return [case for case in cases if case.file in wanted]


# -- talking to make run's moto and sandbox ------------------------------------------------------------------
def aws_client(service: str, moto_url: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name=region,
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 2}),
    )


def put_secrets(moto_url: str, region: str, prefix: str) -> list[str]:
    """Write the local secrets to moto's SSM (SecureString, overwriting); returns the parameter names."""
    ssm = aws_client("ssm", moto_url, region)
    names = []
    for name, value in secret_parameters(prefix).items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
        names.append(name)
    return names


def moto_queue_urls(moto_url: str, region: str) -> list[str]:
    return list(aws_client("sqs", moto_url, region).list_queues().get("QueueUrls", []))


def sandbox_count(sandbox_url: str) -> int:
    """Messages the sandbox has accepted so far (``GET /_sandbox/stats``)."""
    url = sandbox_url.rstrip("/") + "/_sandbox/stats"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - an http:// URL we were given
        return int(json.loads(response.read())["messages"])


def settled_count(sandbox_url: str, quiet: float, timeout: float = 30.0) -> int:
    """The sandbox's count once it has not changed for ``quiet`` seconds: ``make run``'s own functions may
    still be sending what an earlier event queued (they consume the same queues)."""
    count = sandbox_count(sandbox_url)
    if quiet <= 0:
        return count
    deadline = time.monotonic() + timeout
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(min(0.2, quiet))
        now = sandbox_count(sandbox_url)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return count


# -- the run ------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/sam_invoke.py",
        description="Each events/*.json through `sam local invoke` against a running "
        '`make run ARGS="--host 0.0.0.0 --dynamodb moto"`, checked against events/manifest.json '
        "(docs/sam-local.md).",
    )
    parser.add_argument("--moto-url", default=DEFAULT_MOTO_URL, help="make run's moto, from this machine")
    parser.add_argument("--sandbox-url", default=DEFAULT_SANDBOX_URL, help="make run's WhatsApp sandbox")
    parser.add_argument(
        "--docker-host",
        default=DEFAULT_DOCKER_HOST,
        help="this machine as the Lambda containers reach it (a name gets --add-host NAME:host-gateway; "
        "an IP such as 172.17.0.1 is used as is)",
    )
    parser.add_argument("--ssm-prefix", default=DEFAULT_SSM_PREFIX, help="the template's SecretsSsmPrefix")
    parser.add_argument(
        "--only", action="append", default=[], metavar="FILE", help="only this event file (repeatable)"
    )
    parser.add_argument("--sam", default=str(DEFAULT_SAM), help="the sam executable")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="the built template (sam build's)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per invocation")
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds the sandbox's count must stay unchanged before an event that is counted",
    )
    parser.add_argument(
        "--prepare",
        metavar="FILE",
        help="only put the secrets into moto's SSM and write the queue URLs to FILE, an --env-vars file for "
        "running sam local invoke or start-api by hand; invoke nothing",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print each command, and sam's log when an event fails"
    )
    return parser.parse_args(argv)


def sam_environment(
    region: str,
    moto_url: str,
    declared: set[str] | frozenset[str] = frozenset(),
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """sam's own environment.

    * moto's dummy credentials and the region (sam hands both on to the containers);
    * ``AWS_ENDPOINT_URL_STS`` = moto: ``sam local invoke`` asks STS for the account id before each run;
      this keeps that call on this machine (botocore reads ``AWS_ENDPOINT_URL_<SERVICE>``; the containers
      do not get it, the template does not declare it);
    * none of the template's own variables: sam would pass a shell value on, over the template's;
    * no telemetry."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if k not in declared
        and k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")
        and not k.startswith("AWS_ENDPOINT_URL")
    }
    env.update(MOTO_CREDENTIALS)
    env.update(
        {
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL_STS": moto_url.rstrip("/"),
            "SAM_CLI_TELEMETRY": "0",
        }
    )
    return env


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"sam-invoke: {message}", file=sys.stderr)
        return 2

    try:
        cases = select_cases(load_cases(), args.only)
    except ValueError as exc:
        return fail(str(exc))
    template_path = Path(args.template) if Path(args.template).is_absolute() else ROOT / args.template
    if not args.prepare:
        if not template_path.is_file():
            return fail(f"{args.template} not found: run `sam build` first (`make sam-invoke` does)")
        if not (os.path.isfile(args.sam) and os.access(args.sam, os.X_OK)):
            return fail(f"sam not found at {args.sam} (`make sam-invoke` creates .venv)")

    hint = 'is `make run ARGS="--host 0.0.0.0 --dynamodb moto"` running?'
    try:
        names = put_secrets(args.moto_url, args.region, args.ssm_prefix)
        queue_urls = moto_queue_urls(args.moto_url, args.region)
    except Exception as exc:  # any failure here means: no usable moto
        return fail(f"moto at {args.moto_url}: {exc}; {hint}")
    print(f"sam-invoke: {len(names)} secrets in moto's SSM under {args.ssm_prefix}", file=sys.stderr)
    # The queue references are the same in the source template and sam build's copy of it.
    template = load_template(str(template_path if template_path.is_file() else ROOT / "template.yaml"))
    env_values, missing = queue_env_vars(template, queue_urls, args.docker_host)
    if missing:
        print(f"sam-invoke: moto has no queue for {', '.join(missing)}; {hint}", file=sys.stderr)
    if args.prepare:
        Path(args.prepare).write_text(
            json.dumps({"Parameters": env_values}, indent=2) + "\n", encoding="utf-8"
        )
        print(f"sam-invoke: wrote {args.prepare} (pass it to sam local as --env-vars)", file=sys.stderr)
        return 0
    if any(case.sandbox is not None for case in cases):
        try:
            sandbox_count(args.sandbox_url)
        except Exception as exc:
            return fail(f"WhatsApp sandbox at {args.sandbox_url}: {exc}; {hint}")
    overrides = parameter_overrides(args.moto_url, args.sandbox_url, args.docker_host, args.ssm_prefix)
    env = sam_environment(args.region, args.moto_url, {name for name, _ in environment_variables(template)})

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="sam-invoke-") as tmp:
        env_vars_file = Path(tmp) / "env-vars.json"
        env_vars_file.write_text(json.dumps({"Parameters": env_values}, indent=2), encoding="utf-8")
        for case in cases:
            command = invoke_command(
                case,
                sam=args.sam,
                template=args.template,
                overrides=overrides,
                docker_host=args.docker_host,
                region=args.region,
                env_vars=str(env_vars_file),
            )
            if args.verbose:
                print("$ " + shlex.join(command), file=sys.stderr)
            before = received = None
            stderr = ""
            try:
                if case.sandbox is not None:
                    before = settled_count(args.sandbox_url, args.settle)
                done = subprocess.run(  # noqa: S603 - our own argument list, no shell
                    command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout
                )
                stderr = done.stderr
                result, error = result_of(done.returncode, done.stdout, done.stderr)
                if before is not None:
                    received = sandbox_count(args.sandbox_url) - before
            except subprocess.TimeoutExpired:
                result, error = None, f"sam local invoke did not finish within {args.timeout:g} s"
            except OSError as exc:  # sam could not be started, or the sandbox went away
                result, error = None, f"{type(exc).__name__}: {exc}"
            outcome = check(case, result, error=error, sandbox=received)
            print(outcome.line(), flush=True)
            if outcome.ok:
                passed += 1
            else:
                failed += 1
                if args.verbose and stderr.strip():
                    print(
                        "\n".join("    " + line for line in stderr.rstrip().splitlines()[-40:]),
                        file=sys.stderr,
                    )
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

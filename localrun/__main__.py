"""``python -m localrun``: run the whole system locally (see README, "Run it locally")."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from localrun.dynamo_local import DEFAULT_PORT as DYNALITE_DEFAULT_PORT
from localrun.dynamo_local import DynaliteUnavailableError
from localrun.project import LOCAL_SECRETS
from localrun.runtime import DYNAMODB_BACKENDS, LocalRuntime, PortInUseError, RuntimeConfig

# What each server's port is called in messages, and the option that sets it.
PORT_OPTIONS = {
    "api": ("HTTP API", "--api-port"),
    "sandbox": ("WhatsApp sandbox", "--sandbox-port"),
    "moto": ("moto", "--moto-port"),
    "dynamodb": ("DynamoDB, dynalite", "--dynamodb-port"),
}


def parse_args(argv: list[str] | None = None) -> RuntimeConfig:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    parser.add_argument(
        "--host",
        default=os.environ.get("JASTIPIN_HOST", "127.0.0.1"),
        help="the address the HTTP API, the WhatsApp sandbox, moto and dynalite listen on; 0.0.0.0 lets "
        "containers (sam local invoke) reach them (the URLs shown still name 127.0.0.1)",
    )
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("JASTIPIN_API_PORT", 3000)))
    parser.add_argument(
        "--sandbox-port", type=int, default=int(os.environ.get("JASTIPIN_SANDBOX_PORT", 8900))
    )
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("JASTIPIN_MOTO_PORT", 5001)))
    parser.add_argument(
        "--dynamodb",
        choices=DYNAMODB_BACKENDS,
        default=os.environ.get("JASTIPIN_DYNAMODB", "auto"),
        help="who serves DynamoDB: dynalite (fast at any table size; needs Node.js and `bash "
        "scripts/node_deps.sh`), moto (its Query reads the whole table), or auto (the default): dynalite if "
        "installed, else moto with a warning",
    )
    parser.add_argument(
        "--dynamodb-port",
        type=int,
        default=int(port) if (port := os.environ.get("JASTIPIN_DYNAMODB_PORT")) else None,
        help=f"dynalite's port (default: {DYNALITE_DEFAULT_PORT}, or any free port if that one is taken)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter override, e.g. RateLimitPerSecond=20 (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra env var for every function, e.g. CHUNK_SIZE=50 (repeatable)",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=None,
        help="seconds; overrides the main queues' 180 s so failed batches come back sooner",
    )
    parser.add_argument(
        "--whatsapp-url",
        default=os.environ.get("JASTIPIN_WHATSAPP_URL"),
        help="send to this Cloud API base URL (e.g. https://graph.facebook.com) instead of the "
        "sandbox; then also set WA_ACCESS_TOKEN, WA_PHONE_NUMBER_ID, WA_APP_SECRET, "
        "WA_VERIFY_TOKEN in the environment",
    )
    parser.add_argument("--sandbox-latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--no-status-callbacks",
        action="store_true",
        help="the sandbox does not post sent/delivered statuses back to the webhook",
    )
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    if args.whatsapp_url:
        for name in ("WA_ACCESS_TOKEN", "WA_PHONE_NUMBER_ID", "WA_APP_SECRET", "WA_VERIFY_TOKEN"):
            if name not in os.environ and name not in env:
                parser.error(f"--whatsapp-url needs {name} in the environment")
            env.setdefault(name, os.environ[name])
    return RuntimeConfig(
        host=args.host,
        api_port=args.api_port,
        sandbox_port=args.sandbox_port,
        moto_port=args.moto_port,
        dynamodb=args.dynamodb,
        dynamodb_port=args.dynamodb_port,
        parameters=dict(item.split("=", 1) for item in args.param),
        env=env,
        visibility_timeout=args.visibility_timeout,
        whatsapp_url=args.whatsapp_url,
        sandbox_latency_ms=args.sandbox_latency_ms,
        status_callbacks=not args.no_status_callbacks,
    )


def banner(runtime: LocalRuntime) -> str:
    api = runtime.api.url  # type: ignore[union-attr]
    token = runtime.config.env.get("API_TOKEN", LOCAL_SECRETS["API_TOKEN"])
    admin_token = runtime.config.env.get("ADMIN_TOKEN", LOCAL_SECRETS["ADMIN_TOKEN"])
    whatsapp = runtime.sandbox.url if runtime.sandbox else runtime.config.whatsapp_url
    lines = [
        "",
        "Jastipin messaging is running locally.",
        f"  HTTP API          {api}   (bearer token: {token})",
        f"  WhatsApp          {whatsapp}" + ("   (sandbox)" if runtime.sandbox else "   (REAL Cloud API)"),
        f"  AWS (moto)        {runtime.moto_url}   (region {runtime.config.region})",
        *dynamodb_line(runtime),
        f"  Admin page        {api}/admin/queues   (admin token: {admin_token})",
        f"  queues            {', '.join(sorted(runtime.stack.queues))}",  # type: ignore[union-attr]
    ]
    if runtime.config.host != "127.0.0.1":
        every = "   (every address of this machine)" if runtime.config.host == "0.0.0.0" else ""
        lines.append(f"  Listening on      {runtime.config.host}{every}")
    lines += [
        "",
        "Try it (another terminal):",
        f"  curl -s -X POST {api}/api/trips -H 'Authorization: Bearer {token}' \\",
        '       -d \'{"slug":"jpn25","title":"Jastip Jepang","owner_phone":"081234567890"}\'',
    ]
    if runtime.sandbox:
        lines += [
            f"  curl -s -X POST {whatsapp}/_sandbox/inbound \\",
            '       -d \'{"from":"6281311112222","text":"JOIN jpn25"}\'',
            f"  curl -s -X POST {api}/api/trips/jpn25/products -H 'Authorization: Bearer {token}' \\",
            '       -d \'{"name":"Action Figure A","price":450000}\'',
            f"  curl -s {whatsapp}/_sandbox/messages",
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def dynamodb_line(runtime: LocalRuntime) -> list[str]:
    """The banner's DynamoDB line, when DynamoDB is not moto's."""
    url = getattr(runtime, "dynamodb_url", None)
    if not url or url == runtime.moto_url:
        return []
    return [f"  DynamoDB          {url}   (dynalite; AWS_ENDPOINT_URL_DYNAMODB)"]


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM: stop everything, in order; those that follow are ignored (it takes seconds)."""
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt


def port_in_use_message(exc: PortInUseError) -> str:
    name, option = PORT_OPTIONS[exc.server]
    return (
        f"error: port {exc.port} ({name}, {option}) on {exc.host} is already in use; "
        f"stop what holds it or choose another with {option}"
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    runtime = LocalRuntime(config)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(signum, _interrupt)
    try:
        runtime.start()  # if it fails or is interrupted, it stops what it had started
        print(banner(runtime), flush=True)
        while True:
            time.sleep(3600)
    except PortInUseError as exc:
        print(port_in_use_message(exc), file=sys.stderr, flush=True)
        return 2
    except DynaliteUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("stopping...", file=sys.stderr, flush=True)
    finally:
        runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

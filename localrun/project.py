"""This project's wiring of the local runtime (the rest of localrun is generic: it runs what template.yaml
declares): the local secrets, fixed and documented so that the README's curl lines work as pasted, the path
Meta posts webhooks to, the WhatsApp sandbox pointed at it, and the environment that points every function at
the local servers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localrun.runtime import RuntimeConfig
    from localrun.sandbox import WhatsAppSandbox
    from localrun.stack import LocalStack

WEBHOOK_PATH = "/api/webhooks/whatsapp"
FUNCTIONS_DIR = Path(__file__).resolve().parents[1] / "functions"


def load_function(name: str, alias: str | None = None) -> ModuleType:
    """Import ``functions/<name>/app.py`` as Lambda does (a module of its own, not a package member). Each
    alias is a fresh import: module-level state (resolver, processors) is the alias's own."""
    spec = importlib.util.spec_from_file_location(alias or f"{name}_app", FUNCTIONS_DIR / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LOCAL_SECRETS = {
    "API_TOKEN": "local-api-token",
    "ADMIN_TOKEN": "local-admin-token",
    "WA_ACCESS_TOKEN": "local-wa-token",
    "WA_APP_SECRET": "local-app-secret",
    "WA_VERIFY_TOKEN": "local-verify-token",
}


def secrets(cfg: RuntimeConfig) -> dict[str, str]:
    """The local secrets, with any the configuration's env overrides."""
    return {**LOCAL_SECRETS, **{k: v for k, v in cfg.env.items() if k in LOCAL_SECRETS}}


def phone_number_id(cfg: RuntimeConfig, stack: LocalStack) -> str:
    return cfg.env.get("WA_PHONE_NUMBER_ID") or stack.parameters["WhatsAppPhoneNumberId"]


def whatsapp_sandbox(cfg: RuntimeConfig, stack: LocalStack, api_url: str) -> WhatsAppSandbox:
    """The WhatsApp Cloud API stand-in, posting its webhooks (signed, as Meta does) to the local API."""
    from localrun.sandbox import WhatsAppSandbox

    known = secrets(cfg)
    return WhatsAppSandbox(
        host=cfg.host,
        port=cfg.sandbox_port,
        access_token=known["WA_ACCESS_TOKEN"],
        phone_number_id=phone_number_id(cfg, stack),
        app_secret=known["WA_APP_SECRET"],
        webhook_url=api_url + WEBHOOK_PATH,
        status_callbacks=cfg.status_callbacks,
        latency_ms=cfg.sandbox_latency_ms,
        status_schedules=cfg.status_schedules,
    )


def function_env(
    cfg: RuntimeConfig, stack: LocalStack, *, whatsapp_url: str, moto_url: str, dynamodb_url: str
) -> dict[str, str]:
    """What every function gets besides the template's variables: the secrets, the WhatsApp API's and the
    AWS servers' URLs, and the configuration's own env (which wins)."""
    return {
        **secrets(cfg),
        "SECRETS_SSM_PREFIX": "",  # secrets come from the env locally
        "WA_API_BASE_URL": whatsapp_url,
        "WA_PHONE_NUMBER_ID": phone_number_id(cfg, stack),
        "AWS_ENDPOINT_URL": moto_url,
        # botocore (>= 1.31) prefers it to AWS_ENDPOINT_URL for DynamoDB (moto's URL if moto serves it)
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "AWS_DEFAULT_REGION": cfg.region,
        "AWS_REGION": cfg.region,
        **cfg.env,
    }

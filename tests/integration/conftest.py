"""Integration fixtures: a real moto server over HTTP (session), the template's resources re-created for each
test, the WhatsApp sandbox, and the functions' handlers imported as Lambda would import them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import httpx
import pytest
from moto.server import ThreadedMotoServer

from localrun.project import LOCAL_SECRETS
from localrun.runtime import free_port
from localrun.sandbox import WhatsAppSandbox
from localrun.stack import LocalStack
from tests.conftest import REGION, ROOT, settings_env
from tests.harness import load_function


@dataclass
class Ctx:
    moto_url: str
    stack: LocalStack
    sandbox: WhatsAppSandbox
    enqueue: ModuleType
    webhook: ModuleType
    sender: ModuleType
    inbound: ModuleType


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[WhatsAppSandbox]:
    with WhatsAppSandbox(
        access_token=LOCAL_SECRETS["WA_ACCESS_TOKEN"],
        phone_number_id="000000000000000",
        app_secret=LOCAL_SECRETS["WA_APP_SECRET"],
    ) as box:
        yield box


@pytest.fixture(scope="session")
def handlers(
    moto_server: str, sandbox: WhatsAppSandbox
) -> Iterator[tuple[LocalStack, dict[str, ModuleType]]]:
    # In-process moto servers share one backend: an e2e runtime that ran earlier in this session may have left
    # the template's queues behind with other attributes (e.g. a shorter visibility timeout).
    httpx.post(f"{moto_server}/moto-api/reset")
    stack = LocalStack(ROOT / "template.yaml", moto_server, REGION).create()
    saved = dict(os.environ)
    os.environ.update(
        settings_env(
            stack,
            WA_API_BASE_URL=sandbox.url,
            AWS_ENDPOINT_URL=moto_server,
            WA_PHONE_NUMBER_ID="000000000000000",
        )
    )
    from jastipin.runtime import services
    from jastipin.settings import get_settings

    get_settings.cache_clear()
    services.cache_clear()
    modules = {name: load_function(name) for name in ("enqueue", "webhook", "sender", "admin", "inbound")}
    yield stack, modules
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    services.cache_clear()


@pytest.fixture
def ctx(moto_server, sandbox, handlers) -> Ctx:
    httpx.post(f"{moto_server}/moto-api/reset")
    stack, modules = handlers
    stack = LocalStack(ROOT / "template.yaml", moto_server, REGION).create()
    sandbox.clear()
    return Ctx(
        moto_server,
        stack,
        sandbox,
        modules["enqueue"],
        modules["webhook"],
        modules["sender"],
        modules["inbound"],
    )

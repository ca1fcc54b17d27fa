"""Each function reads only its own settings: built from exactly the variables template.yaml gives it, it
starts; without one it needs, it fails naming it; a service or a secret of another function is refused by
name, not handed out half configured. (tests/unit/test_template.py checks the template's side.)"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from jastipin.outbound.jobs import BroadcastJob, JobKind
from jastipin.outbound.queues import JobQueues, QueueError
from jastipin.runtime import Services
from jastipin.settings import (
    FUNCTION_SETTINGS,
    AdminSettings,
    InboundSettings,
    SenderSettings,
    Settings,
    WebhookSettings,
)
from localrun.project import LOCAL_SECRETS
from tests.conftest import REGION


def function_env(aws: Any, function: str) -> dict[str, str]:
    env = dict(aws.functions()[function].environment)
    env.update(LOCAL_SECRETS)
    env["SECRETS_SSM_PREFIX"] = ""
    return env


@pytest.fixture
def only(aws: Any, monkeypatch: pytest.MonkeyPatch):
    """Set exactly one function's environment (the template's, plus the local secrets)."""

    def set_env(function: str, **overrides: str) -> None:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        for name in ("RATE_RUPIAH_JSON", "TEMPLATES_JSON"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {**function_env(aws, function), **overrides}.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.mark.parametrize("function", sorted(FUNCTION_SETTINGS))
def test_each_function_starts_on_exactly_its_template_variables(only, function: str) -> None:
    only(function)
    settings = FUNCTION_SETTINGS[function]()  # type: ignore[call-arg]
    assert settings.sentry_dsn == ""  # read, from the Globals


def test_a_missing_variable_is_named_at_start(only) -> None:
    only("SenderFunction")
    import os

    del os.environ["RATE_LIMIT_TABLE"]
    with pytest.raises(ValidationError, match="rate_limit_table"):
        SenderSettings()  # type: ignore[call-arg]


def test_a_function_does_not_read_what_another_needs(only) -> None:
    only("WebhookFunction")
    settings = WebhookSettings()  # type: ignore[call-arg]
    assert not hasattr(settings, "wa_access_token") and not hasattr(settings, "trips_table")
    with pytest.raises(ValidationError):  # the sender's variables are not there
        SenderSettings()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not one of WebhookSettings's"):
        settings.secret("api_token")
    assert settings.secret("wa_app_secret") == LOCAL_SECRETS["WA_APP_SECRET"]


def test_a_service_another_function_uses_is_refused_by_name(only) -> None:
    only("AdminFunction")
    services = Services(AdminSettings())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="AdminSettings does not read SenderSettings"):
        services.sender  # noqa: B018
    with pytest.raises(TypeError, match="AdminSettings does not read InboundSettings"):
        services.inbound  # noqa: B018
    assert services.queue_admin is services.queue_admin  # its own: built once


def test_the_inbound_function_queues_replies_only(aws: Any, only) -> None:
    only("InboundFunction")
    settings = InboundSettings()  # type: ignore[call-arg]
    assert not hasattr(settings, "broadcast_queue_url")
    queues = JobQueues(boto3.client("sqs", region_name=REGION), settings)
    job = BroadcastJob.model_validate(
        {
            "jobId": "bc_1",
            "kind": JobKind.BROADCAST.value,
            "tripId": "jpn25",
            "templateRef": {"name": "trip_reminder", "parameters": ["Jastip Jepang"]},
            "audience": {"activeSince": "2026-12-01T00:00:00+00:00"},
        }
    )
    with pytest.raises(QueueError, match="does not send to the broadcast queue"):
        queues.send(job)

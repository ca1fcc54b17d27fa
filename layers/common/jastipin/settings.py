"""Configuration: one pydantic-settings model read from the environment once per process.

Secrets (WhatsApp token, app secret, verify token, API tokens) come from env vars locally and from SSM
SecureString parameters under ``SECRETS_SSM_PREFIX`` on AWS, each read on first use (see ``Settings.secret``):
importing a handler or reading the settings never touches the network.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jastipin.templates import RATE_CATEGORIES, TemplateSpec

SECRET_NAMES = ("wa_access_token", "wa_app_secret", "wa_verify_token", "api_token", "admin_token")


class Settings(BaseSettings):
    """Every knob of the system; env var name = field name in upper case."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    trips_table: str
    participants_table: str
    contacts_table: str
    products_table: str
    notifications_log_table: str
    idempotency_table: str
    rate_limit_table: str
    broadcasts_table: str
    jobs_table: str
    audience_table: str  # kept broadcast-audience counts (jastipin.audience_counts)

    notifications_queue_url: str
    broadcast_queue_url: str
    proof_notify_queue_url: str
    inbound_queue_url: str = ""  # the webhook queues inbound messages here (only it needs the URL)
    # The DLQs: read by the admin API only (so not required of every function).
    notifications_dlq_url: str = ""
    broadcast_dlq_url: str = ""
    proof_notify_dlq_url: str = ""
    inbound_dlq_url: str = ""

    wa_api_base_url: str = "https://graph.facebook.com"
    wa_api_version: str = "v23.0"
    wa_phone_number_id: str
    wa_timeout_seconds: float = Field(default=10.0, gt=0)

    # Secrets: env vars locally; on AWS read from SSM (<prefix>/<name>) on first use, see ``secret``.
    secrets_ssm_prefix: str = ""
    wa_access_token: SecretStr | None = None
    wa_app_secret: SecretStr | None = None
    wa_verify_token: SecretStr | None = None
    api_token: SecretStr | None = None
    admin_token: SecretStr | None = None

    rate_limit_per_second: float = Field(default=10, ge=0)  # 0: limit lifted (benchmarks only)
    send_concurrency: int = Field(default=8, ge=1, le=64)
    chunk_size: int = Field(default=100, ge=1, le=1000)
    log_ttl_days: float = Field(default=3, gt=0)
    message_rate_rupiah: int = Field(default=35, ge=0)  # every paid template category, unless set below
    # RATE_RUPIAH_JSON: rupiah per message by pricing category, e.g. {"utility": 20, "service": 0}.
    rates_rupiah: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, validation_alias="rate_rupiah_json"
    )
    # TEMPLATES_JSON: approved templates added to (or replacing) jastipin.templates.DEFAULT_TEMPLATES.
    templates: Annotated[tuple[TemplateSpec, ...], NoDecode] = Field(
        default=(), validation_alias="templates_json"
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    sentry_dsn: str = ""

    @field_validator("rates_rupiah", "templates", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        """Both come as JSON text in one env var; empty means "no overrides"."""
        if isinstance(value, str):
            if not value.strip():
                return {} if info.field_name == "rates_rupiah" else ()
            return json.loads(value)  # malformed JSON fails at start-up, naming the variable
        return value

    @field_validator("rates_rupiah")
    @classmethod
    def _known_categories(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - RATE_CATEGORIES
        if unknown:
            raise ValueError(f"unknown pricing categories {sorted(unknown)}; use {sorted(RATE_CATEGORIES)}")
        if any(rate < 0 for rate in value.values()):
            raise ValueError("rates must not be negative")
        return value

    def secret(self, name: str) -> str:
        """The secret's value: from its env var when set, else (on AWS) from SSM on first use.

        Nothing is fetched while a handler module is imported or settings are read: a function asks SSM only
        for the secrets its code path uses, once per ``SECRET_MAX_AGE_SECONDS`` (Powertools' cache), so a
        rotated value is picked up within that time without a deploy."""
        if name not in SECRET_NAMES:
            raise ValueError(f"unknown secret {name!r}")
        value = getattr(self, name)
        if value is not None:
            return str(value.get_secret_value())
        if self.secrets_ssm_prefix:
            return fetch_ssm_secret(f"{self.secrets_ssm_prefix.rstrip('/')}/{name}")
        raise RuntimeError(f"secret {name.upper()} is not configured (env var or SECRETS_SSM_PREFIX)")


SECRET_MAX_AGE_SECONDS = 300


def fetch_ssm_secret(path: str) -> str:
    """One SecureString parameter, decrypted, cached for ``SECRET_MAX_AGE_SECONDS`` per container."""
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_parameter(path, decrypt=True, max_age=SECRET_MAX_AGE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        raise RuntimeError(f"secret {path} could not be read from SSM: {exc}") from exc
    return str(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read from the environment only: no network (secrets are fetched by ``Settings.secret`` when used)."""
    return Settings()  # type: ignore[call-arg]  # values come from the environment

"""Configuration, per function: each function reads only the environment it needs.

Each function has its settings class (``EnqueueSettings``, ``WebhookSettings``, ``InboundSettings``,
``SenderSettings``, ``AdminSettings``), declaring the variables it reads: what it needs is required, what it
does not use it does not read. They are flat classes, not mixed from groups: every class a module defines
is created at import, on every cold start (a setting several functions read has one type here, e.g.
``LogTtlDays``). ``template.yaml`` gives each function exactly those variables (its tables are those its IAM
policies open; ``tests/unit/test_template.py`` checks both ways). ``Settings`` holds every setting, for
tools, tests and the local runtime, never for a function.

Secrets (WhatsApp token, app secret, verify token, API tokens) come from env vars locally and from SSM
SecureString parameters under ``SECRETS_SSM_PREFIX`` on AWS, each read on first use (see ``Common.secret``):
importing a handler or reading the settings never touches the network.
"""

import json
from functools import lru_cache
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jastipin.templates import RATE_CATEGORIES, TemplateSpec

SECRET_NAMES = ("wa_access_token", "wa_app_secret", "wa_verify_token", "api_token", "admin_token")


class _Env(BaseSettings):
    """Env var name = field name in upper case; variables of other functions are not this one's business."""

    # defer_build: only the class a function reads is built (on its first read), not all of them at import
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, defer_build=True)


class Common(_Env):
    """What every function reads."""

    secrets_ssm_prefix: str = ""
    sentry_dsn: str = ""

    def secret(self, name: str) -> str:
        """The secret's value: from its env var when set, else (on AWS) from SSM on first use.

        Nothing is fetched while a handler module is imported or settings are read: a function asks SSM only
        for the secrets its code path uses, once per ``SECRET_MAX_AGE_SECONDS`` (Powertools' cache), so a
        rotated value is picked up within that time without a deploy. A secret of another function is an
        error, not an empty value."""
        if name not in SECRET_NAMES:
            raise ValueError(f"unknown secret {name!r}")
        if name not in type(self).model_fields:
            raise ValueError(f"secret {name!r} is not one of {type(self).__name__}'s")
        value = getattr(self, name)
        if value is not None:
            return str(value.get_secret_value())
        if self.secrets_ssm_prefix:
            return fetch_ssm_secret(f"{self.secrets_ssm_prefix.rstrip('/')}/{name}")
        raise RuntimeError(f"secret {name.upper()} is not configured (env var or SECRETS_SSM_PREFIX)")


# Shared field types: a setting read by several functions is declared in each, with one definition here.
LogTtlDays = Annotated[float, Field(gt=0)]
MaxBodyBytes = Annotated[int, Field(ge=1024)]
DEFAULT_LOG_TTL_DAYS = 3.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class LogRetention(Protocol):
    """Settings that say how long the notifications log keeps an entry."""

    @property
    def log_ttl_days(self) -> float: ...


class ReplyQueue(Protocol):
    """Settings that name the notifications queue (every function that queues jobs: replies go there)."""

    @property
    def notifications_queue_url(self) -> str: ...


class EnqueueSettings(Common):
    """functions/enqueue: trips, products, broadcasts and their estimate, proofs, the ledger."""

    trips_table: str
    products_table: str
    participants_table: str
    contacts_table: str
    audience_table: str  # kept broadcast-audience counts (jastipin.audience_counts)
    notifications_log_table: str  # the ledger reads it
    broadcasts_table: str
    notifications_queue_url: str
    broadcast_queue_url: str
    proof_notify_queue_url: str
    log_ttl_days: LogTtlDays = DEFAULT_LOG_TTL_DAYS  # the ledger says how long the log keeps entries
    max_body_bytes: MaxBodyBytes = DEFAULT_MAX_BODY_BYTES
    api_token: SecretStr | None = None
    # The template registry and the rupiah rates (jastipin.templates).
    message_rate_rupiah: int = Field(default=35, ge=0)  # every paid template category, unless set below
    # RATE_RUPIAH_JSON: rupiah per message by pricing category, e.g. {"utility": 20, "service": 0}.
    rates_rupiah: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, validation_alias="rate_rupiah_json"
    )
    # TEMPLATES_JSON: approved templates added to (or replacing) jastipin.templates.DEFAULT_TEMPLATES.
    templates: Annotated[tuple[TemplateSpec, ...], NoDecode] = Field(
        default=(), validation_alias="templates_json"
    )

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


class WebhookSettings(Common):
    """functions/webhook: queues messages and statuses; applies marketing preferences at once."""

    participants_table: str
    contacts_table: str
    audience_table: str
    inbound_queue_url: str
    max_body_bytes: MaxBodyBytes = DEFAULT_MAX_BODY_BYTES
    wa_app_secret: SecretStr | None = None
    wa_verify_token: SecretStr | None = None


class InboundSettings(Common):
    """functions/inbound: JOIN / INFO / STOP (replies queued), statuses into the log."""

    trips_table: str
    products_table: str
    participants_table: str
    contacts_table: str
    audience_table: str
    notifications_log_table: str
    idempotency_table: str
    notifications_queue_url: str  # replies go with the product updates; no other queue
    log_ttl_days: LogTtlDays = DEFAULT_LOG_TTL_DAYS


class SenderSettings(Common):
    """functions/sender: fan-outs and chunks, sent to WhatsApp under the limit, outcomes logged."""

    trips_table: str
    products_table: str
    participants_table: str
    contacts_table: str
    audience_table: str
    notifications_log_table: str
    rate_limit_table: str
    jobs_table: str  # fan-out progress
    notifications_queue_url: str
    broadcast_queue_url: str
    proof_notify_queue_url: str
    log_ttl_days: LogTtlDays = DEFAULT_LOG_TTL_DAYS
    wa_api_base_url: str = "https://graph.facebook.com"
    wa_api_version: str = "v23.0"
    wa_phone_number_id: str
    wa_timeout_seconds: float = Field(default=10.0, gt=0)
    wa_access_token: SecretStr | None = None
    rate_limit_per_second: float = Field(default=10, ge=0)  # 0: limit lifted (benchmarks only)
    # The limit's lanes (rate_limit.GlobalRateLimiter): a little fewer than the sender instances that send at
    # once at the limit (README, "Sender instance and sizing"); lowered to what keeps every second within it.
    rate_limit_lanes: int = Field(default=1, ge=1, le=50)
    send_concurrency: int = Field(default=32, ge=1, le=128)  # requests in flight per instance (README)
    chunk_size: int = Field(default=100, ge=1, le=1000)


class AdminSettings(Common):
    """functions/admin: queue counts, DLQ listing, redrive and purge, a trip's outcomes."""

    notifications_log_table: str
    jobs_table: str
    notifications_queue_url: str
    broadcast_queue_url: str
    proof_notify_queue_url: str
    inbound_queue_url: str
    notifications_dlq_url: str
    broadcast_dlq_url: str
    proof_notify_dlq_url: str
    inbound_dlq_url: str
    max_body_bytes: MaxBodyBytes = DEFAULT_MAX_BODY_BYTES
    admin_token: SecretStr | None = None


class Settings(EnqueueSettings, WebhookSettings, InboundSettings, SenderSettings, AdminSettings):
    """Every setting: for tools, tests and the local runtime (never read by a function)."""


FUNCTION_SETTINGS: dict[str, type[Common]] = {
    "EnqueueFunction": EnqueueSettings,
    "WebhookFunction": WebhookSettings,
    "InboundFunction": InboundSettings,
    "SenderFunction": SenderSettings,
    "AdminFunction": AdminSettings,
}

SECRET_MAX_AGE_SECONDS = 300


def fetch_ssm_secret(path: str) -> str:
    """One SecureString parameter, decrypted, cached for ``SECRET_MAX_AGE_SECONDS`` per container."""
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_parameter(path, decrypt=True, max_age=SECRET_MAX_AGE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        raise RuntimeError(f"secret {path} could not be read from SSM: {exc}") from exc
    return str(value)


S = TypeVar("S", bound=Common)


@lru_cache(maxsize=8)
def get_settings(kind: type[S] = Settings) -> S:  # type: ignore[assignment]
    """A function's settings (``kind``), read from the environment only: no network (secrets are fetched by
    ``Common.secret`` when used)."""
    return kind()  # values come from the environment

"""The registry of approved WhatsApp templates and the rupiah rate of each pricing category.

A template is known by name, language, category (Meta's pricing category: marketing, utility, authentication),
the number of body parameters and whether it has an image header. The default set is in code
(``DEFAULT_TEMPLATES``); ``TEMPLATES_JSON`` (a JSON list of the same objects) adds templates or replaces a
default of the same name. Every template request is checked here before anything is queued: an unknown name is
a 422 naming ``template``, a wrong number of parameters a 422 naming ``parameters``.

Rates: ``MESSAGE_RATE_RUPIAH`` (spec: Rp35 per message) is the rate of every paid category unless
``RATE_RUPIAH_JSON`` (e.g. ``{"utility": 20}``) sets that category's own; ``service`` (free-form inside the
24-hour window) costs nothing unless set there too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from jastipin.errors import Unprocessable
from jastipin.outbound.jobs import TemplateRef

if TYPE_CHECKING:
    from jastipin.settings import EnqueueSettings


class TemplateCategory(StrEnum):
    MARKETING = "marketing"
    UTILITY = "utility"
    AUTHENTICATION = "authentication"


PAID_CATEGORIES = frozenset(c.value for c in TemplateCategory)
SERVICE = "service"  # Meta's category for free-form messages inside the customer-service window
RATE_CATEGORIES = PAID_CATEGORIES | {SERVICE}


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field(default="id", min_length=2, max_length=15)
    category: TemplateCategory
    parameters: int = Field(ge=0, le=20, description="number of body parameters ({{1}}, {{2}}, ...)")
    header: Literal["none", "image"] = "none"
    description: str = ""


PROOF_TEMPLATE = "proof_received"

DEFAULT_TEMPLATES: tuple[TemplateSpec, ...] = (
    TemplateSpec(
        name="trip_reminder",
        category=TemplateCategory.MARKETING,
        parameters=1,
        description="{{1}} = trip title: a reminder that the trip is open for orders",
    ),
    TemplateSpec(
        name="product_update",
        category=TemplateCategory.UTILITY,
        parameters=2,
        description="{{1}} = trip title, {{2}} = product name (product updates outside the 24-hour window)",
    ),
    TemplateSpec(
        name=PROOF_TEMPLATE,
        category=TemplateCategory.UTILITY,
        parameters=2,
        header="image",
        description="image header = the proof; {{1}} = participant, {{2}} = order reference "
        "(proofs to a jastiper whose 24-hour window is closed)",
    ),
)


class TemplateRegistry:
    def __init__(self, specs: Iterable[TemplateSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str, *, field: str = "template") -> TemplateSpec:
        """The approved template of this name; 422 naming ``field`` if there is none."""
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self.names())
            raise Unprocessable(f"unknown template '{name[:64]}' (known: {known})", field=field)
        return spec

    def ref(
        self,
        name: str,
        parameters: Sequence[str],
        *,
        header_image_url: str | None = None,
        header_image_id: str | None = None,
        field: str = "template",
        parameters_field: str = "parameters",
    ) -> TemplateRef:
        """The template reference a job carries, after checking the name and the parameter count: every
        path that sends a template builds its reference here (broadcasts, proofs, product updates)."""
        spec = self.get(name, field=field)
        if len(parameters) != spec.parameters:
            raise Unprocessable(
                f"template '{spec.name}' takes {spec.parameters} parameter(s), got {len(parameters)}",
                field=parameters_field,
            )
        has_image = bool(header_image_url or header_image_id)
        return TemplateRef(
            name=spec.name,
            language=spec.language,
            parameters=list(parameters),
            category=spec.category.value,
            header_image_url=header_image_url if spec.header == "image" and has_image else None,
            header_image_id=header_image_id if spec.header == "image" and has_image else None,
        )


def registry(settings: EnqueueSettings) -> TemplateRegistry:
    """Defaults first, then ``TEMPLATES_JSON`` (same name: the configured one wins)."""
    return TemplateRegistry([*DEFAULT_TEMPLATES, *settings.templates])


def rate_rupiah(settings: EnqueueSettings, category: str | None) -> int:
    """Rupiah per message of a pricing category (an unknown paid category costs the default rate)."""
    category = (category or "").lower()
    if category in settings.rates_rupiah:
        return settings.rates_rupiah[category]
    return 0 if category == SERVICE else settings.message_rate_rupiah


def rates(settings: EnqueueSettings) -> dict[str, int]:
    return {category: rate_rupiah(settings, category) for category in sorted(RATE_CATEGORIES)}

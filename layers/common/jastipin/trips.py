"""Trips and products: what the Jastipin backend asks of us over HTTP (domain logic, no Lambda events)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from jastipin import texts
from jastipin.data import trips as trip_records
from jastipin.data.models import Product, Trip, WindowPolicy
from jastipin.errors import Conflict, NotFound
from jastipin.ids import new_id, normalise_slug
from jastipin.outbound.jobs import ProductUpdateJob, TemplateRef
from jastipin.outbound.queues import JobQueues
from jastipin.phones import InvalidPhoneNumber, to_e164
from jastipin.safe_text import CleanLine, CleanText
from jastipin.settings import EnqueueSettings
from jastipin.templates import registry

MAX_PRICE = 10**12


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateTripRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"}]
        }
    )

    slug: str = Field(min_length=2, max_length=40, description="trip code participants type: JOIN <slug>")
    title: CleanLine = Field(min_length=1, max_length=120)
    owner_phone: str = Field(min_length=4, max_length=32, description="jastiper's WhatsApp number")
    window_policy: WindowPolicy = WindowPolicy.SKIP
    window_template: str | None = Field(default=None, min_length=1, max_length=512)

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        slug = normalise_slug(value) if value.isascii() else None  # "\u212a".lower() is "k": no look-alikes
        if slug is None:
            raise ValueError("use 2-40 letters, digits or '-', starting with a letter or digit")
        return slug

    @field_validator("owner_phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        try:
            return to_e164(value)
        except InvalidPhoneNumber as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _template_when_policy(self) -> CreateTripRequest:
        if self.window_policy is WindowPolicy.TEMPLATE and not self.window_template:
            raise ValueError("window_template is required when window_policy is 'template'")
        return self


class NewProductRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Action Figure A", "price": 450000, "description": "Edisi terbatas"}]
        }
    )

    name: CleanLine = Field(min_length=1, max_length=200)
    # strict: JSON true/false or "450000" is not a price (lax mode would read them as 1/0 and 450000)
    price: int = Field(ge=0, le=MAX_PRICE, strict=True, description="price in rupiah")
    description: CleanText | None = Field(default=None, max_length=1000)
    image_url: HttpUrl | None = None


def trip_view(trip: Trip) -> dict[str, Any]:
    return {
        "trip_id": trip.trip_id,
        "slug": trip.trip_id,
        "title": trip.title,
        "window_policy": trip.window_policy,
        "window_template": trip.window_template,
        "created_at": trip.created_at.isoformat(),
    }


def create_trip(request: CreateTripRequest, settings: EnqueueSettings) -> Trip:
    """Store a new trip; 409 if the slug is taken, 422 if its window template is not an approved template
    taking the trip title and product name."""
    if request.window_policy is WindowPolicy.TEMPLATE and request.window_template:
        _window_template(settings, request.window_template, ["title", "product"])
    trip = Trip(
        request.slug,
        title=request.title,
        owner_phone=request.owner_phone,
        window_policy=request.window_policy.value,
        window_template=request.window_template,
        audience_counted=True,  # counted from its first member on (jastipin.audience_counts)
    )
    if not trip_records.create(trip):
        raise Conflict(f"trip slug '{request.slug}' is already taken", field="slug")
    return trip


def get_trip(trip_id: str) -> Trip:
    slug = normalise_slug(trip_id) if trip_id.isascii() else None
    if slug is None:
        raise NotFound(f"no trip '{trip_id[:64]}'", field="tripId")
    trip = trip_records.get(slug)
    if trip is None:
        raise NotFound(f"no trip '{slug}'", field="tripId")
    return trip


def upload_product(
    trip_id: str, request: NewProductRequest, queues: JobQueues, settings: EnqueueSettings
) -> tuple[Product, ProductUpdateJob]:
    """Save the product and queue one fan-out job; the participants are read behind the queue."""
    trip = get_trip(trip_id)
    template_ref = None
    if trip.window_policy == WindowPolicy.TEMPLATE and trip.window_template:
        # Checked again here: the registry is configuration, and may have changed since the trip was made.
        template_ref = _window_template(settings, trip.window_template, [trip.title, request.name])
    product = Product(
        trip.trip_id,
        new_id("prd"),
        name=request.name,
        price=request.price,
        description=request.description,
        image_url=str(request.image_url) if request.image_url else None,
    )
    trip_records.add_product(product)
    job = ProductUpdateJob(
        job_id=new_id("job"),
        trip_id=trip.trip_id,
        product_id=product.product_id,
        template="product_update",
        message=texts.product_update(trip.title, request.name, request.price, request.description),
        template_ref=template_ref,
    )
    queues.send(job)
    return product, job


def _window_template(settings: EnqueueSettings, name: str, parameters: list[str]) -> TemplateRef:
    return registry(settings).ref(
        name, parameters, field="window_template", parameters_field="window_template"
    )

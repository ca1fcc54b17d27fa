"""The trips table (key: the slug, which is the trip id) and the products table (key: trip id, a
time-sortable product id: newest last)."""

from __future__ import annotations

from decimal import Decimal

from pynamodb.exceptions import DoesNotExist

from jastipin.data._conditions import written
from jastipin.data.models import Product, Trip


def create(trip: Trip) -> bool:
    """Store a new trip; False if its slug is taken."""
    return written(lambda: trip.save(condition=Trip.trip_id.does_not_exist()))


def get(trip_id: str) -> Trip | None:
    try:
        return Trip.get(trip_id)
    except DoesNotExist:
        return None


def mark_counted(trip_id: str) -> None:
    """The trip's audience counts are kept from now on (``jastipin.audience_counts``)."""
    Trip(trip_id).update(actions=[Trip.audience_counted.set(True)])


def add_product(product: Product) -> None:
    product.save()


def latest_products(trip_id: str, limit: int = 3) -> list[tuple[str, Decimal | int | float]]:
    """The trip's newest products, newest first: (name, price)."""
    return [(p.name, p.price) for p in Product.query(trip_id, scan_index_forward=False, limit=limit)]

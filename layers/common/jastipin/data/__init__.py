"""The data layer: the only code that knows the tables' keys, indexes, conditions and update expressions.

One module per table (or record kind); domain code calls their named operations and sees domain results or
``jastipin.errors``, never PynamoDB's or botocore's exceptions. ``models`` holds the PynamoDB models;
``bind_tables`` points them at one deployment's table names (called once, where a function builds its
services: ``jastipin.runtime``)."""

from __future__ import annotations

from jastipin.data._conditions import STORE_ERRORS
from jastipin.data.models import bind_tables

__all__ = ["STORE_ERRORS", "bind_tables"]

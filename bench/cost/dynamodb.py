"""DynamoDB's billing inputs: item sizes by its documented rules, the template's tables and indexes (which
an item is written to), and the attributes an update expression changes."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return 1 + (len(digits) + 1) // 2
    if kind == "B":
        return len(data) if isinstance(data, bytes) else len(base64.b64decode(data))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: item}) for item in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(item) for item in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in data.items())
    return len(json.dumps(data))


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (its documented sizing rules)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


@dataclass
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: frozenset[str] = frozenset()


@dataclass
class TableSchema:
    name: str
    keys: tuple[str, ...]
    indexes: list[Index] = field(default_factory=list)

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self.keys}

    def projected_size(self, index: Index, item: dict[str, Any]) -> int:
        if index.projection == "ALL":
            return item_size(item)
        names = set(self.keys) | set(index.keys) | set(index.included)
        return item_size({k: v for k, v in item.items() if k in names})


def schemas(template_resources: dict[str, Any], tables: dict[str, str]) -> dict[str, TableSchema]:
    found = {}
    for logical_id, name in tables.items():
        props = template_resources[logical_id]["Properties"]
        schema = TableSchema(name, tuple(k["AttributeName"] for k in props["KeySchema"]))
        for gsi in props.get("GlobalSecondaryIndexes", []):
            projection = gsi["Projection"]
            schema.indexes.append(
                Index(
                    gsi["IndexName"],
                    tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                    projection["ProjectionType"],
                    frozenset(projection.get("NonKeyAttributes", [])),
                )
            )
        found[name] = schema
    return found


_KEYWORDS = {"SET", "REMOVE", "ADD", "DELETE", "if_not_exists", "list_append"}


def updated_attributes(params: dict[str, Any]) -> set[str]:
    expression = re.sub(r":\w+", "", params.get("UpdateExpression", ""))
    names = params.get("ExpressionAttributeNames", {})
    found = {names.get(token, token) for token in re.findall(r"#\w+", expression)}
    found |= {w for w in re.findall(r"(?<![#\w])[A-Za-z_]\w*", expression) if w not in _KEYWORDS}
    return found

"""Load a CloudFormation/SAM YAML template into plain dicts.

CloudFormation's short tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`, `!If [...]`) become their long forms
(`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, `{"Fn::Sub": ...}`, `{"Fn::If": [...]}`), so callers see
exactly what CloudFormation sees. Like CloudFormation, dates such as `2010-09-09` stay strings.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

# Short tag -> long key. `!Ref` and `!Condition` have no "Fn::" prefix.
_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "And",
            "Base64",
            "Cidr",
            "Equals",
            "FindInMap",
            "GetAtt",
            "GetAZs",
            "If",
            "ImportValue",
            "Join",
            "Length",
            "Not",
            "Or",
            "Select",
            "Split",
            "Sub",
            "ToJsonString",
            "Transform",
        )
    },
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short intrinsic-function tags."""


# CloudFormation reads unquoted dates as strings; PyYAML would turn them into datetime.date.
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = _TAGS.get(tag_suffix)
    if key is None:
        raise yaml.constructor.ConstructorError(None, None, f"unknown tag !{tag_suffix}", node.start_mark)
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if key == "Fn::GetAtt":  # "Resource.Attribute" (the attribute may itself contain dots)
            resource, _, attribute = value.partition(".")
            value = [resource, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse the template at `path`; intrinsic functions come back in their long (JSON) form."""
    with open(path, encoding="utf-8") as stream:
        template = yaml.load(stream, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(template, dict):
        raise ValueError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return template

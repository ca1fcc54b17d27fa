"""``docs/openapi.yaml`` from the code: the OpenAPI parts of the API functions (``functions/enqueue`` and
``functions/admin``, as Powertools generates them from their routes' models) merged by
``jastipin.openapi.document``.

    python -m localrun.openapi --write   # after changing a route or a model
    python -m localrun.openapi --check   # exit 1 when the committed document is not what the code generates

Importing a handler reads no setting and touches no network, so this runs without any environment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from localrun.project import load_function

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "openapi.yaml"
FUNCTIONS = ("enqueue", "admin")  # the functions behind the documented routes
HEADER = "# Generated from the code by `python -m localrun.openapi --write`: do not edit by hand.\n"


def generate() -> dict[str, Any]:
    from jastipin.openapi import document

    return document(*(load_function(name, f"openapi_{name}_app").app for name in FUNCTIONS))


class _Dumper(yaml.SafeDumper):
    """Text of several lines as a literal block, as a person would write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true", help="fail when the committed document is stale")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.write:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    if DOC.read_text(encoding="utf-8") != text:
        print(f"{DOC.relative_to(ROOT)} is not what the code generates: python -m localrun.openapi --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Type checking is part of the test run: mypy (configured in pyproject.toml), strict on the layer, and in
its default mode on each function's handler (one at a time: every handler is a module named ``app``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file())


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_the_layer_type_checks_strictly() -> None:
    result = mypy("-p", "jastipin")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_handler_type_checks(function: str) -> None:
    result = mypy(f"functions/{function}/app.py")
    assert result.returncode == 0, result.stdout + result.stderr

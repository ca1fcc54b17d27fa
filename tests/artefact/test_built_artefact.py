"""The artefact is the test subject: ``sam build``'s output, loaded the way Lambda loads it.

The layer is built from its lock (``layers/common/requirements.txt``) by ``sam build``; each function is then
imported in a bare interpreter that sees only its own directory, the built layer and the standard library
(``localrun/artefact_runner.py``), and invoked with every file in ``events/`` against a local moto server and
the WhatsApp sandbox, in the order and with the answers ``events/manifest.json`` gives. Secrets come from
moto's SSM, as on AWS. A runtime dependency that only the dev venv provides fails here."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun import artefact
from localrun.events import load_cases
from localrun.runtime import LocalRuntime, free_port

ROOT = Path(__file__).resolve().parents[2]
LAYER_IN = ROOT / "layers" / "common" / "requirements.in"
FUNCTIONS = ("EnqueueFunction", "WebhookFunction", "InboundFunction", "SenderFunction", "AdminFunction")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("sam-build") / "build"
    artefact.build(target)
    return target


@pytest.fixture(scope="module")
def runtime(build_dir: Path) -> Iterator[LocalRuntime]:
    rt = artefact.start_runtime(build_dir / "template.yaml")
    try:
        yield rt
    finally:
        rt.stop()


def test_the_lock_pins_every_direct_dependency_as_requirements_in_does() -> None:
    lock = artefact.read_lock()
    for line in LAYER_IN.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert lock.get(artefact.normalise(name.split("[", 1)[0])) == version, line
    assert {"boto3", "botocore", "aws-xray-sdk"} <= set(lock)  # shipped, not taken from the Lambda runtime


def test_the_dev_venv_runs_exactly_the_locked_versions() -> None:
    wrong = {
        name: (version, importlib.metadata.version(name))
        for name, version in artefact.read_lock().items()
        if importlib.metadata.version(name) != version
    }
    assert not wrong, f"(locked, installed) differ: {wrong}; run scripts/venv.sh"


def test_the_built_layer_ships_exactly_the_lock(build_dir: Path) -> None:
    shipped = artefact.shipped_versions(build_dir / "CommonLayer" / "python")
    assert shipped == artefact.read_lock()
    assert (build_dir / "CommonLayer" / "python" / "jastipin" / "__init__.py").exists()


def test_each_function_ships_only_its_handler_code(build_dir: Path) -> None:
    for name in FUNCTIONS:
        files = {p.name for p in (build_dir / name).iterdir() if p.name != "__pycache__"}
        assert "app.py" in files, name
        assert not any(f.endswith(".dist-info") for f in files), f"{name} bundles packages: {files}"


def test_our_code_ships_compiled_for_the_runtime(build_dir: Path) -> None:
    """Lambda's code directories are read-only: what ships without a .pyc is compiled on every cold start."""
    import importlib.util

    sources = [*(build_dir / "CommonLayer" / "python").rglob("*.py")]  # ours and every dependency
    sources += [build_dir / name / "app.py" for name in FUNCTIONS]
    assert len(sources) > 1000
    for source in sources:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER, source  # this interpreter's, i.e. 3.12's
        assert int.from_bytes(header[4:8], "little") == 0b01, source  # hash-based, not checked against mtime


def test_the_bare_interpreter_sees_nothing_of_the_dev_venv(build_dir: Path) -> None:
    probe = "import importlib.util, sys; print(importlib.util.find_spec('moto') is None, sys.flags.isolated)"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "1"]


def test_handlers_import_without_any_network(runtime: LocalRuntime, build_dir: Path, tmp_path: Path) -> None:
    """AWS and WhatsApp point at a closed port and secrets must come from SSM: if an import fetched
    anything, the audit hook would see the connection (and the import would fail)."""
    assert runtime.stack is not None
    closed = f"http://127.0.0.1:{free_port()}"
    for name, spec in runtime.stack.functions().items():
        env = artefact.function_env(runtime, spec)
        env.update({"AWS_ENDPOINT_URL": closed, "WA_API_BASE_URL": closed})
        function = artefact.BuiltFunction(
            spec, build_dir / "CommonLayer" / "python", env, tmp_path / f"{name}.log"
        )
        try:
            assert function.import_connects == [], name
        finally:
            function.close()


def test_every_sample_event_through_the_built_handlers(
    runtime: LocalRuntime, build_dir: Path, tmp_path: Path
) -> None:
    run = artefact.run_events(runtime, build_dir, tmp_path)
    report = "\n".join(o.line() for o in run.outcomes)
    print(report)
    assert [o.case.file for o in run.outcomes] == [c.file for c in load_cases()]
    assert run.ok, report + "\n(function logs: " + str(tmp_path) + ")"
    assert set(run.import_seconds) == set(FUNCTIONS)
    assert all(connects == [] for connects in run.import_connects.values()), run.import_connects


def test_a_missing_runtime_dependency_fails(runtime: LocalRuntime, build_dir: Path, tmp_path: Path) -> None:
    """The check above can fail: the same build without aws-xray-sdk (which Tracer imports) is caught."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(build_dir, broken, symlinks=True)
    for path in (broken / "CommonLayer" / "python").glob("aws_xray_sdk*"):
        shutil.rmtree(path)
    cases = [c for c in load_cases() if c.file == "create_trip.json"]
    run = artefact.run_events(runtime, broken, tmp_path, cases)
    assert not run.ok
    assert "No module named 'aws_xray_sdk'" in run.outcomes[0].line()

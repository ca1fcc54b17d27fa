"""The built artefact as the test subject: ``sam build``'s output, each function loaded as Lambda loads it.

``build()`` runs ``sam build`` (the layer's lock installed into ``CommonLayer/python``, each function's code
copied). ``BuiltFunction`` starts one function of that output in a bare interpreter
(``localrun/artefact_runner.py``: only the function's directory, the layer and the standard library on
``sys.path``) with the environment the template gives it, pointed at a local moto server and WhatsApp
sandbox. Secrets are not in that environment: they are SecureString parameters in moto's SSM, read the way
production reads them. ``run_events`` sends every sample event of ``events/manifest.json`` through it and
checks each answer (``localrun.events``).

Used by ``tests/artefact/`` (part of ``make test``) and ``bench/import_bench.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrun.events import EventCase, Outcome, check, load_cases
from localrun.project import LOCAL_SECRETS
from localrun.runtime import LocalRuntime, RuntimeConfig, free_port
from localrun.stack import FunctionSpec

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "artefact_runner.py"
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "build"
SSM_PREFIX = "/jastipin/artefact"
LOCK = ROOT / "layers" / "common" / "requirements.txt"
# Where `sam build` finds the Lambda runtime's Python (pyenv: the bare shim is not enough).
SAM_BUILD_ENV = {"PYENV_VERSION": os.environ.get("PYENV_VERSION", "3.12.1:3.11.7"), "SAM_CLI_TELEMETRY": "0"}


class BuildError(RuntimeError):
    pass


def sam_binary() -> str:
    local = Path(sys.executable).parent / "sam"
    return str(local) if local.exists() else (shutil.which("sam") or "sam")


def build(build_dir: Path = DEFAULT_BUILD_DIR, template: Path = ROOT / "template.yaml") -> Path:
    """``sam build`` into ``build_dir``, then compile its Python files; returns the built template.

    Lambda cannot write ``__pycache__`` (its code directories are read-only), so a module shipped without its
    compiled form is compiled again on every cold start: the build compiles everything with the build's
    Python (3.12, the runtime's), as unchecked-hash ``.pyc`` files (valid whatever the files' timestamps after
    zipping). Raises BuildError with sam's output."""
    cmd = [sam_binary(), "build", "--template-file", str(template), "--build-dir", str(build_dir)]
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, **SAM_BUILD_ENV},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"sam build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    compile_tree(build_dir)
    return build_dir / "template.yaml"


def compile_tree(build_dir: Path) -> None:
    import compileall
    import py_compile

    if sys.version_info[:2] != (3, 12):
        found = sys.version.split()[0]
        raise BuildError(f"the build compiles for Lambda's python3.12: run it with Python 3.12, not {found}")
    ok = compileall.compile_dir(
        build_dir,
        quiet=1,
        force=True,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise BuildError(f"compiling {build_dir} failed")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``name==version`` lines of the lock, names normalised as PEP 503 does (lower case, ``-``)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def shipped_versions(layer_python: Path) -> dict[str, str]:
    """Every distribution installed in the built layer, from its ``.dist-info`` METADATA."""
    found = {}
    for info in layer_python.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        headers = dict(line.split(": ", 1) for line in meta.split("\n\n", 1)[0].splitlines() if ": " in line)
        found[normalise(headers["Name"])] = headers["Version"]
    return found


def put_secrets(ssm: Any, prefix: str = SSM_PREFIX) -> None:
    """The local secrets as SecureString parameters ``<prefix>/<name>``, as docs/deploy.md creates them."""
    for env_name, value in LOCAL_SECRETS.items():
        ssm.put_parameter(
            Name=f"{prefix}/{env_name.lower()}", Value=value, Type="SecureString", Overwrite=True
        )


def function_env(runtime: LocalRuntime, spec: FunctionSpec, ssm_prefix: str = SSM_PREFIX) -> dict[str, str]:
    """What Lambda's environment would hold: the template's variables (resolved against the local stack)
    plus the runtime's own; AWS and WhatsApp point at the local moto server and sandbox. No secret."""
    assert runtime.sandbox is not None and runtime.stack is not None
    region = runtime.config.region
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TZ", "TMPDIR") if k in os.environ}
    env.update(spec.environment)
    env.update(
        {
            "AWS_ENDPOINT_URL": runtime.moto_url,
            "AWS_ENDPOINT_URL_DYNAMODB": runtime.dynamodb_url,  # dynalite, or moto's URL without Node
            "WA_API_BASE_URL": runtime.sandbox.url,
            "SECRETS_SSM_PREFIX": ssm_prefix,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "LAMBDA_TASK_ROOT": str(spec.code_uri),
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",  # UDP, fire and forget, as on Lambda
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class BuiltFunction:
    """One function of the build output in its own bare interpreter; invoke it with an event file."""

    def __init__(self, spec: FunctionSpec, layer_python: Path, env: dict[str, str], log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-I",  # isolated: no PYTHON* env vars (PYTHONDONTWRITEBYTECODE too), no user site
                "-S",  # no site-packages
                "-B",  # writes no __pycache__: Lambda's code directories are read-only
                str(RUNNER),
                str(spec.code_uri),
                str(layer_python),
                spec.handler,
                str(spec.timeout),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        first = self._read_line(60)
        if "init_error" in first:
            self.close()
            raise BuildError(f"{spec.logical_id}: import failed\n{first['init_error']}")
        self.import_seconds = float(first["import_seconds"])
        self.import_connects: list[str] = first["import_connects"]

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            code = self.process.poll()
            raise BuildError(
                f"{self.spec.logical_id}: no answer in {timeout:.0f}s (exit {code}); see {self.log_path}"
            )
        return json.loads(box[0])

    def invoke(self, event_path: Path) -> tuple[Any, str | None]:
        """(result, None) or (None, the traceback) of one invocation."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"event": str(event_path)}) + "\n")
        self.process.stdin.flush()
        reply = self._read_line(self.spec.timeout + 5)
        return reply.get("result"), reply.get("error")

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()


@dataclass
class ArtefactRun:
    outcomes: list[Outcome] = field(default_factory=list)
    import_seconds: dict[str, float] = field(default_factory=dict)
    import_connects: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def start_runtime(built_template: Path) -> LocalRuntime:
    """moto (with the built template's queues and tables, and the secrets in SSM) and the WhatsApp sandbox;
    no queue is polled (only the artefact handles events) and the sandbox posts no status callbacks."""
    runtime = LocalRuntime(
        RuntimeConfig(
            api_port=free_port(),
            sandbox_port=free_port(),
            moto_port=free_port(),
            template=built_template,
            enable_pollers=False,
            status_callbacks=False,
        )
    )
    runtime.start()
    put_secrets(runtime.client("ssm"))
    return runtime


def run_events(
    runtime: LocalRuntime, build_dir: Path, log_dir: Path, cases: list[EventCase] | None = None
) -> ArtefactRun:
    """Every case in order, each through its function of the build output; one outcome per case."""
    assert runtime.stack is not None and runtime.sandbox is not None
    cases = load_cases() if cases is None else cases
    specs = runtime.stack.functions()
    layer_python = build_dir / "CommonLayer" / "python"
    run = ArtefactRun()
    functions: dict[str, BuiltFunction] = {}
    init_errors: dict[str, str] = {}
    try:
        for case in cases:
            if case.function not in functions and case.function not in init_errors:
                spec = specs[case.function]
                try:
                    functions[case.function] = BuiltFunction(
                        spec, layer_python, function_env(runtime, spec), log_dir / f"{case.function}.log"
                    )
                    run.import_seconds[case.function] = functions[case.function].import_seconds
                    run.import_connects[case.function] = functions[case.function].import_connects
                except BuildError as exc:
                    init_errors[case.function] = str(exc)
            if case.function in init_errors:
                run.outcomes.append(check(case, None, f"init failed: {init_errors[case.function]}"))
                continue
            before = len(runtime.sandbox.messages())
            result, error = functions[case.function].invoke(case.path)
            sent = _settled_count(runtime) - before if case.sandbox is not None else None
            run.outcomes.append(check(case, result, error, sandbox=sent))
    finally:
        for function in functions.values():
            function.close()
    return run


def _settled_count(runtime: LocalRuntime, settle: float = 0.2) -> int:
    """The sandbox's message count once it stops changing (a send is counted when its response is written)."""
    assert runtime.sandbox is not None
    count = len(runtime.sandbox.messages())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = len(runtime.sandbox.messages())
        if now == count:
            return now
        count = now
    return count


def main(argv: list[str] | None = None) -> int:
    """``python -m localrun.artefact [BUILD_DIR]``: what ``make build`` runs (``sam build`` + compile)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m localrun.artefact", description=main.__doc__)
    parser.add_argument("build_dir", nargs="?", type=Path, default=DEFAULT_BUILD_DIR)
    args = parser.parse_args(argv)
    try:
        template = build(args.build_dir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in (args.build_dir / "CommonLayer").rglob("*") if p.is_file())
    print(f"built {template} (layer {size / 1e6:.1f} MB unzipped; Lambda's limit 250 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

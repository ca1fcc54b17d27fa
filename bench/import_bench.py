"""Cold import of each function from the built artefact against a bare ``import boto3``; the layer's size.

    python -m bench.import_bench [--rounds 15] [--build-dir DIR] [--out bench/results/imports.md]

Builds the artefact (``sam build`` into a temporary directory unless ``--build-dir`` names an existing build),
then, round after round, starts fresh bare interpreters (``-I -S``: only the function's directory, the built
layer and the standard library on ``sys.path``, as on Lambda): one imports the function's handler module
(``localrun/artefact_runner.py``), one runs a bare ``import boto3`` from the same layer. The ratio of the
medians is the figure (the same interpreter, the same machine, interleaved, so machine noise hits both).
Also: the built layer's size unzipped (Lambda's limit for a function and its layers: 250 MB) and zipped."""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine
from localrun import artefact

BOTO3_PROBE = (
    "import sys, time; sys.path[:0] = [sys.argv[1]]; t = time.perf_counter(); import boto3; "
    "print(time.perf_counter() - t)"
)


def boto3_import_seconds(layer: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOTO3_PROBE, str(layer)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    return float(out.stdout.strip())


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes unzipped, bytes as a deflated zip) of every file under path."""
    files = [p for p in path.rglob("*") if p.is_file()]
    raw = sum(p.stat().st_size for p in files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(path))
    return raw, buffer.tell()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--build-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/imports.md"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        build_dir = args.build_dir or Path(tmp) / "build"
        if not (build_dir / "template.yaml").exists():
            started = time.monotonic()
            artefact.build(build_dir)
            print(f"sam build: {time.monotonic() - started:.1f} s", file=sys.stderr)
        layer = build_dir / "CommonLayer" / "python"
        runtime = artefact.start_runtime(build_dir / "template.yaml")  # only for the template's env vars
        try:
            assert runtime.stack is not None
            specs = runtime.stack.functions()
            envs = {name: artefact.function_env(runtime, spec) for name, spec in specs.items()}
            imports: dict[str, list[float]] = {name: [] for name in specs}
            bare: list[float] = []
            for _ in range(args.rounds):
                for name, spec in specs.items():
                    bare.append(boto3_import_seconds(layer))
                    function = artefact.BuiltFunction(spec, layer, envs[name], Path(tmp) / f"{name}.log")
                    imports[name].append(function.import_seconds)
                    function.close()
        finally:
            runtime.stop()
        raw, zipped = tree_size(build_dir / "CommonLayer")

    boto3_median = statistics.median(bare)
    lines = [
        f"Import benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}.",
        f"`python -m bench.import_bench --rounds {args.rounds}`: each function's handler module imported "
        "in a fresh bare interpreter from the `sam build` output, interleaved with a bare `import boto3` "
        f"from the same layer ({args.rounds} rounds; medians).",
        "",
        "| function | handler import (median) | ÷ bare `import boto3` |",
        "|---|---|---|",
    ]
    for name, values in imports.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median * 1000:.0f} ms | **{median / boto3_median:.2f}** |")
    lines += [
        f"| (bare `import boto3`) | {boto3_median * 1000:.0f} ms | 1.00 |",
        "",
        f"Built layer (`CommonLayer`): **{raw / 1e6:.1f} MB** unzipped (Lambda's limit: 250 MB for a "
        f"function and its layers), {zipped / 1e6:.1f} MB zipped.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold import of each function from the built artefact against a bare ``import boto3``; the layer's size.

    python -m bench.import_bench [--rounds 15] [--build-dir DIR] [--out bench/results/imports.md]
    python -m bench.import_bench --baseline DIR [--rounds 15] [--out FILE]


Builds the artefact as ``make build`` does (``sam build``, then every Python file compiled: Lambda's code
directories are read-only, so whatever ships without its ``.pyc`` is compiled again on every cold start), and
a copy without any ``__pycache__``, which is what a plain ``sam build`` ships. Then, round after round and
build after build, it starts fresh bare interpreters (``-I -S -B``: only the function's directory, the built
layer and the standard library on ``sys.path``; nothing written, as on Lambda): one imports the function's
handler module (``localrun/artefact_runner.py``), one runs a bare ``import boto3`` from the same layer. The
ratio of the medians is the figure; interleaving puts the machine's noise on both sides. Also: the built
layer's size unzipped (Lambda's limit for a function and its layers: 250 MB) and zipped.

``--baseline DIR`` compares against another revision's ``make build`` output instead of the plain copy
(e.g. ``git worktree add /tmp/base <rev>``, then ``python -m localrun.artefact /tmp/base-build`` in it):
both are measured in the same interleaved rounds, so a refactor's effect on cold start is read as one ratio
per function, not as two runs on a machine whose load changed in between."""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
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
        [sys.executable, "-I", "-S", "-B", "-c", BOTO3_PROBE, str(layer)],
        capture_output=True,
        text=True,
        check=True,
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


def strip_bytecode(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True)
    for cache in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--build-dir", type=Path, help="an existing `make build` output (default: build anew)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/imports.md"))
    parser.add_argument(
        "--baseline", type=Path, help="another revision's `make build` output to compare with"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        compiled = args.build_dir or Path(tmp) / "build"
        if not (compiled / "template.yaml").exists():
            started = time.monotonic()
            artefact.build(compiled)
            print(f"build: {time.monotonic() - started:.1f} s", file=sys.stderr)
        if args.baseline:
            builds = {"compiled": compiled, "baseline": args.baseline}
        else:
            plain = Path(tmp) / "plain"
            strip_bytecode(compiled, plain)
            builds = {"compiled": compiled, "plain": plain}
        runtime = artefact.start_runtime(compiled / "template.yaml")  # only for the template's env vars
        try:
            assert runtime.stack is not None
            specs = runtime.stack.functions()
            envs = {name: artefact.function_env(runtime, spec) for name, spec in specs.items()}
            imports = {b: {name: [] for name in specs} for b in builds}  # type: dict[str, dict[str, list[float]]]
            bare: dict[str, list[float]] = {b: [] for b in builds}
            for _ in range(args.rounds):
                for name in specs:
                    for label, build_dir in builds.items():
                        layer = build_dir / "CommonLayer" / "python"
                        spec = replace(specs[name], code_uri=build_dir / name)
                        bare[label].append(boto3_import_seconds(layer))
                        function = artefact.BuiltFunction(spec, layer, envs[name], Path(tmp) / f"{name}.log")
                        imports[label][name].append(function.import_seconds)
                        function.close()
        finally:
            runtime.stop()
        sizes = {label: tree_size(build_dir / "CommonLayer") for label, build_dir in builds.items()}

    med = {label: statistics.median(values) for label, values in bare.items()}
    if args.baseline:
        return _write(args.out, _comparison(args, imports, med, sizes))
    lines = [
        f"Import benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}.",
        f"`python -m bench.import_bench --rounds {args.rounds}`: each function's handler module imported in "
        "a fresh bare interpreter that writes no bytecode (as on Lambda), interleaved with a bare "
        f"`import boto3` from the same layer; {args.rounds} rounds, medians. *Shipped*: `make build` "
        "(`sam build`, then every file compiled); *plain*: the same without `.pyc` files, as a plain "
        "`sam build` ships it.",
        "",
        "| function | shipped: import | ÷ bare `import boto3` | plain `sam build`: import "
        "| ÷ bare `import boto3` |",
        "|---|---|---|---|---|",
    ]
    for name in imports["compiled"]:
        a, b = statistics.median(imports["compiled"][name]), statistics.median(imports["plain"][name])
        lines.append(
            f"| {name} | {a * 1000:.0f} ms | **{a / med['compiled']:.2f}** | {b * 1000:.0f} ms "
            f"| {b / med['plain']:.2f} |"
        )
    lines += [
        f"| (bare `import boto3`) | {med['compiled'] * 1000:.0f} ms | 1.00 "
        f"| {med['plain'] * 1000:.0f} ms | 1.00 |",
        "",
        "Built layer (`CommonLayer`), Lambda's limit 250 MB unzipped for a function and its layers: shipped "
        f"**{sizes['compiled'][0] / 1e6:.1f} MB** unzipped ({sizes['compiled'][1] / 1e6:.1f} MB zipped); "
        f"plain {sizes['plain'][0] / 1e6:.1f} MB ({sizes['plain'][1] / 1e6:.1f} MB zipped).",
    ]
    return _write(args.out, lines)


def _comparison(
    args: argparse.Namespace,
    imports: dict[str, dict[str, list[float]]],
    med: dict[str, float],
    sizes: dict[str, tuple[int, int]],
) -> list[str]:
    lines = [
        f"Import benchmark against a baseline build, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}.",
        f"`python -m bench.import_bench --baseline {args.baseline} --rounds {args.rounds}`: each function's "
        "handler module imported in a fresh bare interpreter (no bytecode written, as on Lambda) from this "
        "build and from the baseline's, interleaved with a bare `import boto3`; "
        f"{args.rounds} rounds, medians.",
        "",
        "| function | this build | ÷ `import boto3` | baseline | ÷ `import boto3` | this ÷ baseline |",
        "|---|---|---|---|---|---|",
    ]
    for name in imports["compiled"]:
        a, b = statistics.median(imports["compiled"][name]), statistics.median(imports["baseline"][name])
        ra, rb = a / med["compiled"], b / med["baseline"]
        lines.append(
            f"| {name} | {a * 1000:.0f} ms | {ra:.2f} | {b * 1000:.0f} ms | {rb:.2f} | **{ra / rb:.2f}** |"
        )
    lines += [
        "",
        f"Layer: this build {sizes['compiled'][0] / 1e6:.1f} MB unzipped, the baseline "
        f"{sizes['baseline'][0] / 1e6:.1f} MB.",
    ]
    return lines


def _write(out: Path, lines: list[str]) -> int:
    report = "\n".join(lines) + "\n"
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

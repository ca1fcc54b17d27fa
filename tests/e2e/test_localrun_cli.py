"""``python -m localrun`` as a user runs it: a port that is taken is named at once, Ctrl-C and SIGTERM stop
everything cleanly, and ``--host`` reaches the runtime's configuration."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from localrun import runtime as runtime_module
from localrun.__main__ import PORT_OPTIONS, banner, parse_args
from localrun.moto_server import MotoProcess
from localrun.runtime import LocalRuntime, PortInUseError, RuntimeConfig, check_ports, free_port
from tests.e2e.helpers import API_AUTH

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'common'}:{ROOT}"}
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - parsed and printed here, never bound
TRIP = {"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"}


def launch(ports: dict[str, int]) -> subprocess.Popen:
    """``python -m localrun`` on these ports, in a session (and process group) of its own."""
    args = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    return subprocess.Popen(
        [sys.executable, "-m", "localrun", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in PORT_OPTIONS}


def live(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids = [int(child) for child in children.read_text().split()]
        except OSError:
            continue
        for child in pids:
            found |= {child} | descendants(child)
    return found


def sigint_blocked_or_ignored(pid: int) -> bool:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    masks = int(status["SigBlk"], 16) | int(status["SigIgn"], 16)
    return bool(masks & 1 << (signal.SIGINT - 1))


def group(pgid: int) -> set[int]:
    """The live processes of process group ``pgid``."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(stat.parent.name))
    return members


def assert_all_gone(pids: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while {pid for pid in pids if live(pid)} and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in pids if live(pid)}
    assert not left, f"processes left behind: {left}"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# -- a port that is taken -----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", sorted(PORT_OPTIONS))
def test_a_taken_port_is_named_at_once(server: str, taken_port: int) -> None:
    ports = {**free_ports(), server: taken_port}
    started = time.monotonic()
    process = launch(ports)
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 2
    name, option = PORT_OPTIONS[server]
    assert process.returncode == 2
    assert stderr == (
        f"error: port {taken_port} ({name}, {option}) on 127.0.0.1 is already in use; "
        f"stop what holds it or choose another with {option}\n"
    )
    assert stdout == ""
    assert_all_gone(group(process.pid))


def test_one_port_for_two_servers_is_named() -> None:
    port = free_port()
    process = launch({**free_ports(), "api": port, "moto": port})
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.startswith(f"error: port {port} (HTTP API, --api-port) on 127.0.0.1 is already in use")


def test_moto_reports_a_taken_port_at_once(taken_port: int) -> None:
    """Another process may take the port between the check and moto's own bind: moto says so at once."""
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        MotoProcess(port=taken_port).start()
    assert time.monotonic() - started < 2
    assert failure.value.errno == errno.EADDRINUSE
    assert str(taken_port) in str(failure.value)
    assert not [p for p in multiprocessing.active_children() if p.name == "moto"]


@pytest.mark.parametrize("server", sorted(PORT_OPTIONS))
def test_a_port_taken_after_the_check_is_named(
    server: str, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each server's own bind failure is a PortInUseError too, and what had started is stopped."""
    monkeypatch.setattr(runtime_module, "check_ports", lambda host, ports: None)
    ports = {**free_ports(), server: taken_port}
    config = RuntimeConfig(
        api_port=ports["api"],
        sandbox_port=ports["sandbox"],
        moto_port=ports["moto"],
        dynamodb_port=ports["dynamodb"],
    )
    children = set(multiprocessing.active_children())
    with pytest.raises(PortInUseError) as failure:
        LocalRuntime(config).start()
    assert (failure.value.server, failure.value.host, failure.value.port) == (server, "127.0.0.1", taken_port)
    assert set(multiprocessing.active_children()) == children  # moto, if it had started, is stopped
    del ports[server]
    check_ports("127.0.0.1", ports)  # and the servers that had started have let go of their ports


# -- stopping ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_everything_cleanly(signum: int) -> None:
    ports = free_ports()
    process = launch(ports)
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            if "Jastipin messaging is running locally." in line:
                break
        else:
            raise AssertionError(f"no banner; stderr: {process.communicate(timeout=10)[1]}")
        response = httpx.post(f"http://127.0.0.1:{ports['api']}/api/trips", json=TRIP, headers=API_AUTH)
        assert response.status_code == 201, response.text
        children = descendants(process.pid)
        assert len(children) >= 2, children  # moto and the API function's worker, at least
        for child in children:  # Ctrl-C is the main process's to act on: they block or ignore SIGINT, or
            # (dynalite's Node, which always catches SIGINT itself) live in a process group of their own
            assert sigint_blocked_or_ignored(child) or os.getpgid(child) != process.pid, Path(
                f"/proc/{child}/cmdline"
            ).read_bytes()
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # Ctrl-C at a terminal reaches the whole process group
        else:
            process.send_signal(signum)  # `kill` reaches the one process
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr + stdout, stderr
    assert_all_gone(children | group(process.pid))


def test_moto_ends_with_its_parent() -> None:
    """Even a parent killed outright (so never stopping it) does not leave the moto process behind."""
    script = (
        "import time; from localrun.moto_server import MotoProcess; "
        f"moto = MotoProcess(port={free_port()}).start(); print(moto.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        moto_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert live(moto_pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
    assert_all_gone({moto_pid})


# -- --host ------------------------------------------------------------------------------------------------


def test_host_defaults_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JASTIPIN_HOST", raising=False)
    assert parse_args([]).host == "127.0.0.1" == RuntimeConfig().host


def test_host_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JASTIPIN_HOST", EVERY_ADDRESS)
    assert parse_args([]).host == EVERY_ADDRESS
    assert parse_args(["--host", "127.0.0.1"]).host == "127.0.0.1"
    monkeypatch.delenv("JASTIPIN_HOST")
    config = parse_args(["--host", EVERY_ADDRESS, "--api-port", "3001"])
    assert (config.host, config.api_port) == (EVERY_ADDRESS, 3001)


def test_urls_name_loopback_when_listening_on_every_address() -> None:
    assert MotoProcess(port=5001, host=EVERY_ADDRESS).url == "http://127.0.0.1:5001"
    assert MotoProcess(port=5001).url == "http://127.0.0.1:5001"


def _banner(host: str) -> str:
    stub = SimpleNamespace(
        config=RuntimeConfig(host=host),
        api=SimpleNamespace(url="http://127.0.0.1:3000"),
        sandbox=SimpleNamespace(url="http://127.0.0.1:8900"),
        moto_url="http://127.0.0.1:5001",
        stack=SimpleNamespace(queues={"NotificationsQueue": None}),
    )
    return banner(stub)  # type: ignore[arg-type]


def test_banner_says_where_it_listens_only_when_not_loopback() -> None:
    default = _banner("127.0.0.1")
    assert "Listening on" not in default
    everywhere = _banner(EVERY_ADDRESS)
    line = "  Listening on      0.0.0.0   (every address of this machine)\n"
    assert line in everywhere
    assert everywhere.replace(line, "") == default  # the line is the only difference

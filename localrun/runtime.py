"""The whole system on one machine, no AWS account and no Docker: a moto server holding the template's
queues (and every other AWS service), dynalite holding its tables (localrun/dynamo_local.py; or moto, with
``dynamodb="moto"``), the template's functions in Lambda-like worker processes, the HTTP API routed as the
template declares, the queue → function wiring with Lambda's semantics, and a WhatsApp sandbox
(``localrun/project.py``: what is this project's own in that wiring; the rest runs whatever the template
declares).

Used by ``python -m localrun`` (the "run locally" command), the end-to-end tests and the benchmarks."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from localrun import project
from localrun.api import LocalHttpApi, Route
from localrun.dynamo_local import DEFAULT_PORT as DYNALITE_DEFAULT_PORT
from localrun.dynamo_local import AwsServers, DynaliteProcess, unavailable_reason
from localrun.lambdas import FunctionPool
from localrun.poller import EventSourceMapping
from localrun.sandbox import WhatsAppSandbox
from localrun.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel gives outgoing connections as their source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port to listen on: free now, below the kernel's ephemeral range, and not handed out before in this
    process. A port the kernel picks (bind to 0) is in that range, where any outgoing connection of the tests
    (a boto3 or httpx call) may take it as its source port before the server binds it: CI once lost a test
    module to exactly that ("port 43043 (api) ... already in use")."""
    import random

    low = _ephemeral_low()
    for _ in range(500):
        port = random.randrange(10_000, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # no luck below the range (a crowded machine): the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortInUseError(OSError):
    """A port one of the runtime's servers ("api", "sandbox", "moto", "dynamodb") is to listen on is taken."""

    def __init__(self, server: str, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} ({server}) on {host} is already in use")
        self.server, self.host, self.port = server, host, port


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise PortInUseError for the first of ``ports`` (server name → port; 0: any free port) that cannot be
    bound on ``host``. They are bound as the servers bind them (SO_REUSEADDR) and held together, so a port
    given to two servers is found too."""
    with contextlib.ExitStack() as held:
        for server, port in ports.items():
            if port:
                sock = held.enter_context(socket.socket())
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                with _listening(server, host, port):
                    sock.bind((host, port))
                    sock.listen()


@contextlib.contextmanager
def _listening(server: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to bind a port that is taken into PortInUseError."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or isinstance(exc, PortInUseError):
            raise
        raise PortInUseError(server, host, port) from None


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread meanwhile. The threads started meanwhile keep it blocked, and so do the
    processes they start (the functions' workers): Ctrl-C at a terminal reaches every process in its group,
    and so only the main thread acts on it (``python -m localrun`` then stops everything in order)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class RuntimeConfig:
    host: str = "127.0.0.1"  # what the servers listen on; URLs name 127.0.0.1 when it is 0.0.0.0
    api_port: int = 3000
    sandbox_port: int = 8900
    moto_port: int = 5001
    region: str = "ap-southeast-3"
    template: Path = ROOT / "template.yaml"
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides
    env: dict[str, str] = field(default_factory=dict)  # extra env vars for every function
    visibility_timeout: int | None = None  # override the main queues' visibility (faster local retries)
    api_concurrency: int = 4  # environments per API function (no reserved concurrency in the template)
    # How much lower the queue consumers' CPU priority is than the API functions' (os.nice increment). On
    # AWS every environment has a CPU share of its own; on two cores a fan-out's senders would otherwise
    # take the CPU the webhook needs to answer Meta in time. bench/soak.py sets 10.
    consumer_nice: int = 0
    prewarm: bool = False  # start every function's environments before serving (provisioned concurrency)
    whatsapp_url: str | None = None  # None: the local sandbox; else e.g. https://graph.facebook.com
    sandbox_latency_ms: float = 0.0
    status_callbacks: bool = True
    status_schedules: list[list[tuple[str, float]]] | None = None  # see WhatsAppSandbox
    enable_pollers: bool = True
    # Event source MaximumConcurrency overrides by queue logical id (e.g. {"NotificationsQueue": 3}).
    esm_concurrency: dict[str, int] = field(default_factory=dict)
    # Who serves DynamoDB: "dynalite" (localrun/dynamo_local.py; an error if Node or dynalite is missing),
    # "moto" (its Query reads every item of the table: slow at the seed's scale), or "auto": dynalite when
    # it is installed, else moto with a warning. Default: $JASTIPIN_DYNAMODB, else "auto".
    dynamodb: str = field(default_factory=lambda: os.environ.get("JASTIPIN_DYNAMODB") or "auto")
    # dynalite's port. 0: any free port; None: 5002 unless taken, then any free port (python -m localrun).
    dynamodb_port: int | None = 0


DYNAMODB_BACKENDS = ("auto", "dynalite", "moto")


def dynamodb_backend(choice: str) -> str:
    """The DynamoDB server a runtime configured with ``choice`` gets: "dynalite" or "moto". Raises
    DynaliteUnavailableError for "dynalite" when Node or dynalite is missing (naming what to run); "auto"
    then falls back to moto, with a warning on stderr."""
    if choice not in DYNAMODB_BACKENDS:
        raise ValueError(f"dynamodb must be one of {', '.join(DYNAMODB_BACKENDS)}, not {choice!r}")
    if choice != "auto":
        return choice
    reason = unavailable_reason()
    if reason is None:
        return "dynalite"
    print(f"warning: {reason}; DynamoDB is moto's for now", file=sys.stderr, flush=True)
    return "moto"


class LocalRuntime:
    """``moto``: the AWS servers' control surface (``snapshot()`` of the calls served, ``add_fault()``, see
    localrun/moto_server.py): the MotoProcess, or, with dynalite, moto and dynalite as one (calls summed,
    ``dynamodb.*`` faults to dynalite; its url and pid stay moto's). ``dynamodb``: the DynaliteProcess, if
    any. ``moto_url`` serves every AWS service but DynamoDB, ``dynamodb_url`` DynamoDB (the functions get
    both: AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB)."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.moto: Any = None
        self.dynamodb: DynaliteProcess | None = None
        self.dynamodb_backend: str | None = None  # "dynalite" or "moto", once started
        self.moto_url = self.dynamodb_url = ""
        self.stack: LocalStack | None = None
        self.api: LocalHttpApi | None = None
        self.sandbox: WhatsAppSandbox | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.mappings: list[EventSourceMapping] = []

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> LocalRuntime:
        """Start everything. Raises PortInUseError, before starting anything, when a port is taken; if
        starting fails (or is interrupted) later, what had started is stopped."""
        cfg = self.config
        self.dynamodb_backend = dynamodb_backend(cfg.dynamodb)
        ports = {"moto": cfg.moto_port, "api": cfg.api_port}
        if cfg.whatsapp_url is None:
            ports["sandbox"] = cfg.sandbox_port
        if self.dynamodb_backend == "dynalite" and cfg.dynamodb_port:
            ports["dynamodb"] = cfg.dynamodb_port
        check_ports(cfg.host, ports)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from localrun.moto_server import MotoProcess

        cfg = self.config
        # A fresh moto process per runtime: a clean slate, and a CPU (and interpreter lock) of its own.
        moto_port = cfg.moto_port or free_port()
        with _listening("moto", cfg.host, moto_port):
            self.moto = MotoProcess(port=moto_port, host=cfg.host).start()
        self.moto_url = self.dynamodb_url = self.moto.url
        if self.dynamodb_backend == "dynalite":
            port = cfg.dynamodb_port
            with _listening("dynamodb", cfg.host, port or 0):
                self.dynamodb = DynaliteProcess(
                    port=DYNALITE_DEFAULT_PORT if port is None else port,
                    host=cfg.host,
                    fallback=port is None,
                    region=cfg.region,
                ).start()
            self.dynamodb_url = self.dynamodb.url
            self.moto = AwsServers(self.moto, self.dynamodb)
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            os.environ.setdefault(name, value)
        self.stack = LocalStack(
            cfg.template,
            self.moto_url,
            cfg.region,
            cfg.parameters,
            visibility_timeout=cfg.visibility_timeout,
            dynamodb_url=self.dynamodb_url,
        ).create()
        # Not before moto's start: the first process started also starts multiprocessing's resource tracker,
        # which unblocks SIGINT in the thread starting it.
        with _sigint_blocked():
            self._start_servers()

    def _start_servers(self) -> None:
        """The HTTP API, the sandbox, the functions' pools and the pollers (their threads block SIGINT)."""
        cfg = self.config
        assert self.stack is not None
        functions = self.stack.functions()
        with _listening("api", cfg.host, cfg.api_port):
            self.api = LocalHttpApi([], host=cfg.host, port=cfg.api_port)
        if cfg.whatsapp_url is None:
            sandbox = project.whatsapp_sandbox(cfg, self.stack, self.api.url)
            with _listening("sandbox", cfg.host, cfg.sandbox_port):
                self.sandbox = sandbox.start()
        extra_env = project.function_env(
            cfg,
            self.stack,
            whatsapp_url=cfg.whatsapp_url or self.sandbox.url,  # type: ignore[union-attr]
            moto_url=self.moto_url,
            dynamodb_url=self.dynamodb_url,
        )
        layers = self.stack.layer_paths()
        for logical_id, spec in functions.items():
            concurrency = spec.reserved_concurrency or cfg.api_concurrency
            nice = 0 if spec.routes else cfg.consumer_nice
            self.pools[logical_id] = FunctionPool(spec, extra_env, layers, int(concurrency), nice=nice)
            for method, path in spec.routes:
                self.api.routes.append(Route(method, path, self.pools[logical_id]))
        if cfg.prewarm:
            for pool in self.pools.values():
                pool.prewarm()
        self.api.start()
        if cfg.enable_pollers:
            self.start_pollers()

    def start_pollers(self, functions: set[str] | None = None) -> None:
        """Start the queue → function wiring (of only the named functions' event sources, if given)."""
        assert self.stack is not None
        for logical_id, spec in self.stack.functions().items():
            if functions is not None and logical_id not in functions:
                continue
            for source in spec.sqs_sources:
                self.mappings.append(
                    EventSourceMapping(
                        queue=source["queue"],
                        pool=self.pools[logical_id],
                        endpoint_url=self.moto_url,
                        region=self.config.region,
                        batch_size=source["batch_size"],
                        batching_window=source["batching_window"],
                        max_concurrency=self.config.esm_concurrency.get(
                            source["queue"].logical_id, source["max_concurrency"]
                        ),
                        report_failures=source["report_failures"],
                    ).start()
                )

    def stop_pollers(self, wait: bool = False) -> None:
        """Stop every queue → function mapping; with ``wait``, return only once nothing more is consumed (long
        polls ended, invocations finished). Without, the pollers' (daemon) threads end on their own: one in a
        long poll releases what it receives."""
        for mapping in self.mappings:
            mapping.signal_stop()
        if wait:
            for mapping in self.mappings:
                mapping.stop(wait=True)
        self.mappings = []

    def stop(self) -> None:
        self.stop_pollers()
        if self.api:
            self.api.stop()
        for pool in self.pools.values():
            pool.close()
        if self.sandbox:
            self.sandbox.stop()
        if self.moto:
            self.moto.stop()
        if self.dynamodb:
            self.dynamodb.stop()

    def __enter__(self) -> LocalRuntime:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests, benchmarks and operators ------------------------------------------------------
    def client(self, service: str) -> Any:
        """A boto3 client of the runtime's server for ``service`` (DynamoDB: dynalite's, unless moto's)."""
        return boto3.client(
            service,
            endpoint_url=self.dynamodb_url if service == "dynamodb" else self.moto_url,
            region_name=self.config.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
        )

    def queue_url(self, logical_id: str) -> str:
        assert self.stack is not None
        return self.stack.queues[logical_id].url

    def table_name(self, logical_id: str) -> str:
        assert self.stack is not None
        return self.stack.tables[logical_id]

    def queue_depths(self) -> dict[str, int]:
        sqs = self.client("sqs")
        depths = {}
        assert self.stack is not None
        for logical_id, queue in self.stack.queues.items():
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            depths[logical_id] = sum(int(v) for v in attrs.values())
        return depths

    def wait_idle(self, timeout: float = 60.0, settle: float = 0.5, queues: set[str] | None = None) -> None:
        """Wait until every queue (DLQs aside; or only the named ones) is empty and stays so for `settle`
        seconds."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            busy = {
                q: n
                for q, n in self.queue_depths().items()
                if n and (q in queues if queues is not None else not q.endswith("DLQ"))
            }
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
            time.sleep(0.1)
        raise TimeoutError(f"queues still busy after {timeout}s: {self.queue_depths()}")

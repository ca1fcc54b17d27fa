"""DynamoDB for the local runtime from dynalite (npm ``dynalite``, pinned in package.json): a DynamoDB
implementation in Node (over LevelDB, or in memory as here), in a child process. moto's DynamoDB compares
every item of a table on each Query, so a trip's page costs a pass over every trip (a 100-member trip: 162 ms
with 40,000 participants in the table, 367 ms with 100,000; dynalite 5-10 ms at any size, and 40 times the
queries per second under concurrency: bench/results/dynamo_backend.md). moto keeps every other service.

Installed by ``bash scripts/node_deps.sh`` (``npm ci`` from package-lock.json into ./node_modules). The child
runs a small wrapper around dynalite's request handler (``_WRAPPER`` below) that adds what the local moto
server has (see localrun/moto_server.py): a count of the calls served (``GET /_localrun/calls``) and injected
faults (``/_localrun/faults``, the same JSON and error shapes), so benchmarks and fault tests see DynamoDB as
they did. The child also ends with its parent, however the parent ends (its stdin, a pipe from the parent,
reaches end of file), and Ctrl-C at a terminal does not reach it (a session of its own; it ignores SIGINT
too): the parent stops everything in order.

Differences from DynamoDB that matter here: no ``UpdateTimeToLive`` (tables get no TTL locally; moto never
expired items either), no transactions or PartiQL (the functions use neither)."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from localrun.moto_server import CALLS_PATH, FAULTS_PATH, ControlSurface

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "node_modules" / "dynalite"
BIN = ROOT / "node_modules" / ".bin" / "dynalite"
INSTALL_COMMAND = "bash scripts/node_deps.sh"  # npm ci --no-audit --no-fund, from package-lock.json
DEFAULT_PORT = 5002  # python -m localrun prefers it (a stable URL), falling back to any free port
ACCOUNT = "123456789012"  # localrun.stack.ACCOUNT: the ARNs DescribeTable gives match the local stack's

# Runs as ``node -e``; its settings come in the LOCALRUN_DYNALITE environment variable (JSON).
_WRAPPER = r"""
'use strict'
const { Readable } = require('stream')
const cfg = JSON.parse(process.env.LOCALRUN_DYNALITE)
const dynalite = require(cfg.module)

// The parent stops this process in its turn (Ctrl-C is the parent's to act on).
process.on('SIGINT', () => {})
// End with the parent, however it ends: stdin is a pipe only the parent holds.
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

// Tables are ACTIVE at once (dynalite's default keeps them CREATING for 500 ms).
const server = dynalite({ path: cfg.path || undefined, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 })
const serve = server.listeners('request')[0]
server.removeAllListeners('request')
server.keepAliveTimeout = 0 // SDK clients keep their connections; an idle one is never closed under them

const calls = {}
const faults = []
const ERROR_PREFIX = 'com.amazonaws.dynamodb.v20120810#'
const FAULT_KEYS = [
  'operation', 'table', 'error', 'type', 'status', 'message', 'times', 'delay_ms', 'contains',
]

function answer (res, status, payload) {
  const body = payload === null ? '' : JSON.stringify(payload)
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) })
  res.end(body)
}

function readBody (req, done) {
  const chunks = []
  req.on('data', (chunk) => chunks.push(chunk))
  req.on('end', () => done(Buffer.concat(chunks)))
}

// The checks of localrun/moto_server.py's _check_fault (the Python client runs those too).
function checkFault (f) {
  if (!f || typeof f !== 'object' || Array.isArray(f)) throw new Error('a fault must be a JSON object')
  const unknown = Object.keys(f).filter((k) => !FAULT_KEYS.includes(k)).sort()
  if (unknown.length) throw new Error('unknown fault keys: ' + unknown.join(', '))
  if (typeof f.operation !== 'string' || !f.operation.includes('.'))
    throw new Error("fault 'operation' must be 'service.Operation', e.g. 'dynamodb.UpdateItem'")
  const delay = f.delay_ms == null ? null : f.delay_ms
  if (delay !== null && (typeof delay !== 'number' || !(delay > 0 && delay <= 60000)))
    throw new Error("fault 'delay_ms' must be a number of milliseconds above 0, at most 60000")
  const error = f.error == null && delay !== null ? null : f.error
  if (error !== null && (typeof error !== 'string' || !error))
    throw new Error("fault 'error' must be an error code, e.g. 'ProvisionedThroughputExceededException'")
  if (f.table != null && (typeof f.table !== 'string' || !f.table))
    throw new Error("fault 'table' must be a non-empty string or null")
  if (f.contains != null && (typeof f.contains !== 'string' || !f.contains))
    throw new Error("fault 'contains' must be a non-empty string or null")
  const type = f.type || error
  if (type !== null && typeof type !== 'string')
    throw new Error("fault 'type' must be a string (the modeled error's name)")
  const status = f.status == null ? 400 : f.status
  if (!Number.isInteger(status) || status < 400 || status > 599)
    throw new Error("fault 'status' must be a 4xx or 5xx status")
  const times = f.times == null ? null : f.times
  if (times !== null && (!Number.isInteger(times) || times < 1))
    throw new Error("fault 'times' must be a positive integer or null (until cleared)")
  if (f.message != null && typeof f.message !== 'string') throw new Error("fault 'message' must be a string")
  return {
    operation: f.operation, table: f.table == null ? null : f.table, error, type, status,
    message: f.message != null ? f.message : error + ' (injected by the local runtime)', times,
    delay_ms: delay, contains: f.contains == null ? null : f.contains, injected: 0,
  }
}

function controlFaults (req, res) {
  if (req.method === 'DELETE') { faults.length = 0; return answer(res, 204, null) }
  if (req.method === 'POST') {
    return readBody(req, (body) => {
      let fault
      try { fault = checkFault(JSON.parse(body.toString() || 'null')) }
      catch (err) { return answer(res, 400, { error: err.message }) }
      faults.push(fault)
      answer(res, 201, fault)
    })
  }
  answer(res, 200, { faults: faults.map((f) => Object.assign({}, f)) })
}

function targets (body) {
  let request
  try { request = JSON.parse(body.toString() || '{}') } catch { return [] }
  if (!request || typeof request !== 'object') return []
  const found = ['TableName', 'QueueUrl'].filter((k) => k in request).map((k) => String(request[k]))
  const items = request.RequestItems
  if (items && typeof items === 'object') found.push(...Object.keys(items))
  return found
}

function injected (name, body) {
  const names = targets(body)
  for (const f of faults) {
    if (f.operation !== name || f.times === 0) continue
    if (f.table !== null && !names.some((t) => t.includes(f.table))) continue
    if (f.contains !== null && !body.includes(f.contains)) continue
    if (f.times !== null) f.times -= 1
    f.injected += 1
    return f
  }
  return null
}

function sendFault (res, f) {
  const body = JSON.stringify({ __type: ERROR_PREFIX + f.type, message: f.message })
  res.writeHead(f.status, {
    'Content-Type': 'application/x-amz-json-1.0',
    'x-amzn-RequestId': 'localrun-fault-' + process.hrtime.bigint(),
    'x-amzn-ErrorType': f.type,
    'Content-Length': Buffer.byteLength(body),
  })
  res.end(body)
}

server.on('request', (req, res) => {
  const path = req.url.split('?')[0]
  if (path === cfg.callsPath) return answer(res, 200, calls)
  if (path === cfg.faultsPath) return controlFaults(req, res)
  const target = req.headers['x-amz-target']
  const name = target ? 'dynamodb.' + target.slice(target.indexOf('.') + 1) : 'other'
  calls[name] = (calls[name] || 0) + 1
  if (!target || !faults.some((f) => f.operation === name && f.times !== 0)) return serve(req, res)
  // A fault names this operation: read the request, and replay it to dynalite unless a fault takes it.
  readBody(req, (body) => {
    const fault = injected(name, body)
    const go = () => {
      if (fault && fault.error !== null) return sendFault(res, fault)
      const replay = Readable.from(body.length ? [body] : [])
      Object.assign(replay, { headers: req.headers, method: req.method, url: req.url })
      serve(replay, res)
    }
    if (fault && fault.delay_ms) return setTimeout(go, fault.delay_ms) // a slow call
    go()
  })
})

function report (message) { process.stdout.write(JSON.stringify(message) + '\n') }

server.on('error', (err) => {
  if (err.code === 'EADDRINUSE' && cfg.fallback && !server.listening) {
    cfg.fallback = false
    return server.listen(0, cfg.host)
  }
  report({ error: err.code || 'ERROR', message: err.message })
  process.exit(1)
})
server.listen(cfg.port, cfg.host, () => report({ port: server.address().port }))
"""


class DynaliteUnavailableError(RuntimeError):
    """Node or the dynalite package is missing; the message names what to run."""


def unavailable_reason() -> str | None:
    """Why dynalite cannot run here (None: it can)."""
    if shutil.which("node") is None:
        return (
            "Node.js (>= 20) is not installed, so dynalite (the local DynamoDB) cannot run; install Node.js "
            f"and run `{INSTALL_COMMAND}`, or use moto's DynamoDB (--dynamodb moto)"
        )
    if not (MODULE_DIR / "package.json").is_file() or not BIN.exists():
        return (
            f"dynalite (the local DynamoDB) is not installed in {MODULE_DIR.parent}: run `{INSTALL_COMMAND}` "
            "(npm ci from package-lock.json), or use moto's DynamoDB (--dynamodb moto)"
        )
    return None


class DynaliteProcess(ControlSurface):  # calls and faults as MotoProcess has them
    """dynalite on host:port in a child process (``node``), in memory (``path`` None: the state dies with
    it) or in a LevelDB directory (``path``, kept). ``port`` 0: any free port; with ``fallback``, a port
    that is taken gives way to a free one. ``url`` names 127.0.0.1 when the host is 0.0.0.0, and the port
    it got."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        path: Path | None = None,
        fallback: bool = False,
        region: str | None = None,
    ) -> None:
        self.host, self.port, self.path, self.fallback, self.region = host, port, path, fallback, region
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> DynaliteProcess:
        """Start dynalite and wait until it answers. Raises DynaliteUnavailableError when Node or dynalite is
        missing, OSError (errno EADDRINUSE: the port is taken) as soon as it fails to listen."""
        reason = unavailable_reason()
        if reason:
            raise DynaliteUnavailableError(reason)
        settings = {
            "module": str(MODULE_DIR),
            "host": self.host,
            "port": self.port,
            "fallback": self.fallback,
            "path": str(self.path) if self.path else None,
            "callsPath": CALLS_PATH,
            "faultsPath": FAULTS_PATH,
        }
        env = {**os.environ, "LOCALRUN_DYNALITE": json.dumps(settings), "AWS_ACCOUNT_ID": ACCOUNT}
        if self.region:  # the region of the ARNs DescribeTable gives
            env["AWS_REGION"] = self.region
        self._process = subprocess.Popen(
            [shutil.which("node") or "node", "-e", _WRAPPER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A process group of its own: Ctrl-C at a terminal reaches the foreground group, and the parent
            # stops dynalite in its turn (Node catches SIGINT whatever its parent set, so it cannot inherit
            # an ignored or blocked SIGINT as moto's process and the workers do).
            start_new_session=True,
        )
        try:
            message = self._first_line(timeout)
            if "error" in message:
                code = str(message["error"])
                raise OSError(
                    getattr(errno, code, 0) if code.startswith("E") else 0,
                    f"dynalite cannot listen on {self.host}:{self.port}: {message.get('message', code)}",
                )
            self.port = int(message["port"])
            self._wait_until_answering(timeout)  # it listens; make sure it answers
            return self
        except BaseException:
            self.stop()
            raise

    def _first_line(self, timeout: float) -> dict[str, Any]:
        """The wrapper's one line on stdout: {"port": N} once listening, or {"error": code, "message": m}."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                raise RuntimeError(f"dynalite did not start on {self.host}:{self.port} within {timeout:.0f}s")
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"dynalite exited while starting (status {self._process.wait()})")
            line += chunk
        return json.loads(line)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


class AwsServers:
    """moto and dynalite as the one control surface ``LocalRuntime.moto`` was: call counts summed, a fault
    sent to the server that serves its operation (``dynamodb.*``: dynalite). Everything else (url, pid,
    stop, ...) is moto's."""

    def __init__(self, moto: Any, dynamodb: DynaliteProcess) -> None:
        self.moto, self.dynamodb = moto, dynamodb

    def __getattr__(self, name: str) -> Any:
        return getattr(self.moto, name)

    def snapshot(self) -> Counter[str]:
        return self.moto.snapshot() + self.dynamodb.snapshot()

    def add_fault(self, operation: str, error: str | None, **options: Any) -> dict[str, Any]:
        server = self.dynamodb if operation.startswith("dynamodb.") else self.moto
        return server.add_fault(operation, error, **options)

    def faults(self) -> list[dict[str, Any]]:
        return self.moto.faults() + self.dynamodb.faults()

    def clear_faults(self) -> None:
        self.moto.clear_faults()
        self.dynamodb.clear_faults()

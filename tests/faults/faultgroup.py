"""Fault injection under load against a real Group: the harness of tests/faults and bench/faults.py.

:class:`FaultGroup` provisions a small Group the way tests/gateway/test_chain.py does: a
directory and two organisations (A: consumer, B: provider), each with its own SoftHSM token and
Manager under gunicorn, contracts signed in the tokens; B's inway (two workers) in front of two
backend services in this process, A's outway (two workers); a durable SQLite transaction log
at both gateways. B's Manager issues tokens for ``TOKEN_LIFETIME`` seconds and the outway
refreshes them ``TOKEN_REFRESH`` seconds before they expire, so under load the background
refresh runs every few seconds and a token in hand stays valid for about a minute: a Manager
fault of a few seconds falls inside the refresh window and within the token's validity.

:class:`Load` drives a steady open-loop load through the outway (``http.client`` in a thread
pool, a new connection per request, each request with its own ``Fsc-Transaction-Id``), most of
it on :data:`LOADED` and a fifth on :data:`OTHER`. :func:`run_fault` runs the load, injects
one :class:`Fault` in the middle, lets the load run on, and reconciles: every 2xx the
application got must have its transaction id in the outway's log (``DIRECTION_OUTGOING``) and
the inway's (``DIRECTION_INCOMING``), no record may be there twice and no backend may have
received a transaction twice.

Run as a script, this module is the slow-clients process (``--slow-clients PORT COUNT
SECONDS``): COUNT connections that each send a request head a byte a second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from appliance.demo.gateways import configure_gateways, rewrite_config
from appliance.demo.group import (
    Member,
    MemberPlan,
    bypass_proxy_for_loopback,
    provision_group,
    start_managers,
    state_of,
    stop_managers,
    wait_for,
)
from appliance.demo.processes import Component, start_component
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.txlog.database import SQLITE_BUSY_TIMEOUT_SECONDS
from appliance.txlog.record import new_transaction_id

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000001600", "00000001000000001601", "00000001000000001602"
LOADED = "basisregistratie"  # most of the load; never faulted itself
OTHER = "adresregister"  # a fifth of the load; the service whose backend hangs or dies
SERVICES = (LOADED, OTHER)
PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.faults16.test",)))
    for name, oin in (("directory", OIN_DIRECTORY), ("a", OIN_A), ("b", OIN_B))
)
TOKEN_LIFETIME = 60  # B's Manager: access token lifetime
TOKEN_REFRESH = 55  # A's outway: the background refresh starts 5 s after a fetch
TOKEN_TIMEOUT = 4  # A's outway: token_timeout_seconds
INWAY_READ_TIMEOUT = 10  # B's inway: a backend silent this long is 502 SERVICE_UNREACHABLE
GATEWAY_WORKERS = 2  # inway and outway each: a killed worker leaves one serving
CLIENT_TIMEOUT = 60.0  # the application's own limit per request


# --- backends ----------------------------------------------------------------------------------


class _BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a production service behind an inway
    server: _BackendServer

    def do_GET(self) -> None:
        backend = self.server.backend
        transaction = self.headers.get("Fsc-Transaction-Id") or ""
        backend.received(transaction)
        if not backend.gate.wait(CLIENT_TIMEOUT * 2):
            return
        body = json.dumps({"service": backend.name, "transaction_id": transaction}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        return None


class _BackendServer(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, backend: Backend, port: int) -> None:
        self.backend = backend
        super().__init__(("127.0.0.1", port), _BackendHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        self.backend.opened(conn)
        return conn, address


class Backend:
    """One service's backend: it can hang (accepts and reads, never answers until released)
    and die (listener closed and every open connection cut: connections are refused)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._server: _BackendServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self._server = _BackendServer(self, self.port)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def received(self, transaction: str) -> None:
        with self._lock:
            self._seen[transaction] += 1

    def opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections = {c for c in self._connections if c.fileno() != -1}
            self._connections.add(conn)

    def seen(self) -> Counter[str]:
        with self._lock:
            return Counter(self._seen)

    def hang(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def kill(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        self.release()
        self.kill()


# --- the Group ---------------------------------------------------------------------------------


def _in_state(member: Member, content_hash: str, state: str) -> Callable[[], bool]:
    return lambda: state_of(member, content_hash) == state


def _contract(members: dict[str, Member], service: str) -> None:
    """B publishes ``service`` in the directory, A asks for a connection, B signs."""
    a, b, directory = members["a"], members["b"], members["directory"]
    published = b.sluis("contract", "propose-publication", "--service", service)["hash"]
    wait_for(_in_state(directory, published, "proposed"), "the publication at the directory")
    directory.sluis("contract", "accept", published)
    wait_for(_in_state(b, published, "valid"), "the publication valid at b")
    asked = a.sluis("contract", "propose-connection", "--service-peer", b.oin, "--service", service)
    wait_for(_in_state(b, asked["hash"], "proposed"), "the connection request at b")
    b.sluis("contract", "accept", asked["hash"])
    wait_for(_in_state(a, asked["hash"], "valid"), "the connection valid at a")


def _signal_tree(pid: int, signum: int) -> None:
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


@dataclass
class FaultGroup:
    root: Path
    members: dict[str, Member]
    backends: dict[str, Backend]
    inway: Component
    outway: Component
    txlogs: dict[str, Path]  # "a": the outway's SQLite file, "b": the inway's
    slow_client_answers: str = ""  # what the last slow-clients run was answered
    load: Load | None = None  # the load of the fault being run
    burst_rate: float = 0.0  # the hung-backend fault's extra requests a second on OTHER

    @classmethod
    @contextlib.contextmanager
    def running(cls, root: Path, say: Callable[[str], None] = lambda _: None) -> Iterator[Any]:
        """Provision and start the whole Group under ``root``; stop everything afterwards."""
        bypass_proxy_for_loopback()
        ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
        say("provisioning the Group (SoftHSM tokens, certificates)")
        members = provision_group(
            ca,
            root,
            PLANS,
            group_id="faults16.test",
            database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
        )
        backends = {name: Backend(name) for name in SERVICES}
        gateways = configure_gateways(
            members,
            provider="b",
            consumer="a",
            service=LOADED,
            backend_url=backends[LOADED].url,
            root=root,
            more_services={OTHER: backends[OTHER].url},
        )
        txlogs = {name: root / name / "txlog.db" for name in ("a", "b")}
        services = json.dumps([f"{name}={backend.url}" for name, backend in backends.items()])
        rewrite_config(
            members["b"],
            f'\n[inway]\nservices = {services}\naddress = "{gateways.inway_address}"\n'
            'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
            f"read_timeout_seconds = {INWAY_READ_TIMEOUT}\n"
            f'\n[txlog]\ndatabase = "sqlite:///{txlogs["b"]}"\n',
            token_lifetime_seconds=TOKEN_LIFETIME,
        )
        rewrite_config(
            members["a"],
            f"\n[outway]\ntoken_refresh_seconds = {TOKEN_REFRESH}\n"
            f"token_timeout_seconds = {TOKEN_TIMEOUT}\n"
            f'\n[txlog]\ndatabase = "sqlite:///{txlogs["a"]}"\n',
        )
        components: list[Component] = []
        logs = root / "logs"
        try:
            say("starting the Managers, signing the contracts")
            start_managers(members, logs, workers=1)
            a, b = members["a"], members["b"]
            for service in SERVICES:
                _contract(members, service)
            say("starting the inway and the outway")
            inway = start_component(
                "inway-b",
                b.config_path,
                "inway",
                port=gateways.inway_port,
                workers=GATEWAY_WORKERS,
                log_dir=logs,
            )
            components.append(inway)
            outway = start_component(
                "outway-a",
                a.config_path,
                "outway",
                port=gateways.outway_port,
                workers=GATEWAY_WORKERS,
                log_dir=logs,
            )
            components.append(outway)
            group = cls(root, members, backends, inway, outway, txlogs)
            group.wait_healthy()
            yield group
        finally:
            for component in components:
                component.stop()
            stop_managers(members)
            for backend in backends.values():
                backend.stop()

    # -- requests --

    def path(self, service: str, n: int = 1) -> str:
        return f"/{OIN_B}/{service}/items/{n}"

    def get(self, service: str, transaction: str, timeout: float = CLIENT_TIMEOUT) -> Outcome:
        began = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.outway.port, timeout=timeout)
            try:
                conn.request("GET", self.path(service), headers={"Fsc-Transaction-Id": transaction})
                response = conn.getresponse()
                response.read()
                status, code = response.status, response.getheader("Fsc-Error-Code") or ""
                echoed = response.getheader("Fsc-Transaction-Id") or ""
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            status, code, echoed = 0, type(exc).__name__, ""
        return Outcome(service, transaction, began, time.monotonic(), status, code, echoed)

    def wait_healthy(self, timeout: float = 90) -> None:
        """Every service answers 200 through the whole chain."""

        def answers(service: str) -> Callable[[], bool]:
            return lambda: self.get(service, new_transaction_id(), timeout=20).ok

        for service in SERVICES:
            wait_for(answers(service), f"{service} through the chain", timeout=timeout)

    # -- the processes --

    @property
    def manager(self) -> Component:
        manager = self.members["b"].manager
        assert manager is not None
        return manager

    def workers(self, component: Component) -> list[psutil.Process]:
        return psutil.Process(component.process.pid).children()

    def kill_a_worker(self, component: Component) -> int:
        worker = self.workers(component)[0]
        worker.send_signal(signal.SIGKILL)
        return int(worker.pid)

    def kill_manager(self) -> None:
        _signal_tree(self.manager.process.pid, signal.SIGKILL)
        self.manager.process.wait(10)

    def restart_manager(self) -> None:
        b = self.members["b"]
        b.manager = start_component(
            "manager-b",
            b.config_path,
            "manager",
            port=b.port,
            workers=1,
            log_dir=self.root / "logs",
        )

    def stop_manager_processes(self, signum: int) -> None:
        _signal_tree(self.manager.process.pid, signum)

    # -- the transaction logs --

    def logged(self, member: str, direction: str) -> Counter[str]:
        """Transaction id -> records in ``member``'s log for ``direction`` (read-only)."""
        uri = f"file:{self.txlogs[member]}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            rows = db.execute(
                "SELECT transaction_id, count(*) FROM txlog_records WHERE direction = ? "
                "GROUP BY transaction_id",
                (direction,),
            ).fetchall()
        return Counter({str(t): int(n) for t, n in rows})


# --- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    service: str
    transaction: str
    began: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    code: str  # Fsc-Error-Code, or the exception's name when status is 0
    echoed: str  # the Fsc-Transaction-Id of the answer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def seconds(self) -> float:
        return self.ended - self.began

    @property
    def failure(self) -> str:
        return f"{self.status} {self.code}".strip() if self.status else self.code


class Load:
    """Open-loop load through the outway: ``rate`` requests per second, each fifth one on
    :data:`OTHER`, the rest on :data:`LOADED`; each request on a new connection, with its own
    transaction id. :meth:`burst` adds requests for one service on top for a while (the
    hung-backend fault: an application that keeps calling the hung service)."""

    def __init__(self, group: FaultGroup, rate: float, threads: int = 1200) -> None:
        self.group = group
        self.rate = rate
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="load")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="load-scheduler", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _one(self, service: str) -> None:
        outcome = self.group.get(service, new_transaction_id())
        with self._lock:
            self.outcomes.append(outcome)
            self._pending -= 1

    def _submit(self, service: str) -> None:
        with self._lock:
            self._pending += 1
        self._pool.submit(self._one, service)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self._submit(OTHER if n % 5 == 4 else LOADED)
            n += 1
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def burst(self, service: str, rate: float, seconds: float) -> None:
        """``rate`` more requests a second on ``service`` for ``seconds`` (returns then)."""
        if rate <= 0:
            time.sleep(seconds)
            return
        began = due = time.monotonic()
        while not self._stop.is_set() and due < began + seconds:
            self._submit(service)
            due += 1.0 / rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self, drain: float = CLIENT_TIMEOUT + 10) -> None:
        """Stop sending; wait for the requests in flight (each ends within its timeout)."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    break
            time.sleep(0.05)
        self._pool.shutdown(wait=True)


# --- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    began: float
    ended: float  # the fault is lifted (for a kill: the last kill)
    kills: tuple[float, ...] = ()  # when a worker was killed


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[FaultGroup, float], Window]  # (group, seconds) -> when


def _kill_worker(which: str, every: float) -> Callable[[FaultGroup, float], Window]:
    def inject(group: FaultGroup, seconds: float) -> Window:
        component = group.inway if which == "inway" else group.outway
        began = time.monotonic()
        kills: list[float] = []
        while True:
            group.kill_a_worker(component)
            kills.append(time.monotonic())
            if kills[-1] + every > began + seconds:
                break
            time.sleep(every)
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        return Window(began, kills[-1], tuple(kills))

    return inject


def _kill_manager(group: FaultGroup, seconds: float) -> Window:
    began = time.monotonic()
    group.kill_manager()
    time.sleep(seconds)
    group.restart_manager()
    return Window(began, time.monotonic())


def _hang_manager(group: FaultGroup, seconds: float) -> Window:
    began = time.monotonic()
    group.stop_manager_processes(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        group.stop_manager_processes(signal.SIGCONT)
    return Window(began, time.monotonic())


def _lock_inway_log(group: FaultGroup, seconds: float) -> Window:
    """An exclusive lock on the inway's SQLite log from another connection: its writers wait
    (busy timeout) and then fail; readers go on (WAL). Held at least 1.5 s longer than the
    busy timeout, so that writes do fail."""
    seconds = max(seconds, SQLITE_BUSY_TIMEOUT_SECONDS + 1.5)
    db = sqlite3.connect(group.txlogs["b"], timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        began = time.monotonic()
        time.sleep(seconds)
        db.execute("ROLLBACK")
        return Window(began, time.monotonic())
    finally:
        db.close()


def _hang_backend(group: FaultGroup, seconds: float) -> Window:
    backend = group.backends[OTHER]
    began = time.monotonic()
    backend.hang()
    if group.load is not None:
        group.load.burst(OTHER, group.burst_rate, seconds)
    time.sleep(max(0.0, began + seconds - time.monotonic()))
    backend.release()
    return Window(began, time.monotonic())


def _dead_backend(group: FaultGroup, seconds: float) -> Window:
    backend = group.backends[OTHER]
    began = time.monotonic()
    backend.kill()
    time.sleep(seconds)
    backend.restart()
    return Window(began, time.monotonic())


SLOW_CLIENTS = 1000


# bench/slow_clients.py's clients (a head a byte a second), run in a process of their own.
SLOW_CLIENTS_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "slow_clients.py"


def _slow_clients(group: FaultGroup, seconds: float) -> Window:
    argv = [
        sys.executable,
        str(SLOW_CLIENTS_SCRIPT),
        "--slow-clients-only",
        str(group.outway.port),
        "--slow",
        str(SLOW_CLIENTS),
        "--seconds",
        str(max(seconds - 3, 1)),  # the script adds 3 s for its ramp
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    began = time.monotonic()
    out, _ = process.communicate(timeout=seconds + 60)
    group.slow_client_answers = out.strip()
    return Window(began, time.monotonic())


def faults(kill_every: float = 10.0) -> list[Fault]:
    return [
        Fault(
            "kill-inway-worker",
            "SIGKILL one of the inway's two gunicorn workers (again every "
            f"{kill_every:g} s of the fault)",
            _kill_worker("inway", kill_every),
        ),
        Fault(
            "kill-outway-worker",
            f"SIGKILL one of the outway's two workers (again every {kill_every:g} s)",
            _kill_worker("outway", kill_every),
        ),
        Fault(
            "kill-manager",
            "SIGKILL the provider's Manager (master and worker), start it again at the end",
            _kill_manager,
        ),
        Fault("hang-manager", "SIGSTOP the provider's Manager, SIGCONT at the end", _hang_manager),
        Fault(
            "lock-inway-log",
            "BEGIN EXCLUSIVE on the inway's SQLite log from another connection (at least "
            f"{SQLITE_BUSY_TIMEOUT_SECONDS + 1.5:g} s: longer than the busy timeout)",
            _lock_inway_log,
        ),
        Fault(
            "hang-backend",
            f"the {OTHER} backend takes requests and answers none until the end, while the "
            "application calls that service more (Profile.burst a second on top)",
            _hang_backend,
        ),
        Fault(
            "dead-backend",
            f"the {OTHER} backend's listener closed and its connections cut (refused)",
            _dead_backend,
        ),
        Fault(
            "slow-clients",
            f"{SLOW_CLIENTS:,} clients on the outway sending a request head a byte a second",
            _slow_clients,
        ),
    ]


# --- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    before: float  # seconds of load before the fault
    fault: float  # the fault's length
    after: float  # seconds of load after it
    rate: float  # requests per second
    kill_every: float
    burst: float  # requests a second more on the hung service while its backend hangs


QUICK = Profile(before=1.5, fault=3.5, after=3.0, rate=50, kill_every=10.0, burst=100)
LONG = Profile(before=5.0, fault=15.0, after=10.0, rate=50, kill_every=5.0, burst=100)


@dataclass
class FaultResult:
    fault: Fault
    window: Window
    outcomes: list[Outcome]
    unlogged: list[str]  # 2xx transaction ids without a record at both ends
    duplicated: list[str]  # ids with a record twice in a log, or at a backend twice
    misechoed: list[Outcome]  # answers with another Fsc-Transaction-Id
    slow_client_answers: str = ""
    workers_after: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    def failed(self, service: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok and service in (None, o.service)]

    def failures(self, service: str | None = None) -> Counter[str]:
        return Counter(f"{o.service}: {o.failure}" for o in self.failed(service))

    def slowest(self, service: str | None = None) -> float:
        return max((o.seconds for o in self.outcomes if service in (None, o.service)), default=0)

    def recovery(self) -> float | None:
        """Seconds from the fault's end until requests succeed again: 0 when every failure
        ended before the fault did (or none failed); None when no request succeeded after the
        last failure began (not recovered within the run)."""
        failed = self.failed()
        if not failed:
            return 0.0
        last = max(failed, key=lambda o: o.began)
        if not any(o.ok and o.began > last.began for o in self.outcomes):
            return None
        return max(0.0, max(o.ended for o in failed) - self.window.ended)

    def row(self) -> str:
        recovery = self.recovery()
        failures = ", ".join(f"{n} {what}" for what, n in sorted(self.failures().items()))
        return (
            f"{self.fault.name:<19}{self.sent:>6}{len(self.failed()):>7}"
            f"{self.slowest():>9.2f}"
            f"{'never' if recovery is None else f'{recovery:.2f}':>10}"
            f"{len(self.unlogged):>10}{len(self.duplicated):>6}  {failures or '-'}"
        )


REPORTED: list[FaultResult] = []  # the runs of this process, for tests/faults/conftest.py

HEADER = (
    f"{'fault':<19}{'sent':>6}{'failed':>7}{'slowest':>9}{'recovery':>10}"
    f"{'2xx-unlog':>10}{'dup':>6}  failures (service: status code)"
)


def table(results: list[FaultResult]) -> str:
    lines = [HEADER, "-" * len(HEADER), *(r.row() for r in results)]
    lines.append(
        "slowest and recovery in seconds; 2xx-unlog: 2xx answers whose transaction id is not in "
        "both logs; dup: ids logged twice or received twice by a backend"
    )
    return "\n".join(lines)


def reconcile(group: FaultGroup, outcomes: list[Outcome]) -> tuple[list[str], list[str]]:
    outgoing = group.logged("a", "DIRECTION_OUTGOING")
    incoming = group.logged("b", "DIRECTION_INCOMING")
    unlogged = sorted(
        o.transaction
        for o in outcomes
        if o.ok and not (outgoing[o.transaction] and incoming[o.transaction])
    )
    ours = {o.transaction for o in outcomes}
    duplicated = {t for t in ours if outgoing[t] > 1 or incoming[t] > 1}
    for backend in group.backends.values():
        duplicated |= {t for t, n in backend.seen().items() if n > 1 and t in ours}
    return unlogged, sorted(duplicated)


def run_fault(group: FaultGroup, fault: Fault, profile: Profile) -> FaultResult:
    """Load, the fault in the middle, more load; then the reconciliation."""
    group.wait_healthy()
    group.slow_client_answers = ""
    group.burst_rate = profile.burst
    with Load(group, profile.rate) as load:
        group.load = load
        try:
            time.sleep(profile.before)
            window = fault.inject(group, profile.fault)
            time.sleep(profile.after)
        finally:
            group.load = None
    outcomes = sorted(load.outcomes, key=lambda o: o.began)
    unlogged, duplicated = reconcile(group, outcomes)
    misechoed = [o for o in outcomes if o.status and o.echoed != o.transaction]
    return FaultResult(
        fault,
        window,
        outcomes,
        unlogged,
        duplicated,
        misechoed,
        slow_client_answers=group.slow_client_answers,
        workers_after={
            "inway": len(group.workers(group.inway)),
            "outway": len(group.workers(group.outway)),
        },
    )

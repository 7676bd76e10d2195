"""Requests through the whole chain: Sluis against the same chain built from stock nginx.

Three chains in front of one backend, measured side by side in one run:

- ``direct``: the backend itself, an nginx instance that answers ``return 200`` with a small
  JSON body (so that it is never the bottleneck);
- ``nginx chain``: app -> "outway" nginx (plain HTTP, upstream keep-alive) -> "inway" nginx
  (mutual TLS, ``ssl_verify_client on`` with the Group's CA and CRLs, TLS 1.2/1.3) ->
  backend. nginx cannot use the SoftHSM token: its keys are software key files issued by the
  same demo CA;
- ``Sluis chain``: app -> outway of A -> inway of B -> backend, built as
  tests/gateway/test_chain.py builds it: a Group (directory, A, B) with SoftHSM tokens, the
  Managers under gunicorn, contracts signed in the tokens, an access token, gunicorn outway
  and inway, a durable transaction log record at both ends of every request.

wrk (``--latency``) loads each chain in three variants: keep-alive with many connections
(saturating), a new connection per request between app and outway (``Connection: close``),
and one connection with one request after another (latency). Rounds repeat every chain and
variant interleaved, so that the noise of a shared machine hits all chains alike; the tables
show the medians. CPU per request is the CPU time of the gateway processes (Sluis: outway and
inway gunicorn masters and workers; nginx: both masters and their workers; never the backend,
the Managers or wrk) over the run, divided by the requests wrk completed. Each run starts once
the chain's processes are idle (:func:`settle`: what the run before left in flight is done).
The Sluis chain's transaction logs must grow by the number of requests (plus those still in
flight at the end).

    .venv/bin/python bench/chain.py [--duration 10] [--connections 64] [--workers 1]
                                    [--rounds 3] [--txlog-dir DIR] [--quick]
                                    [--metrics-cost | --chain-cost]

``--metrics-cost`` measures only the Sluis chain (keep-alive, saturating), its gateways
restarted with their metrics on and off (``SLUIS_METRICS``, appliance.metrics.registry) in
turn, and prints the throughput the metrics cost (target: at most 5%). ``--chain-cost`` does
the same with the transaction log's hash chain on and off (``SLUIS_BENCH_TXLOG_UNCHAINED``,
appliance.txlog.gateway; issue 22's target: at most 5%).

Needs ``wrk`` and ``nginx`` from Debian (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.config import load_config
from appliance.demo.gateways import configure_gateways
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
from appliance.demo.processes import Component, free_port, start_component
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

# --- wrk output --------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m|h),", re.M)
_RATE = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rate: float  # requests per second
    percentiles_ms: dict[float, float]  # 50.0 -> milliseconds
    non_2xx: int = 0  # wrk counts "Non-2xx or 3xx"; the backend only answers 200
    socket_errors: int = 0  # connect + read + write + timeout
    socket_detail: str = ""  # wrk's own line: "connect 0, read 2, write 0, timeout 0"

    @property
    def p50(self) -> float:
        return self.percentiles_ms[50.0]

    @property
    def p99(self) -> float:
        return self.percentiles_ms[99.0]

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def duration_ms(value: str, unit: str) -> float:
    """A wrk time (``45.00us``, ``1.30ms``, ``2.00s``) in milliseconds."""
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """The figures of ``wrk --latency`` output; ValueError when it holds none (wrk failed)."""
    done = _REQUESTS.search(text)
    rate = _RATE.search(text)
    percentiles = {float(p): duration_ms(v, u) for p, v, u in _PERCENTILE.findall(text)}
    if done is None or rate is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise ValueError(f"not the output of wrk --latency:\n{text}")
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=duration_ms(done.group(2), done.group(3)) / 1000,
        rate=float(rate.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        socket_detail=sockets.group(0).removeprefix("Socket errors: ") if sockets else "",
    )


def wrk_argv(
    url: str, *, threads: int, connections: int, seconds: float, headers: Sequence[str] = ()
) -> list[str]:
    # A slow answer is latency, not an error: wrk's own timeout (2 s) would count it as one.
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    argv.append("--latency")
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


# --- nginx configurations ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """Software certificate chain and key (nginx cannot reach the token), plus the Group's
    trust anchors and CRLs."""

    chain: Path
    key: Path
    trust_anchors: Path
    crls: Path


# TLS 1.2 suites of the NCSC policy Sluis enforces (appliance.tls.policy), for a fair fight.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ]
)
# Connections an upstream block keeps open per worker; above what wrk opens in this bench.
UPSTREAM_KEEPALIVE = 128
BACKEND_BODY = '{"service":"bench backend","authorization":$authorized}'


def nginx_config(prefix: Path, http_body: str) -> str:
    """A whole nginx.conf for a foreground instance that keeps every file under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes auto;
daemon off;
master_process on;
pid {prefix / "nginx.pid"};
lock_file {prefix / "nginx.lock"};
error_log {prefix / "error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
{temp}
    # wrk's and the upstreams' connections are never closed for having served many requests.
    keepalive_requests 10000000;
    keepalive_timeout 75s;

{http_body}
}}
"""


def backend_http(port: int) -> str:
    """The backend: a small JSON answer saying whether an access token came along."""
    return f"""\
    map $http_fsc_authorization $authorized {{
        "" false;
        default true;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{BACKEND_BODY}';
        }}
    }}"""


def inway_http(port: int, backend_port: int, tls: TlsFiles) -> str:
    """The "inway": mutual TLS with the Group's CA and CRLs, keep-alive to the backend."""
    return f"""\
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {tls.chain};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {TLS12_CIPHERS};
        ssl_prefer_server_ciphers on;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_client_certificate {tls.trust_anchors};
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_crl {tls.crls};
        ssl_session_cache shared:inway:10m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def outway_http(port: int, inway_port: int, inway_name: str, tls: TlsFiles) -> str:
    """The "outway": plain HTTP in, mutual TLS to the inway over kept-alive connections."""
    return f"""\
    upstream inway {{
        server 127.0.0.1:{inway_port};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass https://inway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate {tls.chain};
            proxy_ssl_certificate_key {tls.key};
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_ciphers {TLS12_CIPHERS};
            proxy_ssl_trusted_certificate {tls.trust_anchors};
            proxy_ssl_crl {tls.crls};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 3;
            proxy_ssl_name {inway_name};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}"""


# --- processes ---------------------------------------------------------------------------------


def wait_port(port: int, alive: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f}s")


@contextmanager
def running_nginx(prefix: Path, http_body: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A foreground nginx (master and workers) with its own prefix; stopped on exit."""
    prefix.mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, http_body))
    argv = ["nginx", "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_port(port, lambda: process.poll() is None, f"nginx in {prefix}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{(prefix / 'error.log').read_text()}") from None
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def process_trees_cpu(roots: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) of every live process in the trees under ``roots``."""
    seconds: dict[int, float] = {}
    for root in roots:
        try:
            parent = psutil.Process(root)
            members = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in members:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[process.pid] = times.user + times.system
    return seconds


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process born in between counts whole)."""
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


# A gateway tree that spends less CPU than this in SETTLE_INTERVAL is idle.
SETTLE_CPU_SECONDS = 0.005
SETTLE_INTERVAL = 0.25
SETTLE_TIMEOUT = 30.0


def settle(roots: Sequence[int]) -> float:
    """Wait until the processes under ``roots`` are idle (at most SETTLE_TIMEOUT seconds);
    return how long that took.

    wrk stops with requests in flight and closes their connections; the gateways finish them
    anyway, each holding its place in the Service's share. A run started at once met them:
    the outway counted 64 in flight plus the new run's and refused a few with 503
    ERROR_CODE_SERVICE_BUSY (the "failed requests" of --metrics-cost's first runs)."""
    started = time.monotonic()
    before = process_trees_cpu(roots)
    while time.monotonic() - started < SETTLE_TIMEOUT:
        time.sleep(SETTLE_INTERVAL)
        after = process_trees_cpu(roots)
        if cpu_used(before, after) < SETTLE_CPU_SECONDS:
            break
        before = after
    return time.monotonic() - started


def software_identity(ca: DemoCA, leaf_chain: Path, directory: Path) -> tuple[Path, Path]:
    """A P-256 software key and a certificate for the same subject and names as the
    organisation's HSM certificate, issued by the same demo CA: what nginx can use."""
    directory.mkdir(parents=True)
    leaf = x509.load_pem_x509_certificate(leaf_chain.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf.subject)
        .add_extension(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
        .sign(key, hashes.SHA256())
    )
    chain, key_path = directory / "chain.pem", directory / "key.pem"
    chain.write_bytes(ca.chain_pem(ca.issue(csr.public_bytes(serialization.Encoding.PEM))))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return chain, key_path


def fsync_ms(directory: Path, count: int = 40) -> float:
    """Median of a 4 KiB write + fsync in ``directory``: what every durable commit waits for."""
    path = directory / "fsync-probe"
    times = []
    with path.open("wb") as probe:
        for _ in range(count):
            probe.write(b"\0" * 4096)
            probe.flush()
            started = time.perf_counter()
            os.fsync(probe.fileno())
            times.append((time.perf_counter() - started) * 1000)
    path.unlink()
    return statistics.median(times)


def count_records(database_url: str) -> int:
    """Rows in a SQLite transaction log (read-only; the gateways keep writing)."""
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM txlog_records").fetchone()[0])


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# --- the measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int
    connections: int
    headers: tuple[str, ...] = ()


@dataclass
class Chain:
    name: str
    port: int
    cpu_roots: tuple[int, ...]  # process trees whose CPU counts; none: not measured
    logs: tuple[str, ...] = ()  # transaction logs that must grow by a record per request


@dataclass
class Run:
    result: WrkResult
    cpu_seconds: float | None
    logged: tuple[int, ...] = ()  # records added to each of the chain's logs

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_seconds is None or not self.result.requests:
            return None
        return self.cpu_seconds / self.result.requests * 1000


@dataclass
class Sample:
    runs: list[Run] = field(default_factory=list)

    def median(self, pick: Callable[[Run], float | None]) -> float | None:
        values = [v for v in map(pick, self.runs) if v is not None]
        return statistics.median(values) if values else None

    @property
    def errors(self) -> int:
        return sum(run.result.errors for run in self.runs)


def measure(
    chain: Chain, variant: Variant, path: str, headers: Sequence[str], seconds: float
) -> Run:
    argv = wrk_argv(
        f"http://127.0.0.1:{chain.port}{path}",
        threads=variant.threads,
        connections=variant.connections,
        seconds=seconds,
        headers=(*headers, *variant.headers),
    )
    if chain.cpu_roots:
        settle(chain.cpu_roots)  # an earlier run's requests are done
    records = [count_records(url) for url in chain.logs]
    cpu_before = process_trees_cpu(chain.cpu_roots)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    cpu_after = process_trees_cpu(chain.cpu_roots)
    added = tuple(count_records(url) - n for url, n in zip(chain.logs, records, strict=True))
    try:
        result = parse_wrk(done.stdout + done.stderr)
    except ValueError:
        raise RuntimeError(f"wrk failed on {chain.name}:\n{done.stdout}{done.stderr}") from None
    cpu = cpu_used(cpu_before, cpu_after) if chain.cpu_roots else None
    return Run(result, cpu, added)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(
    variants: Sequence[Variant],
    chains: Sequence[Chain],
    samples: dict[tuple[str, str], Sample],
) -> list[str]:
    lines = []
    header = (
        f"{'chain':<13}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
        f"{'errors':>8}  txlog records (A, B) per request"
    )
    for variant in variants:
        lines += ["", variant.name, header, "-" * len(header)]
        for chain in chains:
            sample = samples[variant.name, chain.name]
            logged = ""
            if chain.logs:
                requests = sum(run.result.requests for run in sample.runs)
                totals = [sum(run.logged[i] for run in sample.runs) for i in range(len(chain.logs))]
                logged = "  " + ", ".join(f"{t / max(requests, 1):.3f}" for t in totals)
            lines.append(
                f"{chain.name:<13}{_cell(sample.median(lambda r: r.result.rate), ',.0f'):>10}"
                f"{_cell(sample.median(lambda r: r.result.p50), '.2f'):>9}"
                f"{_cell(sample.median(lambda r: r.result.p99), '.2f'):>9}"
                f"{_cell(sample.median(lambda r: r.cpu_ms_per_request), '.3f'):>12}"
                f"{sample.errors:>8}{logged}"
            )
    return lines


def ratios(variants: Sequence[Variant], samples: dict[tuple[str, str], Sample]) -> list[str]:
    saturating, _, serial = variants

    def med(variant: Variant, chain: str, pick: Callable[[Run], float | None]) -> float:
        value = samples[variant.name, chain].median(pick)
        assert value is not None
        return value

    def rate(r: Run) -> float:
        return r.result.rate

    def p50(r: Run) -> float:
        return r.result.p50

    share = med(saturating, SLUIS, rate) / med(saturating, NGINX, rate) * 100
    added = med(serial, SLUIS, p50) - med(serial, DIRECT, p50)
    added_nginx = med(serial, NGINX, p50) - med(serial, DIRECT, p50)
    lines = [
        "",
        f"Sluis req/s as % of the nginx chain's, keep-alive saturating: {share:.1f}% "
        f"(target >= 15%) {'ok' if share >= 15 else 'BELOW TARGET'}",
        f"p50 added over the direct backend at one connection: Sluis {added:.2f} ms "
        f"(target <= 5 ms) {'ok' if added <= 5 else 'ABOVE TARGET'}, nginx chain "
        f"{added_nginx:.2f} ms",
    ]
    for variant in variants:
        sluis = samples[variant.name, SLUIS].median(lambda r: r.cpu_ms_per_request)
        nginx = samples[variant.name, NGINX].median(lambda r: r.cpu_ms_per_request)
        if sluis and nginx:
            lines.append(
                f"CPU per request, Sluis / nginx chain, {variant.name}: {sluis / nginx:.1f}x"
            )
    return lines


# --- the chains --------------------------------------------------------------------------------

DIRECT, NGINX, SLUIS = "direct", "nginx chain", "Sluis chain"
SERVICE = "basisregistratie"
PATH = "/items/42"
PLANS = (
    ("directory", "00000001000000000300"),
    ("a", "00000001000000000301"),
    ("b", "00000001000000000302"),
)


def start_sluis_chain(
    root: Path, backend_port: int, workers: int, stack: ExitStack, txlog_dir: Path | None = None
) -> tuple[Chain, str, dict[str, Member], SluisGateways]:
    """The Group of tests/gateway/test_chain.py: A's outway -> B's inway -> the backend.

    ``txlog_dir`` moves both transaction logs elsewhere (a tmpfs shows the cost of the
    software without the disk's flushes)."""
    ca = DemoCA.open(root / "ca")
    members = provision_group(
        ca,
        root,
        tuple(
            MemberPlan(name, OrganisationIdentity(f"Bench {name}", oin, (f"{name}.bench.test",)))
            for name, oin in PLANS
        ),
        group_id="bench.test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    a, b = members["a"], members["b"]
    gateways = configure_gateways(
        members,
        provider="b",
        consumer="a",
        service=SERVICE,
        backend_url=f"http://127.0.0.1:{backend_port}/api",
        root=root,
    )
    if txlog_dir is not None:
        for name in ("a", "b"):
            config = members[name].config_path
            url = f"sqlite:///{root / name / 'txlog.db'}"
            moved = f"sqlite:///{txlog_dir / f'txlog-{name}.db'}"
            config.write_text(config.read_text().replace(url, moved))
            members[name].config = load_config(config)
    stack.callback(stop_managers, members)
    start_managers(members, root / "logs", workers=1)
    published = b.sluis("contract", "propose-publication", "--service", SERVICE)
    wait_for(lambda: state_of(members["directory"], published["hash"]) == "proposed", "dir")
    members["directory"].sluis("contract", "accept", published["hash"])
    wait_for(lambda: state_of(b, published["hash"]) == "valid", "publication valid at b")
    asked = a.sluis("contract", "propose-connection", "--service-peer", b.oin, "--service", SERVICE)
    wait_for(lambda: state_of(b, asked["hash"]) == "proposed", "b to receive the request")
    b.sluis("contract", "accept", asked["hash"])
    wait_for(lambda: state_of(a, asked["hash"]) == "valid", "connection valid at a")
    grant = str(a.sluis("contract", "show", asked["hash"])["grant_hashes"][0])
    gateways_ = SluisGateways(root, members, gateways.inway_port, gateways.outway_port, workers)
    stack.callback(gateways_.stop)
    return gateways_.start(), grant, members, gateways_


@dataclass
class SluisGateways:
    """B's inway and A's outway, (re)started with an environment of choice."""

    root: Path
    members: dict[str, Member]
    inway_port: int
    outway_port: int
    workers: int
    running: list[Component] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None) -> Chain:
        a, b = self.members["a"], self.members["b"]
        for name, member, component, port in (
            ("inway-b", b, "inway", self.inway_port),
            ("outway-a", a, "outway", self.outway_port),
        ):
            self.running.append(
                start_component(
                    name,
                    member.config_path,
                    component,
                    port=port,
                    workers=self.workers,
                    log_dir=self.root / "logs",
                    env=env,
                )
            )
        logs = []
        for member in (a, b):
            assert member.config.txlog is not None
            logs.append(member.config.txlog.database)
        # `sluis serve` execs gunicorn: the process is the master
        pids = tuple(c.process.pid for c in self.running)
        return Chain(SLUIS, self.outway_port, pids, tuple(logs))

    def stop(self) -> None:
        while self.running:
            self.running.pop().stop()

    def trouble(self, limit: int = 20) -> list[str]:
        """What the running gateways' logs say of requests that failed: request lines
        (``sluis.requests``) whose status is not 2xx, and warnings and errors (tracebacks
        included), at most ``limit`` per gateway."""
        found = []
        for component in self.running:
            lines: list[str] = []
            for line in component.output().splitlines():
                status = re.search(r'"status":\s*(\d+)', line)
                if status is not None and line.lstrip().startswith("{"):
                    failed = not 200 <= int(status.group(1)) < 300
                else:
                    failed = bool(re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error:", line))
                if failed and len(lines) < limit:
                    lines.append(f"{component.name}: {line}")
            found += lines
        return found


def start_nginx_chain(
    root: Path, backend_port: int, members: dict[str, Member], stack: ExitStack
) -> Chain:
    ca = DemoCA.open(root / "ca")
    tls = {}
    for name in ("a", "b"):
        config = members[name].config
        chain, key = software_identity(ca, config.tls.certificate_chain, root / f"{name}-soft")
        tls[name] = TlsFiles(chain, key, config.tls.trust_anchors, config.tls.crls)
    inway_port, outway_port = free_port(), free_port()
    inway = stack.enter_context(
        running_nginx(
            root / "nginx-inway", inway_http(inway_port, backend_port, tls["b"]), inway_port
        )
    )
    outway = stack.enter_context(
        running_nginx(
            root / "nginx-outway",
            outway_http(outway_port, inway_port, members["b"].fqdn, tls["a"]),
            outway_port,
        )
    )
    return Chain(NGINX, outway_port, (inway.pid, outway.pid))


def check_sample(chain: Chain, headers: dict[str, str]) -> None:
    """One request must come back 200 from the backend (through the gateways, if any)."""
    status, answer, body = get(chain.port, PATH, headers)
    if status != 200:
        raise RuntimeError(f"{chain.name}: {status} {answer} {body!r}")
    if chain.name == SLUIS:
        seen = json.loads(body)
        if seen != {"service": "bench backend", "authorization": True}:
            raise RuntimeError(f"{chain.name}: the backend saw {seen}")
        if not answer.get("fsc-transaction-id"):
            raise RuntimeError(f"{chain.name}: no Fsc-Transaction-Id in the answer")


@dataclass(frozen=True)
class Switch:
    """A setting the gateways are restarted with, on and off in turn (``--metrics-cost``,
    ``--chain-cost``): what it costs."""

    what: str  # "the metrics"
    on: tuple[str, dict[str, str]]  # label, environment
    off: tuple[str, dict[str, str]]


METRICS = Switch(
    "the metrics",
    ("metrics on", {"SLUIS_METRICS": "on"}),
    ("metrics off", {"SLUIS_METRICS": "off"}),
)
# appliance.txlog.gateway: the hash chain off, for this measurement only (warns in the log).
CHAINING = Switch(
    "the hash chain",
    ("chained", {}),
    ("unchained", {"SLUIS_BENCH_TXLOG_UNCHAINED": "1"}),
)


def switch_cost(
    gateways: SluisGateways,
    variant: Variant,
    grant: str,
    seconds: float,
    rounds: int,
    switch: Switch,
) -> int:
    """The Sluis chain's throughput and CPU per request with ``switch`` on and off: the
    gateways restarted for each run, the order alternating per round."""
    headers = (f"Fsc-Grant-Hash: {grant}",)
    on_label, off_label = switch.on[0], switch.off[0]
    samples = {on_label: Sample(), off_label: Sample()}
    loads = []
    for round_ in range(rounds):
        order = (switch.on, switch.off) if round_ % 2 == 0 else (switch.off, switch.on)
        for label, env in order:
            gateways.stop()
            chain = gateways.start(env)
            check_sample(chain, {"Fsc-Grant-Hash": grant})
            measure(chain, variant, PATH, headers, min(seconds, 3.0))  # warm-up
            print(f"# round {round_ + 1}: {label}", file=sys.stderr)
            run = measure(chain, variant, PATH, headers, seconds)
            samples[label].runs.append(run)
            loads.append(os.getloadavg()[0])
            if run.result.errors:  # what they were, from the gateways' own logs
                print(
                    f"# round {round_ + 1}, {label}: {run.result.non_2xx} non-2xx, socket "
                    f"errors: {run.result.socket_detail or 'none'}; the gateways' logs say:"
                )
                for line in gateways.trouble() or ["(nothing: no failed request line, no error)"]:
                    print(f"#   {line}")
    print(
        f"# {os.cpu_count()} cores; Sluis chain only, {variant.name}; {rounds} round(s) of "
        f"{seconds:g} s per setting, order alternating, gateways restarted per run; medians; "
        f"load average (1 min) after the runs: {min(loads):.2f} to {max(loads):.2f}"
    )
    header = f"{'':<13}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for setting, sample in samples.items():
        print(
            f"{setting:<13}{_cell(sample.median(lambda r: r.result.rate), ',.0f'):>10}"
            f"{_cell(sample.median(lambda r: r.result.p50), '.2f'):>9}"
            f"{_cell(sample.median(lambda r: r.result.p99), '.2f'):>9}"
            f"{_cell(sample.median(lambda r: r.cpu_ms_per_request), '.3f'):>12}"
            f"{sample.errors:>8}"
        )
    on = samples[on_label].median(lambda r: r.result.rate) or 0.0
    off = samples[off_label].median(lambda r: r.result.rate) or 1.0
    cost = (off - on) / off * 100
    rates = [
        f"{a.result.rate / b.result.rate:.3f}"
        for a, b in zip(samples[on_label].runs, samples[off_label].runs, strict=True)
    ]
    print(f"per round, {on_label} / {off_label} req/s: {', '.join(rates)}")
    print(
        f"throughput cost of {switch.what}: {cost:.1f}% (target <= 5%) "
        f"{'ok' if cost <= 5 else 'ABOVE TARGET'}"
    )
    errors = sum(sample.errors for sample in samples.values())
    if errors:
        print(f"FAILED: {errors} non-2xx or socket errors")
    return 1 if errors else 0


def tool_version(argv: list[str]) -> str:
    """The first word with a digit in what ``argv`` says (``debian/4.1.0-3+b2``)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = re.search(r"\S*\d\S*", done.stdout + done.stderr)
    return found.group(0) if found else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (a, b)")
    parser.add_argument(
        "--workers", type=int, default=1, help="gunicorn workers of the outway and the inway each"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument(
        "--txlog-dir",
        type=Path,
        help="put the transaction logs here instead of beside the appliances (a tmpfs such "
        "as /dev/shm shows the software without the disk's flushes; not durable)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="only the Sluis chain, keep-alive saturating, its gateways restarted with their "
        "metrics on and off (SLUIS_METRICS) in turn: what the metrics cost",
    )
    parser.add_argument(
        "--chain-cost",
        action="store_true",
        help="only the Sluis chain, keep-alive saturating, its gateways restarted with the "
        "transaction log's hash chain on and off in turn: what the chain costs",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.connections = 2.0, 1, 16
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/setup.sh (Debian packages wrk, nginx)")
            return 2

    c = args.connections
    variants = (
        Variant(f"keep-alive, {c} connections, saturating (wrk -t2 -c{c})", 2, c),
        Variant(
            f"new connection per request to the outway ('Connection: close', wrk -t2 -c{c})",
            2,
            c,
            ("Connection: close",),
        ),
        Variant("one connection, one request after another (wrk -t1 -c1)", 1, 1),
    )
    bypass_proxy_for_loopback()
    root = Path(tempfile.mkdtemp(prefix="sluis-bench-chain-"))
    try:
        with ExitStack() as stack:
            DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
            backend_port = free_port()
            backend = stack.enter_context(
                running_nginx(root / "nginx-backend", backend_http(backend_port), backend_port)
            )
            print(
                "# setting up the Group (SoftHSM tokens, Managers, contracts)...", file=sys.stderr
            )
            sluis, grant, members, gateways = start_sluis_chain(
                root, backend_port, args.workers, stack, args.txlog_dir
            )
            for wanted, switch in ((args.metrics_cost, METRICS), (args.chain_cost, CHAINING)):
                if wanted:
                    return switch_cost(
                        gateways, variants[0], grant, args.duration, args.rounds, switch
                    )
            nginx = start_nginx_chain(root, backend_port, members, stack)
            chains = (Chain(DIRECT, backend_port, ()), nginx, sluis)
            # The same request everywhere; only the Sluis outway reads the grant header.
            headers = (f"Fsc-Grant-Hash: {grant}",)
            for chain in chains:
                check_sample(chain, {"Fsc-Grant-Hash": grant})
                measure(chain, variants[0], PATH, headers, min(args.duration, 3.0))  # warm-up
            logs_dir = args.txlog_dir or root
            flush_before = fsync_ms(logs_dir)
            samples = {(v.name, ch.name): Sample() for v in variants for ch in chains}
            for round_ in range(args.rounds):
                for variant in variants:
                    # Rotate the order so that no chain always runs right after another.
                    for chain in chains[round_ % 3 :] + chains[: round_ % 3]:
                        print(
                            f"# round {round_ + 1}: {variant.name}: {chain.name}", file=sys.stderr
                        )
                        run = measure(chain, variant, PATH, headers, args.duration)
                        samples[variant.name, chain.name].runs.append(run)
            print(
                f"# {os.cpu_count()} cores, shared by wrk, the backend and the gateways; "
                f"wrk {tool_version(['wrk', '-v'])}, nginx {tool_version(['nginx', '-v'])}"
            )
            print(
                f"# {args.rounds} round(s) of {args.duration:g} s per chain and variant, "
                f"interleaved; medians. GET {PATH}, backend: nginx return 200 "
                f"(backend pid {backend.pid}, not counted in CPU)"
            )
            print(
                "# nginx chain: outway nginx (HTTP) -> inway nginx (mutual TLS, "
                "ssl_verify_client on, CRLs, TLS 1.2/1.3), upstream keep-alive; its keys are "
                "software key FILES from the same demo CA (nginx cannot use the token)"
            )
            print(
                f"# Sluis chain: outway (HTTP) -> inway (mutual TLS, keys in SoftHSM), gunicorn "
                f"{args.workers} worker(s) each, access token checked, a durable transaction "
                "log record (SQLite, synchronous=FULL) at both ends of every request"
            )
            print(
                f"# disk under the transaction logs ({logs_dir}): write + fsync p50 "
                f"{flush_before:.2f} ms before the runs, {fsync_ms(logs_dir):.2f} ms after; "
                "every Sluis request waits for two such commits"
            )
            print("\n".join(report(variants, chains, samples)))
            print("\n".join(ratios(variants, samples)))
            problems = [
                f"{chain} / {variant}: {sum(r.result.non_2xx for r in sample.runs)} non-2xx, "
                f"{sum(r.result.socket_errors for r in sample.runs)} socket errors"
                for (variant, chain), sample in samples.items()
                if sample.errors
            ]
            problems += [
                f"Sluis chain / {v.name}: a run added fewer log records than it completed "
                f"requests ({run.logged} < {run.result.requests})"
                for v in variants
                for run in samples[v.name, SLUIS].runs
                if any(n < run.result.requests for n in run.logged)
            ]
            for problem in problems:
                print(f"FAILED: {problem}")
            return 1 if problems else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""A real Patroni cluster for the failover tests: one etcd and PostgreSQL 15 nodes under
Patroni, as local processes on private ports in a temporary directory (no containers).

PostgreSQL refuses to run as root, so as root every process runs as the ``postgres`` system
user (through ``runuser``, as tests/postgres.py does). The Patroni timings are the smallest
Patroni accepts (``ttl`` 20 s): a killed leader's key expires after at most 20 s, and the
synchronous standby takes over within a second of that. fsync is off: the tests kill
processes, never the machine, so the page cache keeps every commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_USER = "postgres"
SCOPE = "sluis-test"
TTL_SECONDS = 20  # Patroni's minimum


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Node:
    name: str
    pg_port: int
    api_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    log: Any = field(default=None, repr=False)

    def state(self) -> dict[str, Any] | None:
        """Patroni's REST answer about this node, or None when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api_port}/patroni", timeout=2
            ) as r:
                body: dict[str, Any] = json.load(r)
                return body
        except OSError:
            return None

    def postmaster_pid(self) -> int | None:
        pid_file = self.directory / "data" / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class PatroniCluster:
    """``nodes`` Patroni nodes on one etcd member, ``synchronous_mode`` on."""

    def __init__(self, root: Path, nodes: int, *, strict: bool = False) -> None:
        self.root = root
        self.strict = strict
        self.etcd_client_port = free_port()
        self.etcd_peer_port = free_port()
        self.nodes = [
            Node(f"node{i}", free_port(), free_port(), root / f"node{i}") for i in range(nodes)
        ]
        self._etcd: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        """A multi-host SQLAlchemy URL naming every node, as docs/ha-database.md shows."""
        hosts = "&".join(f"host=127.0.0.1:{node.pg_port}" for node in self.nodes)
        return f"postgresql+psycopg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{node.pg_port}/{database}"

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, argv: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], Any]:
        log = log_path.open("ab")
        process = subprocess.Popen(
            _as_owner(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,  # one process group to kill: runuser and what it runs
        )
        return process, log

    def start_etcd(self) -> None:
        data = self.root / "etcd"
        client = f"http://127.0.0.1:{self.etcd_client_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd, self._etcd_log = self._spawn(
            [
                "etcd",
                "--name=etcd0",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd0={peer}",
                "--unsafe-no-fsync",
            ],
            self.root / "etcd.log",
        )
        self._wait(lambda: self._etcd_healthy(), 20, "etcd to answer")

    def _etcd_healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.etcd_client_port}/health"
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(json.load(r).get("health") == "true")
        except OSError:
            return False

    def _config(self, node: Node) -> dict[str, Any]:
        return {
            "scope": SCOPE,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_client_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_SECONDS,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "synchronous_mode_strict": self.strict,
                    "postgresql": {
                        "use_pg_rewind": False,
                        "parameters": {
                            "max_connections": 50,
                            "shared_buffers": "32MB",
                            "fsync": "off",
                            "full_page_writes": "off",
                            "wal_keep_size": "64MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "no-sync"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.directory / "data"),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.directory / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "test"},
                    "replication": {"username": "replicator", "password": "test"},
                },
                "parameters": {"unix_socket_directories": str(node.directory)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
        }

    def start(self, node: Node) -> None:
        node.directory.mkdir(exist_ok=True)
        config = node.directory / "patroni.yml"
        config.write_text(yaml.safe_dump(self._config(node)))
        if os.geteuid() == 0:
            for path in (node.directory, config):
                shutil.chown(path, user=SYSTEM_USER, group=SYSTEM_USER)
        node.process, node.log = self._spawn(
            ["patroni", str(config)], node.directory / "patroni.log"
        )

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Patroni and its postmaster (the postgres children follow)."""
        postmaster = node.postmaster_pid()
        if node.process is not None:
            _kill_group(node.process.pid)
            node.process.wait(timeout=10)
            node.process = None
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
            if node.log is not None:
                node.log.close()
        if self._etcd is not None:
            _kill_group(self._etcd.pid)
            self._etcd.wait(timeout=10)
            self._etcd_log.close()

    # -- state -------------------------------------------------------------------------------

    def leader(self) -> Node | None:
        for node in self.nodes:
            state = node.state()
            if (
                state
                and state.get("role") in ("master", "primary")
                and state.get("state") == ("running")
            ):
                return node
        return None

    def cluster(self) -> dict[str, Any]:
        """Patroni's view of the cluster (``GET /cluster``) from any node that answers."""
        for node in self.nodes:
            try:
                url = f"http://127.0.0.1:{node.api_port}/cluster"
                with urllib.request.urlopen(url, timeout=2) as r:
                    body: dict[str, Any] = json.load(r)
                    return body
            except OSError:
                continue
        return {}

    def sync_standby(self) -> str | None:
        for member in self.cluster().get("members", []):
            if member.get("role") == "sync_standby" and member.get("state") in (
                "running",
                "streaming",
            ):
                return str(member["name"])
        return None

    def wait_ready(self, timeout: float = 45) -> Node:
        """Until a leader runs and another node is its synchronous standby."""
        self._wait(lambda: self.leader() is not None and self.sync_standby(), timeout, "sync")
        leader = self.leader()
        assert leader is not None
        return leader

    def _wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        parts = []
        for log in sorted(self.root.glob("**/*.log")):
            parts.append(
                f"--- {log.relative_to(self.root)}\n{log.read_text(errors='replace')[-3000:]}"
            )
        return "\n".join(parts)


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (runuser stays the parent of what it runs)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def patroni_cluster(nodes: int = 2, *, strict: bool = False) -> Iterator[PatroniCluster]:
    # Not under pytest's basetemp: that is 0700 root and the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="sluis-ha-"))
    if os.geteuid() == 0:
        shutil.chown(root, user=SYSTEM_USER, group=SYSTEM_USER)
    cluster = PatroniCluster(root, nodes, strict=strict)
    try:
        cluster.start_etcd()
        cluster.start(cluster.nodes[0])
        cluster._wait(lambda: cluster.leader() is not None, 45, "the first leader")
        for node in cluster.nodes[1:]:
            cluster.start(node)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

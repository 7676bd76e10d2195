"""Start and stop Sluis components as real processes (for the demo and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.config import load_config
from appliance.errors import SluisError
from appliance.forwarding.observe import is_request_line


class ProcessError(SluisError):
    """A component did not start or stop as expected."""


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    def output(self) -> str:
        """Everything the component wrote (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log(self) -> str:
        """Its diagnostic log: the output without the gateways' request lines (one per
        request by design, appliance.forwarding.observe), so that what a failure costs in log
        lines can be counted apart from the traffic."""
        lines = self.output().splitlines(keepends=True)
        return "".join(line for line in lines if not is_request_line(line))

    def request_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if is_request_line(line)]

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(component: Component, timeout: float = 60) -> None:
    """Wait until a worker answers, not merely until the master listens.

    Gunicorn's master binds the port before its workers have booted (an HSM login can take
    seconds on a loaded machine); connections queue in the backlog meanwhile. A peer that sends
    a first request then may wait out its own timeout and back off, so "started" means: some
    worker read our bytes and answered or closed (a TLS listener answers a plain request with an
    alert or a close, which also proves a worker is there).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component.process.poll() is not None:
            raise ProcessError(
                f"{component.name} exited with {component.process.returncode}:\n{component.log()}"
            )
        if _worker_answers(component.host, component.port):
            return
        time.sleep(0.1)
    raise ProcessError(f"{component.name} did not answer within {timeout}s:\n{component.log()}")


def _worker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as probe:
            probe.settimeout(2)
            probe.sendall(b"GET /.sluis-ready HTTP/1.0\r\nHost: probe\r\n\r\n")
            probe.recv(1)  # an answer or EOF: either way a worker took the connection
            return True
    except ConnectionResetError:
        return True  # a worker took it and dropped it: it is there
    except OSError:  # refused (not bound yet) or timed out (no worker accepting yet)
        return False


def start_component(
    name: str,
    config: Path,
    component: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 2,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Component:
    """Run ``sluis serve <component>`` in the background and wait until it listens."""
    port = port or free_port(host)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "appliance",
        "serve",
        component,
        "--config",
        str(config),
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    started = Component(name, process, host, port, log_path)
    try:
        wait_listening(started)
    except ProcessError:
        started.stop()
        raise
    return started


def run_with_identity(
    config: Path, argv: list[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``sluis <argv>`` in a fresh interpreter with this appliance's OpenSSL config."""
    sluis = load_config(config)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *argv, "--config", str(config)],
        env={**os.environ, "OPENSSL_CONF": str(sluis.tls.openssl_conf), **sluis.hsm.environment()},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

"""Sluis' gunicorn master (``appliance.serving.arbiter``) with real processes: on HUP the old
workers serve until the new ones do; TTIN/TTOU as gunicorn's; the timeout when new workers do
not come up; a second HUP while a reload is pending; a new worker that dies before it serves;
workers whose master was SIGKILLed finish their requests in flight, then stop.

The master runs as ``sluis serve`` runs it (``gunicorn_command``: our entry module, our
gunicorn configuration, Sluis' worker), with the plain HTTP listener (no TLS, no HSM) and
``slowstart.py``, whose workers take as long to start as a file says.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from processwatch import port_free, running
from slowstart import DELAY_FILE_ENV

from appliance.demo.processes import Component, free_port, wait_listening
from appliance.serving.arbiter import READY_TIMEOUT_ENV
from appliance.serving.launch import ServeOptions, gunicorn_command

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CONFIG = """
[hsm]
token_label = "unused"
softhsm_conf = "{root}/softhsm2.conf"

[tls]
certificate_chain = "{root}/c.pem"
key_reference = "{root}/k.pem"
trust_anchors = "{root}/a.pem"
crls = "{root}/crl.pem"
openssl_conf = "{root}/openssl.cnf"
"""


class Server:
    def __init__(self, component: Component, delay_file: Path) -> None:
        self.component = component
        self.delay_file = delay_file

    def send(self, sig: signal.Signals) -> None:
        self.component.process.send_signal(sig)

    def workers(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.component.process.pid).children()}

    def serving(self, pids: set[int]) -> bool:
        log = self.component.log()
        return all(f"worker {pid}: serving" in log for pid in pids)

    def log(self) -> str:
        return self.component.log()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(workers: int = 2, env: dict[str, str] | None = None) -> Server:
        (tmp_path / "openssl.cnf").write_text("")
        config = tmp_path / "sluis.toml"
        config.write_text(CONFIG.format(root=tmp_path))
        port = free_port()
        argv, full_env = gunicorn_command(
            ServeOptions(
                config=config,
                app="slowstart:app",
                bind=f"127.0.0.1:{port}",
                workers=workers,
                plain_http=True,
            ),
            os.environ,
        )
        delay_file = tmp_path / "delay"
        python_path = [str(HERE), *filter(None, [full_env.get("PYTHONPATH")])]
        full_env.update(
            {
                "PYTHONPATH": os.pathsep.join(python_path),
                DELAY_FILE_ENV: str(delay_file),
                **(env or {}),
            }
        )
        log_path = tmp_path / f"gunicorn-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        server = Server(Component("slowstart", process, "127.0.0.1", port, log_path), delay_file)
        started.append(server)
        wait_listening(server.component)
        wait_until(lambda: len(server.workers()) == workers and server.serving(server.workers()))
        return server

    yield start
    for server in started:
        server.component.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {condition}")


class Traffic(threading.Thread):
    """A client: a NEW connection and one request every 20 ms, 1.5 s to answer."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.done = threading.Event()
        self.answered: list[tuple[float, int]] = []  # (time.monotonic(), worker pid)
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.server.component.port, timeout=1.5)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    self.answered.append((time.monotonic(), int(body)))
                else:
                    self.failures.append(f"{time.monotonic():.2f}: status {response.status}")
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{time.monotonic():.2f}: {e!r}")
            finally:
                conn.close()
            time.sleep(max(0.0, 0.02 - (time.monotonic() - began)))

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)


def pids(values: set[int]) -> str:
    return ", ".join(str(pid) for pid in sorted(values))


def test_hup_keeps_the_old_workers_serving_until_the_new_ones_do(
    start: Callable[..., Server],
) -> None:
    server = start(workers=2)
    old = server.workers()
    server.delay_file.write_text("2")  # the new workers take 2 s before they accept

    with Traffic(server) as traffic:
        time.sleep(0.3)
        hup_at = time.monotonic()
        server.send(signal.SIGHUP)
        wait_until(lambda: not old & server.workers() and server.serving(server.workers()))
        time.sleep(0.3)

    # Plain gunicorn stops the old workers at once: for 2 s nobody accepts.
    assert traffic.failures == [], traffic.failures
    assert len(traffic.answered) > 50
    new = server.workers()
    assert len(new) == 2
    assert not new & old
    # While the new workers started, the old ones answered; then the new ones.
    assert {pid for t, pid in traffic.answered if t > hup_at + 1.5} & old
    assert {pid for _, pid in traffic.answered} & new
    log = server.log()
    assert "reload: starting 2 new workers, the old ones serve until they are ready" in log
    assert f"reload: 2 new workers serving, stopping the old ones: pids {pids(old)}" in log


def test_ttin_adds_a_worker_and_ttou_stops_the_oldest(start: Callable[..., Server]) -> None:
    server = start(workers=1)
    (first,) = server.workers()

    server.send(signal.SIGTTIN)
    wait_until(lambda: len(server.workers()) == 2 and server.serving(server.workers()))
    (added,) = server.workers() - {first}

    server.send(signal.SIGTTOU)
    wait_until(lambda: server.workers() == {added})
    time.sleep(1.5)  # the master's loop has run again: nothing else changes
    assert server.workers() == {added}
    assert "reload:" not in server.log()


def test_new_workers_too_slow_the_old_ones_stop_after_the_timeout(
    start: Callable[..., Server],
) -> None:
    server = start(workers=2, env={READY_TIMEOUT_ENV: "1"})
    old = server.workers()
    server.delay_file.write_text("5")  # longer than the timeout

    server.send(signal.SIGHUP)
    wait_until(lambda: not old & server.workers(), timeout=15)
    new = server.workers()
    assert len(new) == 2
    assert not server.serving(new), "the old ones stopped before the new ones served"
    log = server.log()
    assert (
        f"reload: new workers not serving after 1s: pids {pids(new)}; "
        f"stopping the old ones anyway: pids {pids(old)}"
    ) in log
    assert "new workers serving, stopping" not in log

    wait_until(lambda: server.serving(new), timeout=20)  # and they do come up
    assert server.workers() == new


def test_a_second_hup_supersedes_the_pending_reload(start: Callable[..., Server]) -> None:
    server = start(workers=2)
    old = server.workers()
    server.delay_file.write_text("2")

    with Traffic(server) as traffic:
        server.send(signal.SIGHUP)
        wait_until(lambda: len(server.workers()) == 4)
        superseded = server.workers() - old
        time.sleep(0.5)
        server.send(signal.SIGHUP)
        wait_until(lambda: not (old | superseded) & server.workers())
        wait_until(lambda: server.serving(server.workers()))
        time.sleep(0.3)

    assert traffic.failures == [], traffic.failures
    newest = server.workers()
    assert len(newest) == 2
    log = server.log()
    assert f"reload: superseded, stopping its workers not serving yet: pids {pids(superseded)}" in (
        log
    )
    assert log.count("reload: starting 2 new workers") == 2
    # Once, when the newest generation serves; the superseded workers were stopped before.
    assert log.count("new workers serving, stopping the old ones") == 1
    assert f"reload: 2 new workers serving, stopping the old ones: pids {pids(old)}" in log


def test_a_new_worker_that_dies_before_serving_is_replaced_and_awaited(
    start: Callable[..., Server],
) -> None:
    server = start(workers=2)
    old = server.workers()
    server.delay_file.write_text("2")

    server.send(signal.SIGHUP)
    wait_until(lambda: len(server.workers()) == 4)
    victim = min(server.workers() - old)
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(server.workers() - old - {victim}) == 2)
    assert old <= server.workers(), "the old workers still serve"

    wait_until(lambda: not old & server.workers())
    new = server.workers()
    assert victim not in new
    assert len(new) == 2
    assert server.serving(new)
    assert f"reload: 2 new workers serving, stopping the old ones: pids {pids(old)}" in server.log()


def test_orphaned_workers_finish_requests_in_flight_then_stop(start: Callable[..., Server]) -> None:
    """The master is SIGKILLed while a request takes 3 s: the workers stop accepting within
    about a second (the port is free), the request is answered, then they exit."""
    server = start(workers=2)
    workers = [psutil.Process(pid) for pid in server.workers()]
    port = server.component.port
    answer: list[tuple[int, float]] = []

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/sleep/3")
        answer.append((conn.getresponse().status, time.monotonic()))

    client = threading.Thread(target=slow, daemon=True)
    client.start()
    time.sleep(0.5)  # in flight at a worker
    killed = time.monotonic()
    server.send(signal.SIGKILL)
    server.component.process.wait(10)
    wait_until(lambda: port_free(port), timeout=5)
    freed = time.monotonic() - killed
    assert client.is_alive(), "the request should still be in flight when the port is free"
    client.join(30)
    assert answer, "the request in flight was not answered"
    status, answered = answer[0]
    assert status == 200
    wait_until(lambda: not any(running(w) for w in workers), timeout=10)
    gone = time.monotonic() - killed
    print(f"port free {freed:.1f} s, answered {answered - killed:.1f} s, workers gone {gone:.1f} s")
    assert answered - killed >= 2  # it was not cut off

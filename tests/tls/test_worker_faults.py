"""Faults of the process model with real gunicorn and SoftHSM (issue 16): workers that cannot
start because the token is gone back off and recover by themselves; workers whose master was
SIGKILLed stop and free the port.

Organisation C has a token of its own here: its token directory is moved away and back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from processwatch import port_free, running
from tlsgroup import Appliance, Group, appliance

from appliance.demo.processes import Component, free_port, start_component
from appliance.demo.provision import install_trust

pytestmark = pytest.mark.slow

OIN_C = "00000001000000000016"


@pytest.fixture(scope="module")
def org_c(group: Group) -> Appliance:
    c = appliance(group.ca, group.root, "c", OIN_C, "tls-c")
    install_trust(group.ca, c.config_path.parent)
    return c


@pytest.fixture
def server_c(org_c: Appliance, group: Group, request: pytest.FixtureRequest) -> Iterator[Component]:
    component = start_component(
        f"c-{request.node.name}",
        org_c.config_path,
        "whoami",
        workers=2,
        log_dir=group.root / "logs",
    )
    yield component
    component.stop()


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.1)


def _token_dir(c: Appliance) -> Path:
    conf = c.config.hsm.softhsm_conf
    assert conf is not None
    return conf.parent / "tokens"


def _new_lines(component: Component, offset: int) -> list[str]:
    return component.log()[offset:].splitlines()


def _watch_workers(master: psutil.Process, seconds: float) -> set[int]:
    """Every worker pid seen in ``seconds`` (a failed attempt lives for a few hundred ms)."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen.update(p.pid for p in master.children())
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    return seen


def test_workers_back_off_while_the_token_is_gone_and_recover_without_a_restart(
    group: Group, org_c: Appliance, server_c: Component
) -> None:
    master = psutil.Process(server_c.process.pid)
    _wait_for(lambda: server_c.log().count(": serving") == 2, 60)
    before = {p.pid for p in master.children()}
    assert len(before) == 2
    tokens = _token_dir(org_c)
    away = tokens.with_name("tokens.away")
    offset = len(server_c.log())
    tokens.rename(away)
    try:
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        window = 12.0
        attempts = _watch_workers(master, window) - before
        lines = _new_lines(server_c, offset)
    finally:
        away.rename(tokens)
    print(f"{len(attempts)} boot attempts and {len(lines)} log lines in {window:g} s:")
    print("\n".join(lines))
    # Back-off 0.5, 1, 2, 4, 8 s: at most 6 attempts in 12 s (gunicorn: about 2 a second).
    assert 2 <= len(attempts) <= 6, attempts
    cannot = [line for line in lines if "worker cannot start" in line]
    assert len(cannot) == 1, lines
    assert "HSM token not" in cannot[0], cannot[0]
    assert "retrying in 0.5 s" in cannot[0], cannot[0]
    assert "Traceback" not in "\n".join(lines)
    # The SIGKILL, the first attempt's boot and exit, the state line: nothing per attempt.
    assert len(lines) <= 5, lines

    # The token is back: the next attempt (at most 16 s away by now) serves, same master.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        log = server_c.log()[offset:]
        if "worker cannot start: over after" in log and log.count(": serving") >= 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no worker serves again:\n{server_c.log()[offset:]}")
    assert server_c.process.poll() is None
    deadline = time.monotonic() + 20
    while len(master.children()) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(master.children()) == 2
    code, result = group.a.probe(server_c, org_c.fqdn, "--count", "20", "--concurrency", "4")
    assert code == 0, result
    assert result["failures"] == {}


def test_workers_stop_when_their_master_is_killed(server_c: Component) -> None:
    master = psutil.Process(server_c.process.pid)
    # The listener answers once one worker serves; the other may still be booting (CI saw 1).
    _wait_for(lambda: server_c.log().count(": serving") == 2, 60)
    workers = master.children()
    assert len(workers) == 2
    os.kill(master.pid, signal.SIGKILL)
    server_c.process.wait(10)
    started = time.monotonic()
    alive = list(workers)
    while alive and time.monotonic() - started < 10:
        alive = [w for w in alive if running(w)]
        time.sleep(0.05)
    took = time.monotonic() - started
    for worker in alive:
        worker.kill()
    print(f"workers gone {took:.1f} s after the master's SIGKILL")
    assert not alive, f"workers {[w.pid for w in alive]} serve on without their master"
    assert took < 5
    assert port_free(server_c.port)
    assert f"master {master.pid} is gone" in server_c.log()


def test_a_configuration_error_still_halts_the_master(org_c: Appliance, group: Group) -> None:
    """Waiting does not fix sluis.toml: C has no [outway] section, so ``sluis serve outway``
    exits (as gunicorn's own master does when a worker fails to boot), and says why."""
    log = group.root / "logs" / "c-outway.log"
    log.parent.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "appliance", "serve", "outway", "--config"]
    argv += [str(org_c.config_path), "--bind", f"127.0.0.1:{free_port()}", "--workers", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert process.wait(60) == 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "no [outway] section" in text, text
    assert "Worker failed to boot" in text, text
    assert "worker cannot start" not in text  # not the back-off

"""The HSM pitfalls under gunicorn: fork, concurrent logins, stale OpenSSL errors under load."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from tlsgroup import OIN_A, Group

from appliance.demo.processes import Component, start_component

SOFTHSM_LIBRARY = "libsofthsm2.so"


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _token_files(group: Group) -> list[Path]:
    conf = group.b.config.hsm.softhsm_conf
    assert conf is not None
    return list((conf.parent / "tokens").rglob("token.object"))


def test_several_workers_answer_under_concurrent_handshakes(
    group: Group, server_b: Component
) -> None:
    code, result = group.a.probe(server_b, group.b.fqdn, "--count", "600", "--concurrency", "50")
    # Zero tolerance: before the error-queue fix about 1-2% failed with "General Error".
    assert result["failures"] == {}, result
    assert code == 0
    assert result["ok"] == 600
    assert len(result["worker_pids"]) >= 2, "the load should reach several workers"
    assert result["first_response"]["peer_id"] == OIN_A


def test_master_never_touches_the_hsm(server_b: Component) -> None:
    master = psutil.Process(server_b.process.pid)
    workers = master.children()
    assert len(workers) == 3
    # The key is only used in workers, after fork; the master never loaded the PKCS#11 module.
    assert SOFTHSM_LIBRARY not in _maps(master.pid)
    for worker in workers:
        assert SOFTHSM_LIBRARY in _maps(worker.pid)


def test_a_killed_worker_is_replaced_and_builds_its_own_context(
    group: Group, server_b: Component
) -> None:
    master = psutil.Process(server_b.process.pid)
    victim = master.children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = {p.pid for p in master.children()}
        if victim.pid not in pids and len(pids) == 3:
            break
        time.sleep(0.2)
    else:
        pytest.fail("gunicorn did not replace the killed worker")
    code, result = group.a.probe(server_b, group.b.fqdn, "--count", "60", "--concurrency", "12")
    assert code == 0, result
    assert result["failures"] == {}


def _wait_ready(component: Component, count: int, timeout: float = 90) -> int:
    """Wait until ``count`` workers in all have logged that their TLS context is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = component.log().count("TLS context ready")
        if ready >= count:
            return ready
        time.sleep(0.2)
    pytest.fail(f"only {component.log().count('TLS context ready')} of {count} workers ready")


def test_login_storm_does_not_corrupt_the_token(group: Group) -> None:
    """Eight workers log in at start and again on every reload (HUP), all at once."""
    storm = start_component(
        "b-storm", group.b.config_path, "whoami", workers=8, log_dir=group.root / "logs"
    )
    try:
        ready = _wait_ready(storm, 8)
        for _ in range(3):
            os.kill(storm.process.pid, signal.SIGHUP)
            # All eight new workers log in to the token at the same moment.
            ready = _wait_ready(storm, ready + 8)
            code, result = group.a.probe(
                storm, group.b.fqdn, "--count", "80", "--concurrency", "16"
            )
            assert code == 0, result
        assert "Traceback" not in storm.log()
    finally:
        storm.stop()
    for token_object in _token_files(group):
        assert token_object.stat().st_size > 0, f"{token_object} was truncated"
    # The token still works for a fresh process.
    after = start_component(
        "b-after", group.b.config_path, "whoami", workers=1, log_dir=group.root / "logs"
    )
    try:
        code, result = group.a.probe(after, group.b.fqdn)
        assert code == 0, result
    finally:
        after.stop()


def test_plain_http_listener_for_the_internal_network(group: Group) -> None:
    """The outway's listener: plain HTTP, no TLS context, no HSM in the worker."""
    import http.client
    import subprocess

    from appliance.demo.processes import free_port
    from appliance.serving.launch import ServeOptions, gunicorn_command

    port = free_port()
    argv, env = gunicorn_command(
        ServeOptions(
            config=group.b.config_path,
            app="appliance.serving.whoami:create_app()",
            bind=f"127.0.0.1:{port}",
            workers=1,
            plain_http=True,
        ),
        os.environ,
    )
    log = group.root / "logs" / "plain.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/whoami")
                response = conn.getresponse()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # Plain HTTP reached the app; without a client certificate it has no peer identity.
        assert response.status == 400
        assert (
            response.getheader("Fsc-Error-Code")
            == "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
        )
        worker = psutil.Process(process.pid).children()[0]
        assert SOFTHSM_LIBRARY not in _maps(worker.pid)
    finally:
        process.terminate()
        process.wait(30)

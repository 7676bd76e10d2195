"""The outway's outgoing side when the network HSM goes away and comes back: gunicorn (two
real Sluis workers) serving ``outgoing_app`` (plain HTTP in, the outway's forwarder out: a new
mutual-TLS connection per request, its client key in a p11-kit-served token), two clients
sending a request every 20 ms, the p11-kit server stopped for two seconds. Nothing polls
readiness (the app has none).

The test prints the requests, the failures by kind and the recovery time (from the token's
return to the first request answered again), and asserts:

- the outway answers in its own FSC format, 503 ``ERROR_CODE_HSM_UNAVAILABLE`` once it found
  its key unusable, never a 5xx without an FSC code;
- it recovers by itself within 10 s of the token's return (the key watch replaces the worker);
- the log holds one line per worker for the outage and one when back, and no line blaming the
  inway (``inway ... unreachable``, or ``refused the peer`` without saying that the outway's own
  module may be the cause), none per request.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from outage import (
    CLIENTS,
    WORKERS,
    Case,
    Run,
    run_under_load,
    software_peer,
    summarise,
    wait_for_workers,
    watch_lines,
)
from test_hsm_listener_outage import p11kit_case, tpm_case

from appliance.demo.processes import Component, free_port, wait_listening
from appliance.pki.ca import DemoCA
from appliance.serving.launch import ServeOptions, gunicorn_command

pytestmark = pytest.mark.slow
__all__ = ["p11kit_case", "tpm_case"]  # the fixtures, shared with the listener's test

UPSTREAM = "inway.upstream.sluis.test"


class Answer(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: the connection closes after each answer, so every request is a new handshake.
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def upstream(ca: DemoCA, where: Path) -> Iterator[str]:
    """The inway's stand-in, listening; yields its origin."""
    ctx = software_peer(
        ca,
        where,
        organisation="Upstream",
        serial="00000001000000000098",
        fqdn=UPSTREAM,
        server=True,
    )

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return ctx.wrap_socket(sock, server_side=True), address

    server = Server(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://{UPSTREAM}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start_outgoing(case: Case, origin: str, log_dir: Path) -> Component:
    port = free_port()
    options = ServeOptions(
        config=case.config.source or Path(),
        app="outgoing_app:create_app()",
        bind=f"127.0.0.1:{port}",
        workers=WORKERS,
        proc_name="sluis-outgoing-test",
        plain_http=True,
    )
    here = str(Path(__file__).parent)
    argv, env = gunicorn_command(
        options,
        {
            **os.environ,
            "SLUIS_TEST_UPSTREAM": origin,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        },
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "outgoing.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    component = Component("outgoing", process, "127.0.0.1", port, log_path)
    try:
        wait_listening(component)
    except Exception:
        component.stop()
        raise
    return component


def one_request(component: Component) -> str:
    """``HTTP 200``, ``HTTP 503 <Fsc-Error-Code>``..., or the kind of connection failure."""
    conn = http.client.HTTPConnection(component.host, component.port, timeout=10)
    try:
        conn.request("GET", "/through")
        answer = conn.getresponse()
        answer.read()
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()
    code = answer.getheader("Fsc-Error-Code")
    return f"HTTP {answer.status}" + (f" {code}" if code else "")


def test_outway_outgoing_with_the_network_hsm_gone(p11kit_case: Case, tmp_path: Path) -> None:
    check(p11kit_case, tmp_path)


def test_outway_outgoing_with_the_tpm_gone(tpm_case: Case, tmp_path: Path) -> None:
    check(tpm_case, tmp_path)


def check(case: Case, tmp_path: Path) -> None:
    with upstream(case.ca, tmp_path) as origin:
        run, lines = run_outgoing(case, origin, tmp_path / "logs")
    failed = run.failed()
    summarise(case, run, lines, ", outgoing")
    # Every refusal in the outway's format; once the key is known dead, the 503 for it.
    assert {o for _, o in failed} <= {
        "HTTP 503 ERROR_CODE_HSM_UNAVAILABLE",
        "HTTP 502 ERROR_CODE_INWAY_UNREACHABLE",
    }, failed
    hsm_refusals = [o for _, o in failed if o == "HTTP 503 ERROR_CODE_HSM_UNAVAILABLE"]
    assert len(hsm_refusals) > len(failed) / 2, failed
    watch_down, watch_up = watch_lines(lines)
    refused = [line for line in lines if "refused the peer" in line]
    hinted = [line for line in refused if "own HSM module" in line]
    blaming = [line for line in lines if "unreachable" in line] + [
        line for line in refused if line not in hinted
    ]
    # One line per worker (and kind) for the outage, one per worker when back.
    assert 1 <= len(watch_down) <= 2 * WORKERS, watch_down
    assert 1 <= len(watch_up) <= WORKERS, watch_up
    # Nothing blames the inway; the signature failures seen before a worker's check found its
    # key dead (the handshakes under way then) say it may be the module, not one per request.
    assert not blaming, blaming
    assert len(hinted) <= 2 * WORKERS * CLIENTS, hinted
    # The replaced workers' start and stop lines and the warnings above (about 30 measured):
    # a bound that does not grow with the requests (fewer of them are sent at high load).
    assert len(lines) < 60, lines


def run_outgoing(case: Case, origin: str, log_dir: Path) -> tuple[Run, list[str]]:
    """The run under load, and the log lines written meanwhile."""
    component = start_outgoing(case, origin, log_dir)
    try:
        wait_for_workers(component, WORKERS)
        offset = len(component.log())
        run = run_under_load(case, lambda: one_request(component), outage_shows=True)
        lines = [line for line in component.log()[offset:].splitlines() if line.strip()]
        assert component.process.poll() is None, "the master stopped"
    finally:
        component.stop()
    return run, lines

"""The README's main command: the demo Group runs end to end on the embedded defaults, and
(``--keep-running``) leaves a connection request for a person to approve in the provider's
controller, after which the consumer's call through its outway succeeds and is in the
transaction log."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from appliance.controller.auth import CSRF_HEADER, SESSION_COOKIE

READY = "everything keeps running; press Ctrl-C to stop"


def read_until_ready(process: subprocess.Popen[str], timeout: float) -> str:
    """The demo's output up to the line that says everything keeps running."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if READY in line:
            return "".join(seen)
    raise AssertionError("the demo did not get ready:\n" + "".join(seen))


class Controller:
    """registers' controller API, logged in with the printed administrator account."""

    def __init__(self, url: str, username: str, password: str, anchors: Path) -> None:
        self.url = urlsplit(url)
        self.context = ssl.create_default_context(cafile=str(anchors))
        self.context.check_hostname = False  # the certificate names registers.sluis.test
        self.headers: dict[str, str] = {}
        status, login, cookie = self.call(
            "POST", "/api/v1/session", {"username": username, "password": password}
        )
        assert status == 201, login
        self.headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: login["csrf_token"]}

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any, str | None]:
        conn = http.client.HTTPSConnection(
            self.url.hostname or "", self.url.port, context=self.context, timeout=120
        )
        headers = {**self.headers, "Content-Type": "application/json"}
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
        cookie = SimpleCookie(response.getheader("Set-Cookie") or "")
        conn.close()
        return response.status, data, cookie[SESSION_COOKIE].value if cookie else None


def outway_get(url: str) -> tuple[int, str, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    conn.request("GET", parts.path)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, response.getheader("Fsc-Error-Code") or "", body


def find(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the demo's output:\n{text}"
    return found.group(1)


@pytest.mark.slow
def test_sluis_demo_runs_the_group_and_leaves_a_request_to_approve(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "demo", "--dir", str(root), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = read_until_ready(process, timeout=600)
        assert "the publication is valid at both ends" in out
        assert "the connection contract is valid at both ends" in out
        assert "obtained an access token" in out
        assert "sub=00000001001234567001 iss=00000001001234567002 svc=basisregistratie" in out
        assert "/basisregistratie/persons/42 -> 200" in out
        assert '"authorization": true' in out
        assert "gemeente log (outgoing)" in out
        assert "registers log (incoming)" in out
        assert (
            "private keys stored as files: ca/private/intermediate.key.pem, "
            "ca/private/root.key.pem" in out
        )

        # What the demo tells a person to do with the pending request.
        assert (
            "PENDING: gemeente's connection request for 'adresregister' waits at registers" in out
        )
        pending = find(r"contract: ([0-9A-Za-z$_-]+)\n", out)
        url = find(r"open registers' controller: (https://\S+)\n", out)
        username, password = find(r"log in as: (\S+ / \S+)\n", out).split(" / ")
        call = find(r"curl -i (http://\S+)\n", out)
        assert call.endswith("/00000001001234567002/adresregister/persons/42")
        assert (
            "(now, before the approval, the outway answers 404 ERROR_CODE_GRANT_NOT_FOUND)" in out
        )

        # It is there, pending, in registers' controller.
        controller = Controller(url, username, password, root / "registers/trust/anchors.pem")
        status, found, _ = controller.call("GET", "/api/v1/contracts?pending=true")
        assert status == 200
        assert [c["hash"] for c in found["contracts"]] == [pending]
        assert found["contracts"][0]["state"] == "proposed"
        assert outway_get(call)[:2] == (404, "ERROR_CODE_GRANT_NOT_FOUND")

        # A person approves it; then the call through gemeente's outway goes through.
        status, accepted, _ = controller.call(
            "POST", f"/api/v1/contracts/{pending}/accept", {"reason": "demo test"}
        )
        assert status == 200, accepted
        assert accepted["state"] == "valid"
        deadline = time.monotonic() + 60  # registers' Manager delivers the accept to gemeente
        while (answer := outway_get(call))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, _, body = answer
        assert status == 200, answer
        assert json.loads(body)["path"] == "/adressen/persons/42"

        # And the call is in registers' transaction log, shown by its controller.
        status, log, _ = controller.call("GET", "/api/v1/transactions?service_name=adresregister")
        assert status == 200
        records = log["records"]
        assert len(records) == 1
        assert records[0]["direction"] == "DIRECTION_INCOMING"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops every component
        try:
            rest, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
    assert process.returncode == 0, rest
    with pytest.raises(ConnectionRefusedError):  # the controller stopped with the demo
        socket.create_connection((urlsplit(url).hostname or "", urlsplit(url).port or 0), 5)


def ignore_sigint() -> None:
    """What a shell does for a background job in a script (``sluis demo ... &``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_background_demo_stops_on_sigterm_and_sigint_leaving_nothing_running(
    tmp_path: Path, stop: signal.Signals
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--keep-running",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint,  # SIG_IGN is inherited through exec, as from a shell
        start_new_session=True,  # its own process group, to look for leftovers in
    )
    try:
        read_until_ready(process, timeout=600)
        children = [
            c
            for c in psutil.Process(process.pid).children(recursive=True)
            if c.status() != psutil.STATUS_ZOMBIE  # a finished `sluis contract` call
        ]
        # Managers, inway, outway and controllers, each a gunicorn master with its workers.
        masters = [c for c in children if "appliance.serving.gunicorn_main" in c.cmdline()]
        masters = [c for c in masters if c.ppid() == process.pid]
        assert len(masters) == 3 + 2 + 3, [c.cmdline() for c in masters]
        process.send_signal(stop)
        signalled = time.monotonic()
        rest, _ = process.communicate(timeout=90)
        # Promptly: the components stop in seconds (a child that ignored SIGTERM cost 30 s).
        assert time.monotonic() - signalled < 20, rest
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, rest
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [c.cmdline() for c in alive]
    leftovers = [
        p.info for p in psutil.process_iter(["pid", "cmdline"]) if _group_of(p) == process.pid
    ]
    assert not leftovers


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None

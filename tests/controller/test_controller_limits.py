"""The controller as a real process (``sluis serve controller``: gunicorn, two workers, HTTPS
with the organisation key in its SoftHSM token): oversized bodies are refused while they stream
in and leave the workers' memory flat; the login limits per (account, address) and per address
hold across the workers; and a smaller run of generated malformed input gets no 5xx.

Figures of one run (each worker's RSS before and after 24 bodies of 200 MB offered, 12 with a
Content-Length and 12 chunked) are printed (``pytest -s``) and in docs/controller.md.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
import pytest
from controllertest import audit_entries, lone_member
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import load_config
from appliance.controller.auth import LOGIN_COOKIE, SOURCE_ATTEMPTS
from appliance.controller.demo import ControllerAccess, start_controller
from appliance.controller.errors import CONTROLLER_DOMAIN
from appliance.controller.params import MAX_BODY
from appliance.controller.store import AuditEntry
from appliance.demo.group import MemberPlan
from appliance.pki.identity import OrganisationIdentity

pytestmark = pytest.mark.slow

PLAN = MemberPlan(
    "b", OrganisationIdentity("Dienst Registers", "00000001000000000402", ("b.sluis.test",))
)
OFFERED = 200 * 1024 * 1024  # what each oversized request offers to send
MAX_GROWTH = 16 * 1024 * 1024  # per worker, over all oversized requests


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the server took before answering


@dataclass
class World:
    access: ControllerAccess
    database: str
    context: ssl.SSLContext

    @property
    def host(self) -> str:
        return urlsplit(self.access.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.access.url).port or 0

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.access.component.process.pid).children()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> Answer:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=60, source_address=(source, 0)
        )
        try:
            conn.request(method, path, body, headers or {})
            raw = conn.getresponse()
            return Answer(
                raw.status,
                {k.lower(): v for k, v in raw.getheaders()},
                raw.read(),
                len(body or b""),
            )
        finally:
            conn.close()

    def login(self, username: str, password: str, source: str) -> int:
        body = json.dumps({"username": username, "password": password}).encode()
        headers = {"Content-Type": "application/json"}
        return self.request("POST", "/api/v1/session", body, headers, source).status

    def audit(self, action: str) -> list[AuditEntry]:
        return audit_entries(self.database, action)

    def offer(self, path: str, content_type: str, *, chunked: bool) -> Answer:
        """Offer OFFERED bytes of body and read the answer, which may come (and the server
        may close) long before the body is sent: reads and writes are interleaved."""
        raw = socket.create_connection((self.host, self.port), timeout=60)
        sock = self.context.wrap_socket(raw, server_hostname=self.host)
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}", f"Content-Type: {content_type}"]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {OFFERED}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        piece = b"a=" + b"x" * (256 * 1024 - 2)
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
        pending, sent, received = frame, 0, b""
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not _complete(received):
                want_write = sent < OFFERED and pending
                readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 1)
                if readable or sock.pending():
                    try:
                        data = sock.recv(65536)
                    except ssl.SSLWantReadError:
                        data = None
                    except OSError:
                        break
                    if data == b"":
                        break
                    received += data or b""
                    continue
                if writable:
                    try:
                        done = sock.send(pending)
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        continue
                    except OSError:  # the server closed: only its answer is left to read
                        pending = b""
                        continue
                    pending = pending[done:]
                    if not pending:
                        sent += len(piece)
                        pending = frame if sent < OFFERED else b"0\r\n\r\n" if chunked else b""
        finally:
            sock.close()
        head_bytes, _, body = received.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {
            k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)
        }
        return Answer(int(lines[0].split()[1]), headers, body, sent)


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            return len(body) >= int(line.split(":", 1)[1])
    return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("controller-limits")
    member = lone_member(root, PLAN, "sluis.limits-test")
    access = start_controller(member.config_path, root / "logs", name="b", workers=2)
    config = load_config(member.config_path)
    assert config.controller is not None
    context = ssl.create_default_context(cafile=str(config.tls.trust_anchors))
    context.check_hostname = False  # the controller's certificate names b.sluis.test
    try:
        yield World(access, config.controller.database, context)
    finally:
        access.stop()


def rss(world: World) -> dict[int, int]:
    return {w.pid: w.memory_info().rss for w in world.workers()}


def test_oversized_bodies_are_413_while_streaming_and_worker_memory_stays_flat(
    world: World,
) -> None:
    # Warm up both workers (templates, the store, the TLS session cache) before measuring.
    for _ in range(6):
        assert world.request("GET", "/login").status == 200
        assert world.login("admin", "not the password", "127.0.0.9") == 401
    before = rss(world)
    cases = [
        ("/login", "application/x-www-form-urlencoded"),
        ("/api/v1/session", "application/json"),
    ]
    for _ in range(6):
        for path, content_type in cases:
            for chunked in (False, True):
                answer = world.offer(path, content_type, chunked=chunked)
                assert answer.status == 413, (path, chunked, answer)
                # Refused while streaming in: at most a few buffers beyond the limit were read.
                assert answer.sent < 8 * 1024 * 1024, (path, chunked, answer.sent)
                assert answer.headers.get("connection") == "close"
                if path.startswith("/api/"):
                    error = json.loads(answer.body)
                    assert error["domain"] == CONTROLLER_DOMAIN
                    assert error["code"] == "ERROR_CODE_REQUEST_TOO_LARGE"
                else:
                    assert answer.headers["content-type"].startswith("text/html")
                    assert f"larger than {MAX_BODY} bytes" in answer.body.decode()
    after = rss(world)
    print("\nworker RSS before/after oversized bodies (MiB):")
    for pid, size in before.items():
        print(f"  worker {pid}: {size / 2**20:.1f} -> {after[pid] / 2**20:.1f}")
    assert after.keys() == before.keys()  # no worker died
    for pid, size in before.items():
        assert after[pid] - size < MAX_GROWTH, (pid, size, after[pid])
    # Each refused login is in the audit log.
    refused = [e for e in world.audit("login") if "larger than" in (e.detail or "")]
    assert len(refused) == 24


def test_a_stranger_cannot_lock_the_admin_out_but_a_spray_is_blocked_across_workers(
    world: World,
) -> None:
    password = world.access.password
    # Five wrong passwords from one address lock that address out of the account (the
    # attempts go to both workers: every one is a new connection) ...
    for _ in range(5):
        assert world.login("admin", "wrong guess", "127.0.0.2") == 401
    assert world.login("admin", password, "127.0.0.2") == 401
    # ... and no one else: the admin logs in from another address.
    assert world.login("admin", password, "127.0.0.3") == 201
    # A password spray from one address over many accounts is blocked after SOURCE_ATTEMPTS,
    # also for a right password; the trip is audited.
    for n in range(SOURCE_ATTEMPTS):
        assert world.login(f"user{n}", "Winter2026!", "127.0.0.4") == 401
    assert world.login("admin", password, "127.0.0.4") == 401
    tripped = world.audit("login.throttle")
    assert [(e.outcome, e.peer_address) for e in tripped] == [("denied", "127.0.0.4")]
    assert world.login("admin", password, "127.0.0.5") == 201


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode()),
    path=st.sampled_from(["/api/v1/session", "/login", "/api/v1/services", "/services"]),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain"]
    ),
    header=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
def test_generated_malformed_requests_get_no_5xx_from_the_real_process(
    world: World, body: bytes, path: str, content_type: str, header: str
) -> None:
    headers = {
        "Content-Type": content_type,
        "Origin": header,
        "X-CSRF-Token": header,
        "Cookie": f"{LOGIN_COOKIE}={header}",
    }
    answer = world.request("POST", path, body, headers, "127.0.0.6")
    assert answer.status < 500, (path, answer)
    if path.startswith("/api/"):
        assert json.loads(answer.body)["domain"] == CONTROLLER_DOMAIN
    else:
        assert answer.headers["content-type"].startswith("text/html") or answer.status == 303

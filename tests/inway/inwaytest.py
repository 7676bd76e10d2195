"""Helpers for the inway tests: in-memory certificates and tokens, backends, an ASGI driver.

Every key here lives in memory only (never written to a file). The backends run in a thread
of their own, so the synchronous falcon.testing.TestClient can call the inway while they
answer; the shared state they record is read under a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon.testing
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.inway.app import InwayApp, create_inway_app
from appliance.inway.certificates import SigningCertificates
from appliance.inway.logging import JsonLinesLogWriter, LogWriter, MemoryLogWriter
from appliance.inway.settings import InwayRuntime, parse_services
from appliance.manager.contracts.tokens import issue_access_token
from appliance.tls.peer import PeerIdentity, certificate_thumbprint

GROUP_ID = "sluis.test"
OIN_OWN = "00000001000000000101"  # the inway's peer (token issuer)
OIN_PEER = "00000001000000000102"  # the outway's peer
OIN_OTHER = "00000001000000000103"
ADDRESS = "https://inway.sluis.test:443"
SERVICE = "basisregistratie"
GRANT_HASH = "$1$3$" + "A" * 86
TRANSACTION = "0190a0b4-3c1e-7d2f-8e5a-0123456789ab"


# -- certificates and signing ---------------------------------------------------------------


# Headers a client must not get to the backend (docs/inway.md, docs/outway.md): who the
# client is, as proxies write it, and Fsc-* or Sluis-* headers no gateway validated.
FORGED = [
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded",
    "X-Original-URL",
    "X-Rewrite-URL",
    "Remote-User",
    "X-Client-IP",
    "True-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "X-SSL-Client-S-DN",
    "X-SSL-Client-Verify",
    "Ssl-Client-Verify",
    "X-Client-Verify",
    "X-ARR-ClientCert",
    "Via",
    "Fsc-Peer-Id",
    "Fsc-Manager-Address",
    "Fsc-Foo",
    "Sluis-Processing-Activity",
    "Sluis-Foo",
]


def _name(cn: str, oin: str | None = None, organisation: str = "Test") -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
    ]
    if oin is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, oin))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


@dataclass
class Credentials:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def thumbprint(self) -> str:
        return certificate_thumbprint(self.der)

    def identity(self) -> PeerIdentity:
        return PeerIdentity.from_der(self.der)


class MemoryCA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name("Inway Test CA")
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self, oin: str | None, organisation: str = "Gemeente", *, expired: bool = False
    ) -> Credentials:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        not_after = now - timedelta(hours=1) if expired else now + timedelta(days=10)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("gw.sluis.test", oin, organisation))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=2))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Credentials(key, certificate)


class MemorySigner:
    """The Signer protocol (ES256) with an in-memory key."""

    algorithm = "ES256"

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_key(self) -> Any:
        return self._key.public_key()


CA = MemoryCA()
OWN = CA.issue(OIN_OWN, "Dienst Registers")  # signs tokens (the inway's Manager)
PEER = CA.issue(OIN_PEER)  # the outway's connection certificate
PEER_OTHER_CERT = CA.issue(OIN_PEER)  # same peer, another certificate (and key)
OTHER = CA.issue(OIN_OTHER, "Elders")


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "gth": GRANT_HASH,
        "gid": GROUP_ID,
        "sub": OIN_PEER,
        "iss": OIN_OWN,
        "svc": SERVICE,
        "aud": ADDRESS,
        "exp": now + 300,
        "nbf": now,
        "cnf": {"x5t#S256": PEER.thumbprint},
    }
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def token(signer: Credentials = OWN, **changes: Any) -> str:
    """An access token as the Manager issues it (appliance.manager.contracts.tokens)."""
    return issue_access_token(claims(**changes), MemorySigner(signer.key), signer.der)


def peer_extensions(peer: Credentials = PEER) -> dict[str, Any]:
    """What appliance.serving.protocol puts into the scope for a verified connection."""
    return {
        "extensions": {
            "tls": {
                "client_cert_chain": [peer.pem.decode("ascii")],
                "client_cert_name": peer.certificate.subject.rfc4514_string(),
                "client_cert_error": None,
                "tls_version": 0x0304,
            },
            "sluis.peer": peer.identity(),
        }
    }


def fsc_headers(access_token: str | None = None, transaction: str | None = TRANSACTION) -> dict:  # type: ignore[type-arg]
    headers = {"Fsc-Authorization": access_token if access_token is not None else token()}
    if transaction is not None:
        headers["Fsc-Transaction-Id"] = transaction
    return headers


# -- backends -------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body_size: int
    body_sha256: str
    chunks: int
    logged: bool


@dataclass
class EchoState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Seen] = field(default_factory=list)
    received_bytes: int = 0  # of the request being streamed
    started: int = 0  # requests whose head arrived
    aborted: int = 0  # requests whose body never arrived whole
    log: MemoryLogWriter | None = None
    log_file: Path | None = None  # a JsonLinesLogWriter's file, written by another process
    lookup: Callable[[str], bool] | None = None  # another log: is this transaction in it?

    def seen(self) -> list[Seen]:
        with self.lock:
            return list(self.requests)

    def counts(self) -> tuple[int, int, int]:
        """(started, completed, aborted) requests so far."""
        with self.lock:
            return self.started, len(self.requests), self.aborted

    def is_logged(self, transaction: str | None) -> bool:
        if self.lookup is not None:
            return transaction is not None and self.lookup(transaction)
        records: list[dict[str, Any]] = []
        if self.log is not None:
            records = list(self.log.records)
        elif self.log_file is not None and self.log_file.exists():
            records = JsonLinesLogWriter(self.log_file).records()
        return any(r["transaction_id"] == transaction for r in records)


class BackendThread:
    """An asyncio server in its own thread and loop, on 127.0.0.1."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self._cleanup: list[Callable[[], Awaitable[None]]] = []

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        for cleanup in reversed(self._cleanup):
            self.run(cleanup())

        async def cancel_the_rest() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_PATTERN = bytes(range(256)) * 4096  # 1 MiB


def generated_block(index: int) -> bytes:
    """The ``index``-th MiB of a generated body: no two alike, so a lost, repeated or
    reordered piece changes the body's hash."""
    return index.to_bytes(8, "big") + _PATTERN[8:]


class EchoBackend(BackendThread):
    """aiohttp: answers every request with JSON describing what arrived (never buffering it).

    ``/stream/<n>``: answers with n MiB, streamed; before the last MiB it waits until
    ``release_last`` is set (the test sets it once the client has most of the body).
    ``/status/<code>``: answers with that status, an FSC error header and no Content-Type.
    ``/hop``: answers with hop-by-hop headers (and an ``Fsc-*`` one that ``Connection`` names).
    ``/generate/<n>``: answers with n MiB made as they are sent (:func:`generated_block`).
    """

    def __init__(self, state: EchoState | None = None) -> None:
        super().__init__()
        self.state = state or EchoState()
        self.release_last = threading.Event()
        self.release_waits: list[bool] = []
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        self.port = self.run(start())
        self._cleanup.append(runner.cleanup)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        logged = state.is_logged(request.headers.get("Fsc-Transaction-Id"))
        digest = hashlib.sha256()
        size = chunks = 0
        with state.lock:
            state.received_bytes = 0
            state.started += 1
        try:
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
                with state.lock:
                    state.received_bytes = size
        except BaseException:
            with state.lock:
                state.aborted += 1
            raise
        seen = Seen(
            request.method,
            request.raw_path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            size,
            digest.hexdigest(),
            chunks,
            logged,
        )
        with state.lock:
            state.requests.append(seen)
        parts = request.match_info["tail"].split("/")  # below any base path
        if len(parts) >= 2 and parts[-2] == "stream":
            return await self._stream(request, int(parts[-1]))
        if parts[-1] == "hop":
            return web.Response(
                body=b"hop",
                headers={
                    "Connection": "X-Backend-Private, Fsc-Backend-Named",
                    "Keep-Alive": "timeout=5",
                    "X-Backend-Private": "1",
                    "Fsc-Backend-Named": "kept",
                    "Proxy-Authenticate": "Basic",
                    "Upgrade": "h2c",
                    "X-Backend-Public": "yes",
                },
            )
        if len(parts) >= 2 and parts[-2] == "generate":
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for index in range(int(parts[-1])):
                await response.write(generated_block(index))
            await response.write_eof()
            return response
        if len(parts) >= 2 and parts[-2] == "status":
            return web.Response(
                status=int(parts[-1]),
                body=b"service says no",
                headers={"Fsc-Error-Code": "SERVICE_OWN_ERROR", "X-Service": "yes"},
            )
        body = json.dumps(seen.__dict__).encode()
        return web.Response(body=body, content_type="application/json")

    async def _stream(self, request: web.Request, mebibytes: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = bytes(range(256)) * 4096  # 1 MiB
        for index in range(mebibytes):
            if index == mebibytes - 1:
                released = await asyncio.get_running_loop().run_in_executor(
                    None, self.release_last.wait, 10
                )
                self.release_waits.append(released)
            await response.write(block)
        await response.write_eof()
        return response


class RawBackend(BackendThread):
    """A raw TCP server: reads a request head, then runs ``respond(reader, writer, head)``."""

    def __init__(
        self,
        respond: Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]],
    ) -> None:
        super().__init__()
        self.heads: list[bytes] = []
        self.connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                await respond(reader, writer, head)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def start() -> tuple[asyncio.Server, int]:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            return server, int(server.sockets[0].getsockname()[1])

        self.server, self.port = self.run(start())

        async def close() -> None:
            self.server.close()

        self._cleanup.append(close)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def log_unwritable(directory: Path) -> Iterator[None]:
    """A SQLite transaction log in ``directory`` cannot be written while inside, even by root.

    File modes do not stop root; ``chattr +i`` does: on the directory (no journal or new
    write-ahead file can be made) and on the write-ahead file (an open connection fails at its
    next commit). Never on the ``-shm`` file: it is memory-mapped, and an immutable mapping
    kills the writer with SIGBUS instead of failing its write.
    """
    targets = [directory, *list(directory.glob("*-wal"))]
    done: list[Path] = []
    try:
        for target in targets:
            subprocess.run(["chattr", "+i", str(target)], check=True, capture_output=True)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["chattr", "-i", str(target)], check=True, capture_output=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


# -- the app under test -----------------------------------------------------------------------


@dataclass
class Inway:
    app: InwayApp
    client: falcon.testing.TestClient
    log: LogWriter

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: Any = None,
        peer: Credentials | None = PEER,
        **kwargs: Any,
    ) -> falcon.testing.Result:
        extras = peer_extensions(peer) if peer is not None else {}
        return self.client.simulate_request(
            method,
            path,
            headers=fsc_headers() if headers is None else headers,
            extras=extras,
            **kwargs,
        )

    def call(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` in the loop the TestClient uses (the Forwarder's session lives there)."""

        async def wrapped() -> Any:
            return await coro

        return falcon.util.sync.async_to_sync(wrapped)


def runtime(
    services: dict[str, str],
    *,
    read_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    write_timeout: float = 5.0,
    clock_skew: float = 5.0,
) -> InwayRuntime:
    return InwayRuntime(
        address=ADDRESS,
        group_id=GROUP_ID,
        services=parse_services(tuple(f"{name}={url}" for name, url in services.items())),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        write_timeout=write_timeout,
        backend_connections=16,
        clock_skew=clock_skew,
    )


@contextmanager
def inway(
    services: dict[str, str], log: LogWriter | None = None, **settings: Any
) -> Iterator[Inway]:
    writer = log if log is not None else MemoryLogWriter()
    app = create_inway_app(
        runtime(services, **settings), SigningCertificates([OWN.certificate]), writer
    )
    under_test = Inway(app, falcon.testing.TestClient(app), writer)
    try:
        yield under_test
    finally:
        under_test.call(app.forwarder.close())


async def asgi_call(
    app: InwayApp,
    *,
    method: str,
    raw_path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: AsyncIterator[dict[str, Any]],
    on_body: Callable[[bytes], None],
    peer: Credentials = PEER,
    query_string: bytes = b"",
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Call the ASGI app with a crafted scope; ``body`` yields the receive() events."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": "",
        "headers": headers,
        "server": ("127.0.0.1", 443),
        "client": ("127.0.0.1", 50000),
        **peer_extensions(peer),
    }
    start: dict[str, Any] = {}
    body_events = body.__aiter__()
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        try:
            return await body_events.__anext__()
        except StopAsyncIteration:
            await finished.wait()
            return {"type": "http.disconnect"}

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            start.update(event)
        elif event["type"] == "http.response.body":
            on_body(event.get("body", b""))
            if not event.get("more_body", False):
                finished.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    finished.set()
    return int(start["status"]), list(start.get("headers", []))


def error_of(result: falcon.testing.Result) -> tuple[int, str, str]:
    """(status, Fsc-Error-Code header, code in the body) of an FSC error response."""
    body = result.json
    assert body["domain"] == "ERROR_DOMAIN_INWAY", body
    assert result.headers.get("fsc-error-code") == body["code"], result.headers
    return result.status_code, body["code"], body["message"]

"""Helpers for the outway tests: a fake inway over real mutual TLS, fake grants and tokens.

The test PKI (a CA, the inway's server certificate for ``inway.sluis.test``, the outway's
client certificate) is generated per session into a temporary directory; the keys are test
keys only. The fake inway runs in a thread of its own (aiohttp, TLS requiring a client
certificate), so the synchronous falcon.testing.TestClient can call the outway meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon.testing
import falcon.util.sync
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.outway.app import OutwayApp, create_outway_app
from appliance.outway.grants import Route, RouteTable
from appliance.outway.logging import LogWriter, MemoryLogWriter
from appliance.outway.proxy import OutwayForwarder
from appliance.outway.settings import OutwayRuntime
from appliance.outway.tokens import TokenCache
from appliance.txlog.pseudonym import Pseudonymiser
from appliance.txlog.record import LogRecord

GROUP_ID = "sluis.test"
OIN_OWN = "00000001000000000102"  # this outway's peer
OIN_SERVICE = "00000001000000000101"  # the service's peer
OIN_OTHER = "00000001000000000103"
INWAY_HOST = "inway.sluis.test"
INWAY = f"https://{INWAY_HOST}:443"
SERVICE = "basisregistratie"
GRANT = "$1$3$" + "A" * 86
GRANT_2 = "$1$3$" + "B" * 86
GRANT_OTHER = "$1$3$" + "C" * 86
TRANSACTION = "0190a0b4-3c1e-7d2f-8e5a-0123456789ab"

ROUTES = [
    Route(GRANT, OIN_SERVICE, SERVICE),
    Route(GRANT_OTHER, OIN_OTHER, "kadaster"),
    # two grants for the same service of the same peer: the NLX path is ambiguous
    Route(GRANT_2, OIN_OTHER, "brp"),
    Route("$1$3$" + "D" * 86, OIN_OTHER, "brp"),
]


# -- test PKI --------------------------------------------------------------------------------


def _name(cn: str, oin: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    if oin:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, oin))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Pki:
    """The contexts of both ends; their key files are deleted once loaded."""

    client: ssl.SSLContext
    server: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        return self.client

    def server_context(self) -> ssl.SSLContext:
        return self.server


def make_pki(directory: Path) -> Pki:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Outway Test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, oin: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, oin))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def load(ctx: ssl.SSLContext, cn: str, oin: str) -> ssl.SSLContext:
        cert_pem, key_pem = leaf(cn, oin)
        cert_file, key_file = directory / f"{cn}.pem", directory / f"{cn}.key"
        cert_file.write_bytes(cert_pem)
        key_file.touch(mode=0o600)
        try:
            key_file.write_bytes(key_pem)
            ctx.load_cert_chain(str(cert_file), str(key_file))
        finally:
            key_file.unlink()  # the suite checks that no private key is left on disk
        return ctx

    client = load(ssl.create_default_context(cafile=str(ca_file)), "outway.sluis.test", OIN_OWN)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cafile=str(ca_file))
    return Pki(client=client, server=load(server, INWAY_HOST, OIN_SERVICE))


# -- tokens and grants -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(route: Route, *, lifetime: float = 300, now: float | None = None) -> dict[str, Any]:
    moment = int(time.time() if now is None else now)
    return {
        "gth": route.grant_hash,
        "gid": GROUP_ID,
        "sub": OIN_OWN,
        "iss": route.service_peer_id,
        "svc": route.service_name,
        "aud": INWAY,
        "exp": moment + int(lifetime),
        "nbf": moment,
        "cnf": {"x5t#S256": "x" * 43},
    }


def unsigned_token(claims: dict[str, Any]) -> str:
    header = {"alg": "ES256", "typ": "JWT"}
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"sig")]
    )


class FakeGrants:
    def __init__(self, routes: list[Route] | None = None) -> None:
        self.list = list(ROUTES if routes is None else routes)

    def table(self) -> RouteTable:
        return RouteTable.of(self.list)


@dataclass
class FakeFetcher:
    """Hands out unsigned tokens (the outway never verifies signatures) and counts requests."""

    clock: Callable[[], float] = time.time
    lifetime: float = 300
    fail: bool = False
    changes: dict[str, Any] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    async def fetch(self, route: Route) -> str:
        self.fetched.append(route.grant_hash)
        if self.fail:
            raise OSError("manager down")
        claims = claims_for(route, lifetime=self.lifetime, now=self.clock())
        claims.update(self.changes)
        return unsigned_token(claims)


class FailingWriter:
    def __init__(self) -> None:
        self.attempts = 0

    async def write(self, record: LogRecord) -> None:
        self.attempts += 1
        raise OSError("disk full")


# -- the fake inway -------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes
    logged: bool
    client_cert_subject: str


class FakeInway:
    """An aiohttp server over mutual TLS on 127.0.0.1, in its own thread and loop.

    ``/status/<code>``: an FSC error of the inway (``Fsc-Error-Code`` from the query ``code``).
    ``/stream/<n>``: n chunks of 64 KiB, streamed. ``/slow/<s>``: answers after s seconds.
    Otherwise: JSON of what arrived.
    """

    def __init__(self, pki: Pki, log: MemoryLogWriter | None = None) -> None:
        self.log = log
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=pki.server_context())
            await site.start()
            server = site._server
            assert server is not None
            return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

        self.port: int = self.run(start())

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transaction = request.headers.get("Fsc-Transaction-Id")
        logged = self.log is not None and any(
            r.transaction_id == transaction for r in self.log.records
        )
        body = await request.read()
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport else None
        subject = str(peer.get("subject")) if peer else ""
        seen = Seen(
            request.method,
            request.raw_path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            body,
            logged,
            subject,
        )
        with self.lock:
            self.seen.append(seen)
        parts = request.match_info["tail"].split("/")
        if len(parts) >= 2 and parts[-2] == "status":
            code = request.query.get("code", "ERROR_CODE_ACCESS_TOKEN_INVALID")
            return web.Response(
                status=int(parts[-1]),
                body=json.dumps(
                    {"message": "inway says no", "domain": "ERROR_DOMAIN_INWAY", "code": code}
                ).encode(),
                headers={
                    "Fsc-Error-Code": code,
                    "Content-Type": "application/json",
                    "X-Inway": "yes",
                    "WWW-Authenticate": "Bearer",
                },
            )
        if len(parts) >= 2 and parts[-2] == "slow":
            await asyncio.sleep(float(parts[-1]))
            return web.Response(body=b"late")
        if len(parts) >= 2 and parts[-2] == "stream":
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for index in range(int(parts[-1])):
                await response.write(bytes([index % 256]) * 65536)
            await response.write_eof()
            return response
        payload = {
            "method": seen.method,
            "raw_path": seen.raw_path,
            "headers": seen.headers,
            "body_size": len(body),
            "logged": logged,
            "client": subject,
        }
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json")


# -- the app under test -----------------------------------------------------------------------


@dataclass
class Outway:
    app: OutwayApp
    client: falcon.testing.TestClient
    log: LogWriter
    fetcher: FakeFetcher

    def request(self, method: str = "GET", path: str = "/", **kwargs: Any) -> falcon.testing.Result:
        return self.client.simulate_request(method, path, **kwargs)

    def call(self, coro: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await coro

        return falcon.util.sync.async_to_sync(wrapped)


@contextmanager
def outway(
    pki: Pki,
    inway_port: int,
    *,
    log: LogWriter | None = None,
    fetcher: FakeFetcher | None = None,
    grants: FakeGrants | None = None,
    clock: Callable[[], float] = time.time,
    refresh: float = 30.0,
    pseudonymiser: Pseudonymiser | None = None,
    read_timeout: float = 5.0,
    forward_purpose_headers: bool = False,
    closers: tuple[Callable[[], Awaitable[None]], ...] = (),
) -> Iterator[Outway]:
    writer = log if log is not None else MemoryLogWriter()
    fetcher = fetcher if fetcher is not None else FakeFetcher(clock=clock)
    runtime = OutwayRuntime(
        group_id=GROUP_ID,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        inway_connections=16,
        token_refresh=refresh,
        forward_purpose_headers=forward_purpose_headers,
    )
    forwarder = OutwayForwarder(
        connect_timeout=runtime.connect_timeout,
        read_timeout=runtime.read_timeout,
        connections=runtime.inway_connections,
        ssl_context=pki.client_context(),
        resolve={f"{INWAY_HOST}:443": ("127.0.0.1", inway_port)},
    )
    tokens = TokenCache(fetcher, group_id=GROUP_ID, refresh=refresh, clock=clock)
    app = create_outway_app(
        runtime,
        grants if grants is not None else FakeGrants(),
        tokens,
        writer,
        forwarder,
        pseudonymiser=pseudonymiser,
        closers=closers,
    )
    under_test = Outway(app, falcon.testing.TestClient(app), writer, fetcher)
    try:
        yield under_test
    finally:
        under_test.call(app.forwarder.close())


def error_of(result: falcon.testing.Result) -> tuple[int, str]:
    """(status, code) of an outway FSC error; checks the domain and the header."""
    body = result.json
    assert body["domain"] == "ERROR_DOMAIN_OUTWAY", body
    assert result.headers.get("fsc-error-code") == body["code"], result.headers
    return result.status_code, body["code"]

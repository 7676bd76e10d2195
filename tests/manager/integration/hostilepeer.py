"""A peer of the Group that tests drive by hand against a real Manager process.

Its certificate is issued by the Group's demo CA from a CSR like any member's, but its key is
a software key in this test process (tests only), so the test can write any bytes over mutual
TLS: oversized and slow bodies, malformed JSON, signatures no Sluis would make. The Manager
under test knows its certificate as if it had fetched it from the peer's JWKS.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.demo.group import Member
from appliance.jcs import canonicalize
from appliance.manager.contracts import jose
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import SignatureType, create_signature
from appliance.manager.storage import ManagerStore
from appliance.pki.ca import DemoCA
from appliance.tls.peer import certificate_thumbprint, public_key_thumbprint

# The contract tests' software signer and contract builders.
sys.path.insert(0, str(Path(__file__).parents[1] / "contracts"))

from contracttest import SoftwareSigner, connection_data, content

__all__ = ["HostilePeer", "Response", "connection_data", "content", "now", "zeros"]

HEAD_LIMIT = 64 * 1024


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to write before the answer came
    # status 0: no answer within the timeout

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class HostilePeer:
    oin: str
    name: str
    dns_names: tuple[str, ...]
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain_pem: bytes
    trust_anchors: Path
    directory: Path
    signer: SoftwareSigner = field(init=False)
    _context: ssl.SSLContext | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.signer = SoftwareSigner(self.key)

    @classmethod
    def issue(
        cls, ca: DemoCA, directory: Path, oin: str, name: str, dns_names: tuple[str, ...]
    ) -> HostilePeer:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, oin),
                x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0]),
            ]
        )
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        certificate = ca.issue(csr.public_bytes(serialization.Encoding.PEM))
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            oin, name, dns_names, key, certificate, ca.chain_pem(certificate),
            ca.trust_anchor_path, directory,
        )  # fmt: skip

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def public_key_thumbprint(self) -> str:
        return public_key_thumbprint(self.certificate)

    def address(self, port: int = 8443, name: str | None = None) -> str:
        return f"https://{name or self.dns_names[0]}:{port}"

    def known_to(self, member: Member) -> None:
        """Put this peer's certificate into ``member``'s Manager database."""
        assert member.config.manager is not None
        with ManagerStore.open(member.config.manager.database) as store:
            store.put_certificate(
                certificate_thumbprint(self.der),
                self.oin,
                self.chain_pem.decode("ascii"),
                self.certificate.not_valid_after_utc,
            )

    def ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_verify_locations(self.trust_anchors)
            chain, key = self.directory / "chain.pem", self.directory / "key.pem"
            chain.write_bytes(self.chain_pem)
            key.touch(mode=0o600)
            try:
                key.write_bytes(
                    self.key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                ctx.load_cert_chain(chain, key)
            finally:
                key.unlink()  # read into the context; no key may stay on disk (tests/conftest)
            self._context = ctx
        return self._context

    # -- contracts ---------------------------------------------------------------------

    def sign(self, content: Mapping[str, Any], kind: str = "accept") -> str:
        return create_signature(
            Contract.from_json(content), SignatureType(kind), self.signer, self.der, now()
        )

    def sign_payload(self, payload: Mapping[str, Any]) -> str:
        """A JWS over any payload, with this peer's certificate thumbprint (as Sluis signs)."""
        header = {"x5t#S256": certificate_thumbprint(self.der)}
        return jose.sign(self.signer, canonicalize(payload), header)

    # -- HTTP over mutual TLS ----------------------------------------------------------

    def request(
        self,
        member: Member,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] = b"",
        pause: float = 0.0,
        timeout: float = 60.0,
    ) -> Response:
        """One request on a new connection. ``body`` as bytes is sent with Content-Length
        (unless ``headers`` set one); as an iterable of chunks with chunked framing unless
        ``headers`` set Content-Length. The answer is read while the body is still being
        written: a server that refuses early is heard, not met with a broken pipe."""
        try:
            return asyncio.run(
                asyncio.wait_for(
                    self._exchange(member, method, path, dict(headers or {}), body, pause), timeout
                )
            )
        except TimeoutError:
            return Response(0, {}, b"no answer within the timeout", -1)

    async def _exchange(
        self,
        member: Member,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes],
        pause: float,
    ) -> Response:
        names = {k.lower() for k in headers}
        chunked = not isinstance(body, bytes) and "content-length" not in names
        if isinstance(body, bytes) and "content-length" not in names:
            headers["Content-Length"] = str(len(body))
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        head = f"{method} {path} HTTP/1.1\r\nHost: {member.fqdn}:{member.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            member.port,
            ssl=self.ssl_context(),
            server_hostname=member.fqdn,
            limit=HEAD_LIMIT,
        )
        sent = 0

        async def send() -> None:
            nonlocal sent
            writer.write(head.encode("latin-1"))
            async for chunk in _chunks(body):
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                await writer.drain()
                sent += len(chunk)
                if pause:
                    await asyncio.sleep(pause)
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()

        sender = asyncio.create_task(send())
        try:
            return await _read_response(reader, lambda: sent)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def _chunks(body: bytes | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]
        return
    for chunk in body:
        yield chunk
        await asyncio.sleep(0)


async def _read_response(reader: asyncio.StreamReader, sent: Any) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
            body = body[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body, sent())


def now() -> datetime:
    return datetime.now(UTC)


def zeros(total: int, chunk: int = 1024 * 1024) -> Iterable[bytes]:
    """``total`` bytes in chunks, made as they are sent (a 200 MB body is never held)."""
    block = b"a" * chunk
    for _ in range(total // chunk):
        yield block
    if total % chunk:
        yield block[: total % chunk]

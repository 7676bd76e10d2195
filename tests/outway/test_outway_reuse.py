"""The outway's kept-alive connections to inways are checked before every reuse: a
certificate revoked (or expired) since the handshake must not carry another request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from outwaytest import INWAY_HOST, OIN_SERVICE, make_pki

from appliance.upstream import UpstreamPool
from appliance.upstream.client import parse_origin

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_a_pooled_inway_connection_is_checked_before_reuse(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    seen: list[bytes] = []
    refusal: list[str] = []

    def check(certificate: bytes) -> str | None:
        seen.append(certificate)
        return refusal[0] if refusal else None

    async def scenario() -> int:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(OK)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=pki.server_context())
        port = server.sockets[0].getsockname()[1]
        client = UpstreamPool(
            connections=4,
            connect_timeout=5,
            read_timeout=5,
            ssl_context=pki.client_context(),
            resolve={f"{INWAY_HOST}:{port}": ("127.0.0.1", port)},
            peer_check=check,
        )
        origin = parse_origin(f"https://{INWAY_HOST}:{port}")
        for _ in range(2):
            assert (await client.request(origin, "GET", "/", [])).whole() == b"hello"
        assert connections == 1  # reused after a check that passed
        refusal.append("certificate revoked")
        assert (await client.request(origin, "GET", "/", [])).whole() == b"hello"
        await client.close()
        server.close()
        return connections

    # The pooled connection was dropped; the request went on a new one (whose handshake is
    # where a revoked certificate is refused, by the CRLs in the context).
    assert asyncio.run(scenario()) == 2
    assert seen
    for certificate in seen:
        subject = x509.load_der_x509_certificate(certificate).subject
        assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == OIN_SERVICE

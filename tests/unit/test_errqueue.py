"""A stale OpenSSL error left by another connection must not fail the next TLS operation.

pkcs11-provider 1.0 leaves such errors behind; here one is planted directly with
ERR_put_error, so the test needs no HSM. Plain ``ssl.SSLObject`` shows the failure that
gateways saw under load; the contexts Sluis builds must not.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.tls import errqueue

_libcrypto = ctypes.CDLL("libcrypto.so.3")
_libcrypto.ERR_new.argtypes = []
_libcrypto.ERR_set_debug.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]


def plant_stale_error() -> None:
    # lib 128 ("user"), reason 5: what the provider's "General Error" looks like to libssl.
    _libcrypto.ERR_new()
    _libcrypto.ERR_set_debug(b"planted-by-test", 1, b"plant_stale_error")
    _libcrypto.ERR_set_error(128, 5, None)
    assert errqueue.pending_error() != 0


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    # A throwaway self-signed key, deleted as soon as OpenSSL has read it.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "errqueue.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("errqueue.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    key_path.unlink()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert_path)
    return server, client


def exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    """Handshake and one message over memory BIOs, planting a stale error before each step."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="errqueue.test")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)

    def pump() -> None:
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    for _ in range(10):
        for side in (client, server):
            try:
                plant_stale_error()
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        pump()
        if client.version() and server.version():
            break
    # The common case in a busy worker: a read finds no data yet (WANT_READ) while another
    # connection's stale error sits in the queue; SSL_get_error then reports a fatal error.
    plant_stale_error()
    with contextlib.suppress(ssl.SSLWantReadError):
        server.read(4)
    plant_stale_error()
    client.write(b"ping")
    pump()
    return server.read(4)


def test_plain_sslobject_fails_on_a_stale_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = contexts
    with pytest.raises(ssl.SSLError) as raised:
        exchange(server, client)
    assert not isinstance(raised.value, ssl.SSLWantReadError)


def test_sluis_contexts_ignore_stale_errors(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = (errqueue.install(ctx) for ctx in contexts)
    assert exchange(server, client) == b"ping"


def test_ctypes_found_the_same_libcrypto_as_ssl() -> None:
    assert errqueue.same_library_as_ssl()

"""Mutual TLS between appliances, keys in SoftHSM, server under real gunicorn."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from tlsgroup import OIN_A, OIN_B, Group

from appliance.demo.processes import Component


def test_peer_oin_reaches_the_app_and_client_sees_server(group: Group, server_b: Component) -> None:
    code, result = group.a.probe(server_b, group.b.fqdn)
    assert code == 0, result
    assert result["first_status"] == 200
    assert result["first_response"]["peer_id"] == OIN_A
    assert result["first_response"]["organisation"] == "Organisation a"
    assert result["server"]["peer_id"] == OIN_B
    assert result["server"]["tls_version"] == "TLSv1.3"


def test_thumbprint_is_of_the_presented_certificate(group: Group, server_b: Component) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from appliance.tls.peer import certificate_thumbprint

    _, result = group.a.probe(server_b, group.b.fqdn)
    leaf = x509.load_pem_x509_certificate(group.a.config.tls.certificate_chain.read_bytes())
    assert result["first_response"]["x5t#S256"] == certificate_thumbprint(
        leaf.public_bytes(Encoding.DER)
    )


def assert_refused_in_handshake(result: dict) -> None:  # type: ignore[type-arg]
    """No HTTP response at all: the server dropped the connection during or right after the
    handshake (TLS 1.3 clients finish before the server has checked their certificate)."""
    assert result["first_status"] in (None, 0), result
    # The refusal shows as a TLS alert, a reset, or a close before any HTTP byte ("HTTP 0"),
    # depending on timing; never as an HTTP answer.
    refusals = ("SSL", "ConnectionResetError", "HTTP 0")
    assert all(r.startswith(refusals) for r in result["failures"]), result


def test_certificate_of_another_ca_is_refused(group: Group, server_b: Component) -> None:
    code, result = group.outsider.probe(server_b, group.b.fqdn)
    assert code == 1
    assert result["ok"] == 0
    assert_refused_in_handshake(result)


def test_revoked_certificate_is_refused(group: Group, server_b: Component) -> None:
    code, result = group.revoked.probe(server_b, group.b.fqdn)
    assert code == 1
    assert result["ok"] == 0
    assert_refused_in_handshake(result)


def test_client_refuses_server_with_wrong_name(group: Group, server_b: Component) -> None:
    code, result = group.a.probe(server_b, "not-b.sluis.test")
    assert code == 1
    assert any("CERTIFICATE_VERIFY_FAILED" in r.upper() for r in result["failures"]), result


def _plain_client(group: Group) -> ssl.SSLContext:
    """A client that trusts the Group but presents no certificate (no HSM in this process)."""
    ctx = ssl.create_default_context(cafile=str(group.b.config.tls.trust_anchors))
    return ctx


def _get_without_certificate(ctx: ssl.SSLContext, server: Component, name: str) -> bytes:
    with (
        socket.create_connection((server.host, server.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(b"GET /whoami HTTP/1.1\r\nHost: b\r\n\r\n")
        data = tls.recv(1000)
    # TLS 1.3: the server rejects after its Finished; a close without HTTP is a refusal.
    if not data:
        raise ConnectionResetError("closed without a response")
    return data


def test_client_without_certificate_is_refused(group: Group, server_b: Component) -> None:
    ctx = _plain_client(group)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _get_without_certificate(ctx, server_b, group.b.fqdn)


# openssl s_client is an independent client that can offer what Python will not.
PERMISSIVE_OPENSSL_CONF = """\
openssl_conf = init
[init]
ssl_conf = ssl
[ssl]
system_default = tls
[tls]
MinProtocol = TLSv1
CipherString = ALL:@SECLEVEL=0
"""


def _s_client(server: Component, tmp_path: Path, *args: str) -> str:
    conf = tmp_path / "permissive.cnf"
    conf.write_text(PERMISSIVE_OPENSSL_CONF)
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{server.host}:{server.port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "OPENSSL_CONF": str(conf)},
        check=False,
    )
    return result.stdout + result.stderr


def _negotiated(output: str) -> bool:
    """The server accepted the offer far enough to send its certificate."""
    return "-----BEGIN CERTIFICATE-----" in output and "Cipher is (NONE)" not in output


@pytest.mark.parametrize(
    ("offer", "accepted"),
    [
        (("-tls1_3", "-groups", "X25519"), True),
        (("-tls1_3", "-groups", "P-256"), True),
        (("-tls1_3", "-groups", "P-384"), True),
        (("-tls1_3", "-groups", "ffdhe2048"), False),
        (("-tls1_3", "-groups", "P-521"), False),
        (("-tls1_2", "-sigalgs", "ECDSA+SHA256"), True),
        (("-tls1_2", "-sigalgs", "ECDSA+SHA224"), False),
        (("-tls1_2", "-sigalgs", "ECDSA+SHA1"), False),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), True),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), False),
        (("-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"), False),
        (("-tls1_1",), False),
        (("-tls1",), False),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_ncsc_policy_on_the_listener(
    server_b: Component, tmp_path: Path, offer: tuple[str, ...], accepted: bool
) -> None:
    output = _s_client(server_b, tmp_path, *offer)
    assert _negotiated(output) is accepted, output[-1500:]


SIGN_AFTER_TLS = """
import sys
from pathlib import Path
from appliance.config import load_config
from appliance.hsm.signer import Pkcs11Signer
from appliance.tls.context import client_context, server_context
config = load_config(Path(sys.argv[1]))
server_context(config.tls, config.hsm)
client_context(config.tls, config.hsm)
signer = Pkcs11Signer(config.hsm)
print(len(signer.sign(b"payload")), signer.algorithm)
"""


def test_one_process_holds_the_tls_key_and_signs_jws_in_the_token(group: Group) -> None:
    """A Manager worker does both: the provider and python-pkcs11 share the module."""
    config = group.a.config
    result = subprocess.run(
        [sys.executable, "-c", SIGN_AFTER_TLS, str(group.a.config_path)],
        env={
            **os.environ,
            "OPENSSL_CONF": str(config.tls.openssl_conf),
            **config.hsm.environment(),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["64", "ES256"]

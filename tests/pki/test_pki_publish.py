"""The read-only HTTP server for CA certificates and CRLs."""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509

from appliance.pki.ca import DemoCA
from appliance.pki.publish import PublishError, serve_public


def _request(base: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    netloc = urllib.parse.urlsplit(base).netloc
    conn = http.client.HTTPConnection(netloc, timeout=5)
    try:
        # http.client sends the path verbatim, so traversal attempts reach the server as-is.
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_serves_crl_with_content_type(ca: DemoCA, public_server: str) -> None:
    status, headers, body = _request(public_server, "GET", "/intermediate.crl")
    assert status == 200
    assert headers["Content-Type"] == "application/pkix-crl"
    assert body == (ca.directory / "public" / "intermediate.crl").read_bytes()
    assert x509.load_der_x509_crl(body).issuer == ca.intermediate_certificate.subject
    assert int(headers["Content-Length"]) == len(body)


def test_serves_pem_with_content_type(ca: DemoCA, public_server: str) -> None:
    status, headers, body = _request(public_server, "GET", "/root.pem?x=1")
    assert status == 200
    assert headers["Content-Type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(body) == ca.root_certificate


def test_head_sends_headers_only(ca: DemoCA, public_server: str) -> None:
    status, headers, body = _request(public_server, "HEAD", "/crls.pem")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) == (ca.directory / "public" / "crls.pem").stat().st_size


def test_serves_fresh_content_after_republish(ca: DemoCA, public_server: str) -> None:
    _, _, first = _request(public_server, "GET", "/root.crl")
    ca.publish_crls()
    _, _, second = _request(public_server, "GET", "/root.crl")
    assert first != second
    assert second == (ca.directory / "public" / "root.crl").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/../ca.json",
        "/../private/root.key.pem",
        "/%2e%2e/private/root.key.pem",
        "/..%2fprivate%2froot.key.pem",
        "/%2E%2E%2Fca.json",
        "/public/root.pem",
        "//etc/passwd",
        "/.crls.pem.tmp",
        "/missing.crl",
        "/ca.json",
        "/index.json",
    ],
)
def test_refuses_traversal_listing_and_unknown_files(
    ca: DemoCA, public_server: str, path: str
) -> None:
    (ca.directory / "public" / ".crls.pem.tmp").write_bytes(b"partial")
    status, _, body = _request(public_server, "GET", path)
    assert status == 404
    assert b"BEGIN" not in body
    assert b"PRIVATE" not in body


def test_refuses_symlink_out_of_public(ca: DemoCA, public_server: str) -> None:
    link = ca.directory / "public" / "evil.pem"
    link.symlink_to(ca.directory / "private" / "root.key.pem")
    status, _, body = _request(public_server, "GET", "/evil.pem")
    assert status == 404
    assert b"PRIVATE KEY" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_is_read_only(ca: DemoCA, public_server: str, method: str) -> None:
    before = (ca.directory / "public" / "root.crl").read_bytes()
    status, headers, _ = _request(public_server, method, "/root.crl")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert (ca.directory / "public" / "root.crl").read_bytes() == before


def test_refuses_missing_public_directory(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        serve_public(tmp_path, "127.0.0.1", 0)


def test_reports_port_in_use(ca: DemoCA) -> None:
    first = serve_public(ca.directory, "127.0.0.1", 0)
    try:
        port = first.server_address[1]
        with pytest.raises(PublishError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_public(ca.directory, "127.0.0.1", port)
    finally:
        first.server_close()

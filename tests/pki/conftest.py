"""Fixtures for the demo PKI tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkitest import CRL_BASE

from appliance.pki.ca import DemoCA
from appliance.pki.publish import serve_public


@pytest.fixture
def ca(tmp_path: Path) -> DemoCA:
    return DemoCA.create(tmp_path / "ca", crl_base_url=CRL_BASE)


@pytest.fixture(scope="session")
def rsa3072_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep local test servers reachable when the environment sets an HTTP proxy.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def public_server(ca: DemoCA) -> Iterator[str]:
    """Serve the CA's public directory on an ephemeral port; yields the base URL."""
    server: ThreadingHTTPServer = serve_public(ca.directory, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""Helpers for the Manager API tests: the real Falcon app in-process, one Manager per test.

The Manager runs with a temporary SQLite store, the in-memory test CA of ``contracttest``,
software signers (tests only: production signs in the HSM; every key stays in memory) and no
peer client (``client=None``: nothing goes over the network). Behind mutual TLS the verified
client certificate becomes ``req.context.peer``; here :class:`PeerInjector` builds that
identity from a test-only header carrying the certificate, so each request says who sends it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import falcon
import falcon.asgi
import falcon.testing
from contracttest import GROUP_ID, NOW, OIN_C, Group, PeerCredentials
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import ManagerSettings
from appliance.manager.api import add_routes
from appliance.manager.contracts.hashing import content_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.signatures import SignatureType, create_signature
from appliance.manager.service import ManagerService
from appliance.manager.storage import ManagerStore
from appliance.serving.app import create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.tls.peer import PeerIdentity

PEER_HEADER = "X-Test-Peer-Certificate"
MANAGER_DOMAIN = "ERROR_DOMAIN_MANAGER"


def address_of(oin: str) -> str:
    return f"https://manager-{oin[-2:]}.test.example:8443"


def inway_of(oin: str) -> str:
    return f"https://inway-{oin[-2:]}.test.example:443"


def pem(chain: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in chain)


class PeerInjector:
    """Stands in for mutual TLS: the certificate in :data:`PEER_HEADER` is the client's."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        encoded = req.get_header(PEER_HEADER)
        if encoded:
            req.context.peer = PeerIdentity.from_der(base64.b64decode(encoded))


def build_app(service: ManagerService) -> falcon.asgi.App[Any, Any]:
    app = create_base_app(ErrorDomain.MANAGER, require_peer=False)
    app.add_middleware(PeerInjector())
    add_routes(app, service)
    return app


def make_service(
    group: Group, oin: str, database: Path, *, crls: list[x509.CertificateRevocationList]
) -> ManagerService:
    """The Manager of ``oin``, knowing every Group member's certificate (as if fetched from
    their JWKS) and with its clock fixed at ``contracttest.NOW``."""
    credentials = group[oin]
    url = f"sqlite:///{database}"
    settings = ManagerSettings(
        peer_name=f"Organisatie {oin[-2:]}",
        group_id=GROUP_ID,
        address=address_of(oin),
        database=url,
        inway_address=inway_of(oin),
        directory_peer_id=OIN_C,
        directory_address=address_of(OIN_C),
        is_directory=oin == OIN_C,
    )
    store = ManagerStore.open(url)
    for peer in group.peers.values():
        store.put_certificate(
            peer.thumbprint, peer.oin, pem(peer.chain), peer.certificate.not_valid_after_utc
        )
    return ManagerService(
        settings=settings,
        store=store,
        own_chain=list(credentials.chain),
        trust_anchors=group.ca.anchors,
        crls=lambda: crls,
        signer=credentials.signer,
        client=None,
        clock=lambda: NOW,
    )


def sign(content: Mapping[str, Any], signer: PeerCredentials, kind: str = "accept") -> str:
    """``signer``'s JWS of ``kind`` over ``content`` (signed at the fixed test time)."""
    return create_signature(
        Contract.from_json(content), SignatureType(kind), signer.signer, signer.der, NOW
    )


def hash_of(content: Mapping[str, Any]) -> str:
    return content_hash(Contract.from_json(content))


def peer_headers(peer: PeerCredentials | x509.Certificate) -> dict[str, str]:
    certificate = peer if isinstance(peer, x509.Certificate) else peer.certificate
    return {PEER_HEADER: base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()}


@dataclass
class Api:
    """One Manager and a client for its API; every call names the peer that makes it."""

    service: ManagerService
    client: falcon.testing.TestClient
    group: Group

    @property
    def store(self) -> ManagerStore:
        return self.service.store

    def post_contract(
        self,
        content: Any,
        signature: str | None,
        *,
        peer: PeerCredentials,
        address: str | None = "",
    ) -> falcon.testing.Result:
        body: dict[str, Any] = {"contract_content": content}
        if signature is not None:
            body["signature"] = signature
        return self.client.simulate_post(
            "/v1/contracts", json=body, headers=self.headers(peer, address)
        )

    def put_signature(
        self,
        kind: str,
        content: Any,
        signature: str,
        *,
        peer: PeerCredentials,
        path_hash: str | None = None,
        address: str | None = "",
    ) -> falcon.testing.Result:
        digest = path_hash if path_hash is not None else hash_of(content)
        return self.client.simulate_put(
            f"/v1/contracts/{quote(digest, safe='')}/{kind}",
            json={"contract_content": content, "signature": signature},
            headers=self.headers(peer, address),
        )

    def get(
        self,
        path: str,
        *,
        peer: PeerCredentials,
        params: Mapping[str, str] | None = None,
    ) -> falcon.testing.Result:
        return self.client.simulate_get(path, params=params, headers=peer_headers(peer))

    def token(
        self, form: Mapping[str, str], *, peer: PeerCredentials | x509.Certificate
    ) -> falcon.testing.Result:
        return self.client.simulate_post(
            "/v1/token",
            body="&".join(f"{k}={quote(v, safe='')}" for k, v in form.items()),
            headers={
                **peer_headers(peer),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    def announce(self, *, peer: PeerCredentials, address: str | None = "") -> falcon.testing.Result:
        return self.client.simulate_put("/v1/announce", headers=self.headers(peer, address))

    def headers(self, peer: PeerCredentials, address: str | None) -> dict[str, str]:
        """``address=""`` sends the peer's own Manager address; None sends no header."""
        headers = peer_headers(peer)
        if address is not None:
            headers["Fsc-Manager-Address"] = address or address_of(peer.oin)
        return headers


@contextmanager
def running_api(
    group: Group, oin: str, database: Path, *, crls: list[x509.CertificateRevocationList]
) -> Iterator[Api]:
    service = make_service(group, oin, database, crls=crls)
    try:
        yield Api(service, falcon.testing.TestClient(build_app(service)), group)
    finally:
        service.store.close()


def assert_fsc_error(result: falcon.testing.Result, status: int, code: str) -> dict[str, Any]:
    """An FSC error response: ``status``, the Fsc-Error-Code header and manager.yaml's
    ``error`` object ``{message, domain, code}`` with domain ERROR_DOMAIN_MANAGER."""
    assert result.status_code == status, result.text
    assert result.headers.get("Fsc-Error-Code") == code, result.headers
    assert result.headers.get("Content-Type", "").startswith("application/json")
    body = json.loads(result.text)
    assert set(body) == {"message", "domain", "code"}, body
    assert body["domain"] == MANAGER_DOMAIN
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return dict(body)


def assert_oauth_error(result: falcon.testing.Result, error: str, status: int = 400) -> str:
    """An RFC 6749 section 5.2 error: ``{error, error_description}``; returns the description."""
    assert result.status_code == status, result.text
    body = json.loads(result.text)
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert result.headers.get("Cache-Control") == "no-store"
    description: str = body.get("error_description", "")
    return description

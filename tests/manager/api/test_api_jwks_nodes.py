"""GET /v1/.well-known/jwks.json of an organisation with two gateway nodes (docs/ha.md).

Each node has its own key and certificate (the same OIN), and both nodes' Managers share one
database. A peer checking a signature of either node asks the Manager at the organisation's
one address, whichever node holds it: each node publishes its own chain first, then the other
node's, and nothing else the store holds (other peers', an untrusted CA's, expired ones).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import falcon.testing
import pytest
from apitest import Api, build_app, make_service, pem
from contracttest import NOW, OIN_A, OIN_B, Group, PeerCredentials
from cryptography import x509

from appliance.manager.certificates import chains_from_jwks
from appliance.manager.service import ManagerService
from appliance.manager.storage import ManagerStore


@dataclass
class Nodes:
    first: ManagerService
    second: ManagerService
    second_credentials: PeerCredentials


@pytest.fixture
def nodes(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> Iterator[Nodes]:
    """Peer B as two nodes on one database: node 1 with B's usual certificate, node 2 with
    its own key and a certificate of the same OIN from the Group's CA."""
    database = tmp_path / "shared.db"
    first = make_service(group, OIN_B, database, crls=crls)
    credentials = group.ca.issue(OIN_B)
    second = ManagerService(
        settings=first.settings,
        store=ManagerStore.open(first.settings.database),
        own_chain=list(credentials.chain),
        trust_anchors=group.ca.anchors,
        crls=lambda: crls,
        signer=credentials.signer,
        clock=lambda: NOW,
    )
    try:
        yield Nodes(first, second, credentials)
    finally:
        first.store.close()
        second.store.close()


def published(service: ManagerService, group: Group) -> list[list[x509.Certificate]]:
    """The chains of the node's JWKS, in its order, fetched over the API as peer A does."""
    api = Api(service, falcon.testing.TestClient(build_app(service)), group)
    result = api.get("/v1/.well-known/jwks.json", peer=group[OIN_A])
    assert result.status_code == 200, result.text
    document = json.loads(result.text)
    chains = [
        [x509.load_der_x509_certificate(base64.b64decode(c)) for c in jwk["x5c"]]
        for jwk in document["keys"]
    ]
    assert list(chains_from_jwks(document).values()) == chains  # each readable by a peer
    return chains


def test_each_node_publishes_its_own_chain_first_then_the_other_nodes(
    nodes: Nodes, group: Group
) -> None:
    own = group[OIN_B]
    other = nodes.second_credentials

    assert published(nodes.first, group) == [own.chain, other.chain]
    assert published(nodes.second, group) == [other.chain, own.chain]


def test_a_single_node_publishes_only_its_own(nodes: Nodes, group: Group, tmp_path: Path) -> None:
    """Another database (a single box): the other node's certificate is not known there."""
    crls = group.ca.crls()
    alone = make_service(group, OIN_B, tmp_path / "alone.db", crls=crls)
    try:
        assert published(alone, group) == [group[OIN_B].chain]
    finally:
        alone.store.close()


def test_no_untrusted_expired_or_other_peers_certificate(nodes: Nodes, group: Group) -> None:
    """The store also holds every other peer's certificate (make_service puts the Group's
    there, as if fetched), and whatever a peer's JWKS claimed: only this Peer's chains that
    lead to the Group's trust anchors and are valid now are published."""
    untrusted = group.other_ca.issue(OIN_B)  # B's OIN, from a CA the Group does not trust
    expired = group.ca.issue(
        OIN_B, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
    )
    for credentials in (untrusted, expired):
        nodes.first.store.put_certificate(
            credentials.thumbprint,
            OIN_B,
            pem(credentials.chain),
            credentials.certificate.not_valid_after_utc,
        )
    # The same certificate filed with a not_after the store got wrong: the chain decides.
    late = group.ca.issue(OIN_B, not_after=NOW - timedelta(seconds=1))
    nodes.first.store.put_certificate(
        late.thumbprint, OIN_B, pem(late.chain), NOW + timedelta(days=30)
    )

    leaves = [chain[0] for chain in published(nodes.first, group)]

    assert leaves == [group[OIN_B].certificate, nodes.second_credentials.certificate]

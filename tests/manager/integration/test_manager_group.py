"""Three Managers as real gunicorn processes, mutual TLS with keys in their own SoftHSM tokens:
a service publication and a service connection go from proposal to valid, a token is issued
that an independent verifier accepts, and revocation ends it."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from managergroup import OIN_A, OIN_B, OIN_DIRECTORY, Member, run_failing, state_of, wait_for

from appliance.demo.processes import start_component
from appliance.manager.contracts.hashing import grant_hashes
from appliance.manager.contracts.model import Contract
from appliance.manager.storage import ManagerStore
from appliance.tls.peer import certificate_thumbprint

pytestmark = pytest.mark.slow

SERVICE = "basisregistratie"


def leaf(member: Member) -> x509.Certificate:
    return x509.load_pem_x509_certificates(member.config.tls.certificate_chain.read_bytes())[0]


@pytest.fixture(scope="module")
def publication(members: dict[str, Member]) -> str:
    b, directory = members["b"], members["directory"]
    proposed = b.sluis("contract", "propose-publication", "--service", SERVICE)
    digest = proposed["hash"]
    assert proposed["state"] == "proposed"
    # The directory receives it through b's delivery loop, then its operator accepts.
    wait_for(lambda: state_of(directory, digest) == "proposed", "the directory to receive it")
    assert directory.sluis("contract", "accept", digest)["state"] == "valid"
    wait_for(lambda: state_of(b, digest) == "valid", "b to see the directory's signature")
    return str(digest)


@pytest.fixture(scope="module")
def connection(members: dict[str, Member], publication: str) -> dict[str, Any]:
    a, b = members["a"], members["b"]
    proposed = a.sluis(
        "contract", "propose-connection", "--service-peer", OIN_B, "--service", SERVICE
    )
    digest = proposed["hash"]
    wait_for(lambda: state_of(b, digest) == "proposed", "b to receive the connection request")
    accepted = b.sluis("contract", "accept", digest)
    assert accepted["state"] == "valid"
    wait_for(lambda: state_of(a, digest) == "valid", "a to see b's signature")
    grant = accepted["content"]["grants"][0]["data"]
    assert grant["outway"]["peer_id"] == OIN_A
    shown = a.sluis("contract", "show", digest)
    return {"hash": digest, "content": shown["content"], "signatures": shown["signatures"]}


def grant_hash_of(member: Member, digest: str) -> str:
    """The grant hash as the CLI shows it, checked against the library's own computation."""
    shown = member.sluis("contract", "show", digest)
    expected = grant_hashes(Contract.from_json(shown["content"]))
    assert shown["grant_hashes"] == list(expected)
    return str(expected[0])


def test_publication_is_signed_by_both_and_listed_by_the_directory(
    members: dict[str, Member], publication: str
) -> None:
    shown = members["directory"].sluis("contract", "show", publication)
    assert set(shown["signatures"]["accept"]) == {OIN_B, OIN_DIRECTORY}
    assert shown["signatures"]["reject"] == {}
    assert shown["signatures"]["revoke"] == {}


def test_connection_is_valid_at_both_ends(
    members: dict[str, Member], connection: dict[str, Any]
) -> None:
    assert set(connection["signatures"]["accept"]) == {OIN_A, OIN_B}
    assert state_of(members["b"], connection["hash"]) == "valid"


def test_token_is_bound_to_the_consumer_certificate_and_verifies_independently(
    members: dict[str, Member], connection: dict[str, Any]
) -> None:
    a, b = members["a"], members["b"]
    gth = grant_hash_of(a, connection["hash"])
    token = a.sluis("contract", "token", "--grant-hash", gth, "--service-peer", OIN_B)
    assert token["token_type"] == "bearer"
    access = token["access_token"]

    # PyJWT, with b's certificate: the token was signed in b's HSM.
    issuer_key = leaf(b).public_key()
    claims = jwt.decode(
        access, issuer_key, algorithms=["ES256"], audience=b.config.manager.inway_address
    )  # type: ignore[union-attr]
    assert claims["gth"] == gth
    assert claims["sub"] == OIN_A
    assert claims["iss"] == OIN_B
    assert claims["svc"] == SERVICE
    assert claims["gid"] == "sluis.test"
    consumer_der = leaf(a).public_bytes(Encoding.DER)
    assert claims["cnf"]["x5t#S256"] == certificate_thumbprint(consumer_der)
    header = jwt.get_unverified_header(access)
    assert header["x5t#S256"] == certificate_thumbprint(leaf(b).public_bytes(Encoding.DER))

    # Any changed byte of the signed part is detected.
    head, payload, signature = access.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = OIN_B
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{head}.{forged_payload}.{signature}",
            issuer_key,
            algorithms=["ES256"],
            audience=claims["aud"],
        )


def test_only_the_grantee_gets_a_token(
    members: dict[str, Member], connection: dict[str, Any]
) -> None:
    directory = members["directory"]
    gth = grant_hash_of(members["a"], connection["hash"])
    result = run_failing(
        directory, "contract", "token", "--grant-hash", gth, "--service-peer", OIN_B
    )
    assert result.returncode != 0
    assert "400" in result.stderr or "401" in result.stderr


def test_revoked_connection_gives_no_more_tokens(
    members: dict[str, Member], connection: dict[str, Any]
) -> None:
    a, b = members["a"], members["b"]
    gth = grant_hash_of(a, connection["hash"])
    assert a.sluis("contract", "revoke", connection["hash"])["state"] == "revoked"
    wait_for(lambda: state_of(b, connection["hash"]) == "revoked", "b to see the revocation")
    result = run_failing(a, "contract", "token", "--grant-hash", gth, "--service-peer", OIN_B)
    assert result.returncode != 0
    assert "invalid_grant" in result.stderr


def _restart(member: Member) -> None:
    assert member.manager is not None
    member.manager = start_component(
        f"manager-{member.name}-again",
        member.config_path,
        "manager",
        port=member.port,
        workers=2,
        log_dir=member.manager.log_path.parent,
    )


def test_nothing_is_lost_when_both_managers_restart_mid_way(
    members: dict[str, Member], publication: str
) -> None:
    a, b = members["a"], members["b"]
    assert a.manager is not None
    assert b.manager is not None
    a.manager.stop()
    b.manager.stop()
    # Proposed while a's own Manager is down: only the database and its outbox have it.
    proposed = a.sluis(
        "contract", "propose-connection", "--service-peer", OIN_B, "--service", SERVICE
    )
    digest = proposed["hash"]
    _restart(a)
    time.sleep(3)  # a's delivery loop tries and fails: b is still down
    assert state_of(b, digest) is None
    _restart(b)
    wait_for(lambda: state_of(b, digest) == "proposed", "the retried delivery to reach b")
    b.sluis("contract", "accept", digest)
    wait_for(lambda: state_of(a, digest) == "valid", "b's signature to reach a")


def test_revoked_publication_leaves_the_directory_listing(
    members: dict[str, Member], publication: str
) -> None:
    b, directory = members["b"], members["directory"]
    assert directory.config.manager is not None

    def listed() -> set[str]:
        with ManagerStore.open(directory.config.manager.database) as store:  # type: ignore[union-attr]
            return {s.service_name for s in store.list_services(peer_id=OIN_B)}

    assert SERVICE in listed()
    assert b.sluis("contract", "revoke", publication)["state"] == "revoked"
    wait_for(lambda: state_of(directory, publication) == "revoked", "the directory to see it")
    wait_for(lambda: SERVICE not in listed(), "the service to leave the directory's listing")

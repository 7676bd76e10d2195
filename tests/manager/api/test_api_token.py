"""POST /v1/token: an access token for a valid connection grant, bound to the client's
certificate (manager.yaml ``getToken``; core "Access token" and Manager "Tokens").

Errors here are OAuth 2.0's (RFC 6749 section 5.2), not the FSC error object.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from apitest import Api, assert_oauth_error, hash_of, inway_of, peer_headers, sign
from contracttest import (
    GROUP_ID,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    Group,
    T,
    connection_data,
    content,
)

from appliance.hsm.jws import b64url_decode
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.service import NO_GRANT

LIFETIME = 300  # ManagerSettings.token_lifetime_seconds default


@pytest.fixture
def grant_hash(provider: Api, connection: dict[str, Any], group: Group) -> str:
    """The grant of a valid A -> B connection contract (A submitted it, B accepted)."""
    result = provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    assert result.status_code == 201, result.text
    view = provider.service.sign(hash_of(connection), SignatureType.ACCEPT)
    assert view.state == "valid"
    (grant,) = view.grant_hashes
    return grant


def _form(scope: str, client_id: str = OIN_A, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": scope, "client_id": client_id, **extra}


def test_token_for_a_valid_connection_contract(
    provider: Api, grant_hash: str, group: Group
) -> None:
    result = provider.token(_form(grant_hash), peer=group[OIN_A])

    assert result.status_code == 200, result.text
    assert result.headers["Cache-Control"] == "no-store"
    body = json.loads(result.text)
    assert set(body) == {"access_token", "token_type"}
    assert body["token_type"] == "bearer"
    token = body["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    assert header["x5t#S256"] == group[OIN_B].thumbprint  # the issuer's certificate
    claims = jwt.decode(
        token,
        group[OIN_B].certificate.public_key(),
        algorithms=["ES256"],
        audience=inway_of(OIN_B),
        issuer=OIN_B,
        # The Manager's clock is fixed at contracttest.NOW; PyJWT would compare with today.
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {
        "gth": grant_hash,
        "gid": GROUP_ID,
        "sub": OIN_A,
        "iss": OIN_B,
        "svc": "basisregistratie",
        "aud": inway_of(OIN_B),
        "exp": T + LIFETIME,
        "nbf": T,
        "cnf": {"x5t#S256": group[OIN_A].thumbprint},
    }


def test_token_verifies_with_the_key_from_the_issuers_jwks(
    provider: Api, grant_hash: str, group: Group
) -> None:
    token = json.loads(provider.token(_form(grant_hash), peer=group[OIN_A]).text)["access_token"]
    jwks = json.loads(provider.get("/v1/.well-known/jwks.json", peer=group[OIN_A]).text)
    kid = jwt.get_unverified_header(token)["x5t#S256"]
    (jwk,) = [key for key in jwks["keys"] if key["x5t#S256"] == kid]

    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk),
        algorithms=["ES256"],
        audience=inway_of(OIN_B),
        options={"verify_exp": False, "verify_nbf": False},
    )

    assert claims["gth"] == grant_hash


def test_token_of_another_key_does_not_verify(provider: Api, grant_hash: str, group: Group) -> None:
    token = json.loads(provider.token(_form(grant_hash), peer=group[OIN_A]).text)["access_token"]

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            group[OIN_C].certificate.public_key(),
            algorithms=["ES256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_aud": False},
        )


def test_token_carries_the_grants_properties(provider: Api, group: Group) -> None:
    with_properties = content(
        connection_data(
            thumbprint=group[OIN_A].public_key_thumbprint, properties={"doelbinding": "wmo"}
        )
    )
    provider.post_contract(with_properties, sign(with_properties, group[OIN_A]), peer=group[OIN_A])
    (grant,) = provider.service.sign(hash_of(with_properties), SignatureType.ACCEPT).grant_hashes

    result = provider.token(_form(grant), peer=group[OIN_A])

    assert result.status_code == 200, result.text
    payload = json.loads(b64url_decode(json.loads(result.text)["access_token"].split(".")[1]))
    assert payload["prp"] == {"doelbinding": "wmo"}


def test_wrong_grant_type_is_refused(provider: Api, grant_hash: str, group: Group) -> None:
    result = provider.token(_form(grant_hash, grant_type="authorization_code"), peer=group[OIN_A])

    assert_oauth_error(result, "unsupported_grant_type")


@pytest.mark.parametrize("missing", ["grant_type", "scope", "client_id"])
def test_missing_parameter_is_refused(
    provider: Api, grant_hash: str, group: Group, missing: str
) -> None:
    form = _form(grant_hash)
    del form[missing]

    result = provider.token(form, peer=group[OIN_A])

    assert_oauth_error(result, "invalid_request")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (b"", "application/x-www-form-urlencoded"),
        (b"", None),
        (b"grant_type=client_credentials", "text/plain"),
    ],
)
def test_body_that_is_not_a_form_is_refused(
    provider: Api, group: Group, body: bytes, content_type: str | None
) -> None:
    headers = peer_headers(group[OIN_A])
    if content_type is not None:
        headers["Content-Type"] = content_type

    result = provider.client.simulate_post("/v1/token", body=body, headers=headers)

    assert_oauth_error(result, "invalid_request")


def test_unknown_grant_hash_is_refused(provider: Api, grant_hash: str, group: Group) -> None:
    unknown = grant_hash[:-4] + ("AAAA" if not grant_hash.endswith("AAAA") else "BBBB")

    result = provider.token(_form(unknown), peer=group[OIN_A])

    assert_oauth_error(result, "invalid_grant")


def test_contract_not_yet_signed_by_both_is_refused(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    (grant,) = provider.service.get(hash_of(connection)).grant_hashes

    result = provider.token(_form(grant), peer=group[OIN_A])

    description = assert_oauth_error(result, "invalid_grant")
    assert "proposed" in description


def test_revoked_contract_is_refused(
    provider: Api, connection: dict[str, Any], grant_hash: str, group: Group
) -> None:
    revoke = sign(connection, group[OIN_A], "revoke")
    assert (
        provider.put_signature("revoke", connection, revoke, peer=group[OIN_A]).status_code == 201
    )

    result = provider.token(_form(grant_hash), peer=group[OIN_A])

    description = assert_oauth_error(result, "invalid_grant")
    assert "revoked" in description


def test_client_id_that_is_not_the_certificates_peer_is_refused(
    provider: Api, grant_hash: str, group: Group
) -> None:
    result = provider.token(_form(grant_hash, client_id=OIN_D), peer=group[OIN_A])

    # manager.yaml gives /token only 400 for errors (RFC 6749 section 5.2's default).
    description = assert_oauth_error(result, "invalid_client")
    assert "client_id" in description


def test_certificate_of_another_peer_than_the_outway_is_refused(
    provider: Api, grant_hash: str, group: Group
) -> None:
    result = provider.token(_form(grant_hash, client_id=OIN_D), peer=group[OIN_D])

    assert_oauth_error(result, "invalid_grant")


def test_another_peers_grant_is_answered_as_an_unknown_one(
    provider: Api, grant_hash: str, group: Group
) -> None:
    # D asks for A's grant: the answer must not tell D whose grant it is, nor that it exists.
    unknown = grant_hash[:-4] + ("AAAA" if not grant_hash.endswith("AAAA") else "BBBB")
    theirs = provider.token(_form(grant_hash, client_id=OIN_D), peer=group[OIN_D])
    nothing = provider.token(_form(unknown, client_id=OIN_D), peer=group[OIN_D])

    assert assert_oauth_error(theirs, "invalid_grant") == NO_GRANT
    assert (theirs.status_code, theirs.text) == (nothing.status_code, nothing.text)
    assert OIN_A not in theirs.text
    assert OIN_B not in theirs.text


def test_certificate_with_another_public_key_than_the_grant_names_is_refused(
    provider: Api, grant_hash: str, group: Group
) -> None:
    # Peer A, a valid certificate of the Group, but a new key pair.
    renewed = group.ca.issue(OIN_A)
    assert renewed.public_key_thumbprint != group[OIN_A].public_key_thumbprint

    result = provider.token(_form(grant_hash), peer=renewed.certificate)

    description = assert_oauth_error(result, "invalid_grant")
    assert "public key" in description


def test_renewed_certificate_with_the_same_key_gets_a_token_bound_to_it(
    provider: Api, grant_hash: str, group: Group
) -> None:
    # core "Certificate renewal": same key pair, new certificate; cnf names the new one.
    renewed = group.ca.issue(OIN_A, key=group[OIN_A].key)

    result = provider.token(_form(grant_hash), peer=renewed.certificate)

    assert result.status_code == 200, result.text
    payload = json.loads(b64url_decode(json.loads(result.text)["access_token"].split(".")[1]))
    assert payload["cnf"] == {"x5t#S256": renewed.thumbprint}
    assert renewed.thumbprint != group[OIN_A].thumbprint


def test_publication_grant_gives_no_token(
    provider: Api, publication: dict[str, Any], group: Group
) -> None:
    (grant,) = provider.service.get(hash_of(publication)).grant_hashes

    result = provider.token(_form(grant, client_id=OIN_C), peer=group[OIN_C])

    assert assert_oauth_error(result, "invalid_grant") == NO_GRANT


def test_service_no_longer_offered_gives_no_token(
    provider: Api, publication: dict[str, Any], grant_hash: str, group: Group
) -> None:
    # The directory revokes the publication: B's inway no longer offers the service.
    revoke = sign(publication, group[OIN_C], "revoke")
    assert (
        provider.put_signature("revoke", publication, revoke, peer=group[OIN_C]).status_code == 201
    )
    assert provider.service.offered_services() == set()

    result = provider.token(_form(grant_hash), peer=group[OIN_A])

    assert "no longer offers" in assert_oauth_error(result, "invalid_grant")

"""Access tokens: the checks before issuing, the claims, and the signed JWT."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from contracttest import (
    DAY,
    GROUP_ID,
    NOW,
    OIN_A,
    OIN_B,
    OIN_C,
    OIN_D,
    OIN_E,
    Group,
    T,
    connection_data,
    contract,
    publication_data,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.errors import SluisError
from appliance.hsm.jws import b64url_decode, verify_compact
from appliance.manager.contracts import jose
from appliance.manager.contracts.hashing import grant_hash
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.tokens import (
    TokenError,
    authorize_token_request,
    build_access_token_claims,
    issue_access_token,
)
from appliance.tls.peer import PeerIdentity

INWAY = "https://inway.provider.example:443"
CLIENT_X5T = "DpAyDYakmVAQ4oOJC3UYLRk_ONRCqMj00TeGJemMiLA"


def _claims(parsed: Contract, index: int = 0, **changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "issuer_peer_id": OIN_B,
        "inway_address": INWAY,
        "client_certificate_thumbprint": CLIENT_X5T,
        "now": NOW,
        "lifetime_seconds": 300,
    }
    arguments.update(changes)
    return build_access_token_claims(parsed, parsed.grants[index], **arguments)


def test_claims_of_a_service_connection() -> None:
    parsed = contract(connection_data(outway=OIN_A, service_peer=OIN_B, name="kadaster"))
    assert _claims(parsed) == {
        "gth": grant_hash(parsed, parsed.grants[0]),
        "gid": GROUP_ID,
        "sub": OIN_A,
        "iss": OIN_B,
        "svc": "kadaster",
        "aud": INWAY,
        "exp": T + 300,
        "nbf": T,
        "cnf": {"x5t#S256": CLIENT_X5T},
    }
    assert _claims(parsed)["gth"].startswith("$1$3$")


def test_delegated_connection_sets_act() -> None:
    # READING.md item 5: sub is the Outway's Peer, act.sub the delegator.
    claims = _claims(contract(connection_data(outway=OIN_A, delegator=OIN_D)))
    assert claims["sub"] == OIN_A
    assert claims["act"] == {"sub": OIN_D}
    assert "pdi" not in claims
    assert claims["gth"].startswith("$1$4$")


def test_delegated_publication_sets_pdi() -> None:
    claims = _claims(contract(connection_data(service_delegator=OIN_E)))
    assert claims["pdi"] == OIN_E
    assert "act" not in claims
    both = _claims(contract(connection_data(delegator=OIN_D, service_delegator=OIN_E)))
    assert (both["act"], both["pdi"]) == ({"sub": OIN_D}, OIN_E)


def test_properties_become_prp() -> None:
    properties = {"purpose": "WOZ", "nested": {"list": [1, 2.5, None]}}
    claims = _claims(contract(connection_data(properties=properties)))
    assert claims["prp"] == properties
    json.dumps(claims)  # plain JSON types, not read-only views
    assert "prp" not in _claims(contract())


def test_a_token_never_outlives_its_contract() -> None:
    parsed = contract(not_after=T + 60)
    assert _claims(parsed, lifetime_seconds=3600)["exp"] == T + 60


def test_outside_the_validity_period() -> None:
    for parsed in (contract(not_before=T + 1), contract(not_before=T - DAY, not_after=T)):
        with pytest.raises(TokenError) as caught:
            _claims(parsed)
        assert caught.value.oauth_error == "invalid_grant"


def test_only_connection_grants_of_the_contract_and_of_this_peer() -> None:
    with pytest.raises(TokenError) as caught:
        _claims(contract(publication_data()))
    assert caught.value.oauth_error == "invalid_grant"
    with pytest.raises(TokenError) as caught:
        build_access_token_claims(
            contract(),
            contract(connection_data(name="other")).grants[0],
            issuer_peer_id=OIN_B,
            inway_address=INWAY,
            client_certificate_thumbprint=CLIENT_X5T,
            now=NOW,
            lifetime_seconds=60,
        )
    assert caught.value.oauth_error == "invalid_grant"
    with pytest.raises(TokenError) as caught:
        _claims(contract(), issuer_peer_id=OIN_C)
    assert caught.value.oauth_error == "invalid_grant"


@pytest.mark.parametrize(
    "address",
    [
        "https://inway.example",
        "http://inway.example:443",
        "inway.example:443",
        "https://:443",
        "https://inway.example:99999",
        "https://user@inway.example:443",
        "https://inway.example:443/path",
        "https://inway.example:443?x=1",
    ],
)
def test_inway_address_has_scheme_and_port(address: str) -> None:
    with pytest.raises(ValueError, match="inway address"):
        _claims(contract(), inway_address=address)


def test_good_inway_addresses() -> None:
    for address in ("https://inway.example:8443", "https://10.0.0.1:443/", "https://[::1]:443"):
        assert _claims(contract(), inway_address=address)["aud"] == address


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="thumbprint"):
        _claims(
            contract(), client_certificate_thumbprint="DpAyDYakmVAQ4oOJC3UYLRk/ONRCqMj00TeGJemMiLA"
        )
    with pytest.raises(ValueError, match="lifetime"):
        _claims(contract(), lifetime_seconds=0)


def test_issue_access_token(group: Group) -> None:
    issuer = group[OIN_B]
    claims = _claims(contract(connection_data(properties={"k": "v"}, delegator=OIN_D)))
    token = issue_access_token(claims, issuer.signer, issuer.der)
    header, payload = verify_compact(token, issuer.certificate.public_key(), algorithms=["ES256"])
    assert header == {"alg": "ES256", "typ": "JWT", "x5t#S256": issuer.thumbprint}
    assert json.loads(payload) == claims
    parsed = jose.parse_compact(token)
    jose.verify(parsed, issuer.certificate.public_key())
    assert json.loads(b64url_decode(token.split(".")[1])) == claims


def test_issue_refuses_unfit_signers(group: Group) -> None:
    claims = _claims(contract())
    with pytest.raises(SluisError, match="does not belong"):
        issue_access_token(claims, group[OIN_A].signer, group[OIN_B].der)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss = group.ca.issue(OIN_B, key=key, algorithm="PS256")
    with pytest.raises(SluisError, match="PS256"):
        issue_access_token(claims, pss.signer, pss.der)


# -- the checks before issuing -------------------------------------------------------------


def _request(group: Group, parsed: Contract, **changes: Any) -> None:
    arguments: dict[str, Any] = {
        "issuer_peer_id": OIN_B,
        "client_id": OIN_A,
        "client": PeerIdentity.from_der(group[OIN_A].der),
    }
    arguments.update(changes)
    authorize_token_request(parsed, parsed.grants[0], **arguments)


def _bound_contract(group: Group, **kwargs: Any) -> Contract:
    thumbprint = group[OIN_A].public_key_thumbprint
    return contract(
        connection_data(outway=OIN_A, service_peer=OIN_B, thumbprint=thumbprint, **kwargs)
    )


def test_authorized_request(group: Group) -> None:
    _request(group, _bound_contract(group))
    _request(group, _bound_contract(group, delegator=OIN_D))


@pytest.mark.parametrize(
    ("changes", "oauth_error"),
    [
        ({"client_id": OIN_C}, "invalid_client"),
        ({"issuer_peer_id": OIN_C}, "invalid_grant"),
    ],
)
def test_refused_requests(group: Group, changes: dict[str, Any], oauth_error: str) -> None:
    with pytest.raises(TokenError) as caught:
        _request(group, _bound_contract(group), **changes)
    assert caught.value.oauth_error == oauth_error


def test_request_by_another_outway_peer(group: Group) -> None:
    other = PeerIdentity.from_der(group[OIN_C].der)
    with pytest.raises(TokenError) as caught:
        _request(group, _bound_contract(group), client_id=OIN_C, client=other)
    assert caught.value.oauth_error == "invalid_grant"


def test_request_with_another_key_of_the_right_peer(group: Group) -> None:
    renewed_key = group.ca.issue(OIN_A)  # same PeerID, new key pair
    with pytest.raises(TokenError) as caught:
        _request(group, _bound_contract(group), client=PeerIdentity.from_der(renewed_key.der))
    assert caught.value.oauth_error == "invalid_grant"
    assert "public key" in caught.value.description


def test_request_for_a_publication_grant(group: Group) -> None:
    with pytest.raises(TokenError) as caught:
        _request(group, contract(publication_data()))
    assert caught.value.oauth_error == "invalid_grant"


def test_renewed_certificate_with_the_same_key_still_works(group: Group) -> None:
    # Core "Certificate renewal": the public key thumbprint survives a renewal.
    renewed = group.ca.issue(OIN_A, key=group[OIN_A].key, not_after=NOW + timedelta(days=700))
    _request(group, _bound_contract(group), client=PeerIdentity.from_der(renewed.der))

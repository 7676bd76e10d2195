"""Access tokens: the checks before issuing one, its claims and the signed JWT.

Core "Access token" defines the payload; Manager "Tokens" the checks. Whether the contract is
valid (signatures) and whether an Inway offers the Service are the Manager's to check with its
store and configuration; everything that follows from the contract and the client certificate
alone is here. READING.md item 5: ``sub`` is the Outway's Peer, the one the token is bound to
through ``cnf``; ``act.sub`` the delegator of a delegated connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509

from appliance.errors import SluisError
from appliance.forwarding.settings import check_inway_address
from appliance.hsm.signer import Signer
from appliance.jcs import canonicalize
from appliance.manager.contracts import jose
from appliance.manager.contracts.hashing import grant_hash
from appliance.manager.contracts.model import (
    CONNECTION_GRANTS,
    ConnectionGrant,
    Contract,
    Grant,
    thaw,
)
from appliance.manager.contracts.signatures import X5T_S256
from appliance.manager.contracts.validation import epoch_seconds
from appliance.tls.peer import PeerIdentity, certificate_thumbprint


class TokenError(SluisError):
    """A token request to refuse, with its RFC 6749 section 5.2 error code."""

    def __init__(self, oauth_error: str, description: str) -> None:
        super().__init__(f"{oauth_error}: {description}")
        self.oauth_error = oauth_error
        self.description = description


def _connection_grant(contract: Contract, grant: Grant) -> ConnectionGrant:
    # invalid_grant for every grant that gives this client no token (RFC 6749 5.2): scope
    # errors would tell a caller that a hash names a grant here, and of which kind.
    if grant not in contract.grants:
        raise TokenError("invalid_grant", "the grant is not part of the contract")
    if not isinstance(grant, CONNECTION_GRANTS):
        raise TokenError("invalid_grant", "the grant authorises no connection")
    return grant


def authorize_token_request(
    contract: Contract,
    grant: Grant,
    *,
    issuer_peer_id: str,
    client_id: str,
    client: PeerIdentity,
) -> None:
    """Manager "Tokens" checks 2, 3, 5 and 6 for ``client`` (from its mTLS certificate).

    The descriptions name no peer: a refused caller learns nothing about whose grant it is.
    """
    connection = _connection_grant(contract, grant)
    if client_id != client.peer_id:
        raise TokenError("invalid_client", "client_id is not the peer id of the certificate")
    if connection.outway.peer_id != client.peer_id:
        raise TokenError("invalid_grant", "the grant is not for this client's outway")
    if connection.service.peer_id != issuer_peer_id:
        raise TokenError("invalid_grant", "the grant is not for a service of this peer")
    if connection.outway.public_key_thumbprint != client.public_key_thumbprint:
        raise TokenError(
            "invalid_grant",
            "the client certificate's public key is not the one the grant names",
        )


def build_access_token_claims(
    contract: Contract,
    grant: Grant,
    *,
    issuer_peer_id: str,
    inway_address: str,
    client_certificate_thumbprint: str,
    now: datetime,
    lifetime_seconds: int,
) -> dict[str, Any]:
    """The JWT payload for a token that lets ``grant``'s Outway call its Service."""
    connection = _connection_grant(contract, grant)
    if connection.service.peer_id != issuer_peer_id:
        raise TokenError("invalid_grant", "the grant is not for a service of this peer")
    check_inway_address(inway_address)
    if not X5T_S256.fullmatch(client_certificate_thumbprint):
        raise ValueError("client_certificate_thumbprint must be an x5t#S256 (base64url)")
    if lifetime_seconds <= 0:
        raise ValueError("lifetime_seconds must be positive")
    current = epoch_seconds(now)
    validity = contract.validity
    if current < validity.not_before or current >= validity.not_after:
        raise TokenError("invalid_grant", "the contract is not in its validity period")
    claims: dict[str, Any] = {
        "gth": grant_hash(contract, connection),
        "gid": contract.group_id,
        "sub": connection.outway.peer_id,
        "iss": issuer_peer_id,
        "svc": connection.service.name,
        "aud": inway_address,
        # A token never outlives its contract.
        "exp": min(current + lifetime_seconds, validity.not_after),
        "nbf": current,
        "cnf": {"x5t#S256": client_certificate_thumbprint},
    }
    if connection.delegator_peer_id is not None:
        claims["act"] = {"sub": connection.delegator_peer_id}
    if connection.service_delegator_peer_id is not None:
        claims["pdi"] = connection.service_delegator_peer_id
    if connection.properties is not None:
        claims["prp"] = thaw(connection.properties)
    return claims


def issue_access_token(claims: Mapping[str, Any], signer: Signer, certificate_der: bytes) -> str:
    """The signed JWT: header ``typ`` JWT, ``alg`` and the signing certificate's ``x5t#S256``."""
    if x509.load_der_x509_certificate(certificate_der).public_key() != signer.public_key():
        raise SluisError("the certificate does not belong to the signing key")
    header = {"typ": "JWT", "x5t#S256": certificate_thumbprint(certificate_der)}
    try:
        return jose.sign(signer, canonicalize(claims), header)
    except jose.JoseError as exc:
        raise SluisError(f"cannot sign the access token: {exc}") from exc

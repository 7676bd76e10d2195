"""Verify the certificate-bound access token of a request (Core "Inway" > "Authorization").

A token is accepted when
- it is a JWS (RS256-512 or ES256-512) signed by this Peer's own Manager: its header's
  ``x5t#S256`` names this appliance's certificate and the signature verifies with its key;
- ``iss`` is this Peer and ``aud`` this inway's address;
- it is bound to the client certificate of *this* connection: ``cnf.x5t#S256`` (RFC 8705
  section 3.1) is that certificate's thumbprint, and ``sub`` its Peer;
- ``nbf <= now < exp`` (with a small clock skew);
- ``gid`` is this Group and ``svc`` a Service this inway offers.

The order of the checks decides which error a bad token gets: nothing about the Group or the
Services is revealed to a peer whose token is not its own.

An Outway reuses its token for minutes, so what depends on the token alone (the signature,
about 0.3 ms, and the claims' shape) is remembered per token string; binding, audience,
issuer, time, Group and Service are checked on every request (about 2 us with a hit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from appliance.inway.certificates import SigningCertificates
from appliance.inway.errors import InwayError, InwayErrorCode
from appliance.manager.contracts import jose
from appliance.tls.peer import PeerIdentity

_MAX_TOKEN_LENGTH = 16_384


@dataclass(frozen=True)
class AccessToken:
    """The verified claims a request is authorised by."""

    grant_hash: str
    group_id: str
    subject: str
    issuer: str
    service: str
    audience: str
    expires: float
    not_before: float
    certificate_thumbprint: str
    delegator: str | None = None  # act.sub: the Peer the outway's Peer acts for
    service_delegator: str | None = None  # pdi: the Peer that delegated the publication


@dataclass(frozen=True)
class _Decoded:
    access: AccessToken
    signer_not_before: float  # validity of the certificate that signed the token
    signer_not_after: float


def _invalid(message: str) -> InwayError:
    return InwayError(InwayErrorCode.ACCESS_TOKEN_INVALID, message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _invalid(f"duplicate claim {name!r}")
        result[name] = value
    return result


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"claim {name!r} is missing or not a string")
    return value


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"claim {name!r} is missing or not a NumericDate")
    return float(value)


def _optional_object(claims: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, dict):
        raise _invalid(f"claim {name!r} is not an object")
    return value


def token_from_header(value: str | None) -> str:
    """The JWT in ``Fsc-Authorization``: bare, or after the ``Bearer`` scheme."""
    token = (value or "").strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
    if not token:
        raise InwayError(
            InwayErrorCode.ACCESS_TOKEN_MISSING,
            "the Fsc-Authorization header does not contain an access token",
        )
    return token


class TokenVerifier:
    def __init__(
        self,
        certificates: SigningCertificates,
        *,
        address: str,
        group_id: str,
        services: Collection[str],
        clock_skew: float = 5.0,
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
    ) -> None:
        self._certificates = certificates
        self._address = address
        self._group_id = group_id
        self._services = services
        self._skew = clock_skew
        self._clock = clock
        # An Outway reuses a token for minutes: remember what its (costly) signature check
        # found, keyed by the whole token. Everything that depends on the connection, this
        # inway or the time is checked on every request.
        self._cache: dict[str, _Decoded] = {}
        self._cache_size = cache_size

    def verify(self, header_value: str | None, peer: PeerIdentity) -> AccessToken:
        """The token's claims, or an :class:`InwayError` with the code for what is wrong."""
        token = token_from_header(header_value)
        now = self._clock()
        decoded = self._cache.get(token)
        if decoded is None:
            decoded = self._decode(token)
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[token] = decoded
        if not decoded.signer_not_before <= now <= decoded.signer_not_after:
            raise _invalid("the certificate that signed the access token is not valid now")
        return self._authorise(decoded.access, peer, now)

    def _evict(self, now: float) -> None:
        cache = self._cache
        expired = [t for t, d in cache.items() if d.access.expires + self._skew <= now]
        for token in expired or list(cache)[: max(1, self._cache_size // 4)]:
            del cache[token]

    def _decode(self, token: str) -> _Decoded:
        """Verify the JWS and the claims' shape: what depends on the token alone."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise _invalid("the access token is too long")
        try:
            jws = jose.parse_compact(token)
        except jose.JoseError as exc:
            raise _invalid(f"the access token is not a valid JWS: {exc}") from None
        typ = jws.header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise _invalid(f"the access token has typ {typ!r}, not JWT")
        thumbprint = jws.header.get("x5t#S256")
        if not isinstance(thumbprint, str):
            raise _invalid("the access token header names no signing certificate (x5t#S256)")
        certificate = self._certificates.find(thumbprint)
        if certificate is None:
            raise _invalid("the access token is not signed by this peer's Manager")
        try:
            jose.verify(jws, certificate.public_key())
        except jose.JoseError as exc:
            raise _invalid(f"the access token's signature does not verify: {exc}") from None
        try:
            claims = json.loads(jws.payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _invalid("the access token's payload is not UTF-8 JSON") from None
        if not isinstance(claims, dict):
            raise _invalid("the access token's payload is not a JSON object")
        cnf = _optional_object(claims, "cnf") or {}
        act = _optional_object(claims, "act")
        pdi = claims.get("pdi")
        if pdi is not None and not isinstance(pdi, str):
            raise _invalid("claim 'pdi' is not a string")
        for name in ("prp", "add"):
            _optional_object(claims, name)
        bound_to = cnf.get("x5t#S256")
        if not isinstance(bound_to, str):
            raise _invalid("the access token is not bound to a certificate (cnf.x5t#S256)")
        delegator = None
        if act is not None:
            delegator = act.get("sub")
            if not isinstance(delegator, str):
                raise _invalid("claim 'act.sub' is missing or not a string")
        access = AccessToken(
            grant_hash=_string(claims, "gth"),
            group_id=_string(claims, "gid"),
            subject=_string(claims, "sub"),
            issuer=_string(claims, "iss"),
            service=_string(claims, "svc"),
            audience=_string(claims, "aud"),
            expires=_number(claims, "exp"),
            not_before=_number(claims, "nbf"),
            certificate_thumbprint=bound_to,
            delegator=delegator,
            service_delegator=pdi,
        )
        return _Decoded(
            access,
            certificate.not_valid_before_utc.timestamp(),
            certificate.not_valid_after_utc.timestamp(),
        )

    def _authorise(self, access: AccessToken, peer: PeerIdentity, now: float) -> AccessToken:
        """The checks that depend on this inway, this connection and the time."""
        if access.issuer != self._certificates.peer_id:
            raise _invalid(f"the access token is issued by {access.issuer}, not by this peer")
        if access.audience.rstrip("/").lower() != self._address.lower():
            raise _invalid(f"the access token is meant for {access.audience}, not this inway")
        if access.certificate_thumbprint != peer.certificate_thumbprint:
            raise _invalid(
                "the access token is bound to another certificate than the one of this connection"
            )
        if access.subject != peer.peer_id:
            raise _invalid(f"the access token is for peer {access.subject}, not {peer.peer_id}")
        if now >= access.expires + self._skew:
            raise InwayError(InwayErrorCode.ACCESS_TOKEN_EXPIRED, "the access token has expired")
        if now + self._skew < access.not_before:
            raise InwayError(
                InwayErrorCode.ACCESS_TOKEN_EXPIRED, "the access token is not valid yet (nbf)"
            )
        if access.group_id != self._group_id:
            raise InwayError(
                InwayErrorCode.WRONG_GROUP_ID_IN_TOKEN,
                f"the access token is for Group {access.group_id!r}, this inway is in Group "
                f"{self._group_id!r}",
            )
        if access.service not in self._services:
            raise InwayError(
                InwayErrorCode.SERVICE_NOT_FOUND,
                f"this inway does not offer the service {access.service!r}",
            )
        return access

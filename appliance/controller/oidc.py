"""Login with the organisation's OpenID Connect provider: the authorization code flow with PKCE.

The flow (OpenID Connect Core 1.0, section 3.1; RFC 7636):

1. ``GET /login/oidc`` begins a login: a random flow id goes into a short-lived cookie
   (``__Host-sluis-oidc``: Secure, HttpOnly, SameSite=Lax, so that it comes back with the
   provider's redirect) and its SHA-256 into the store. ``state``, ``nonce`` and the PKCE
   ``code_verifier`` are HMACs of the flow id (:class:`Flow`): bound to this browser, never
   stored. The browser goes to the provider's ``authorization_endpoint`` (from its discovery
   document, ``/.well-known/openid-configuration``) with ``code_challenge`` (S256).
2. ``GET /login/oidc/callback`` (the ``redirect_url``): the login begun with the cookie is
   taken from the store (once: a second use finds nothing), ``state`` must be the flow's, the
   ``code`` is exchanged at the ``token_endpoint`` with the client secret and the verifier,
   and the ID token is verified (:meth:`OidcClient.verify_id_token`): its signature against
   the provider's JWKS (RS256 or ES256 only), ``iss``, ``aud`` (and ``azp``), ``exp``, ``iat``
   and ``nbf`` with a small leeway, and the ``nonce``.
3. The groups claim is mapped to one role (the first entry of ``roles`` that matches); no
   match refuses the login. The account is made at the first login and gets the provider's
   role at each one (:meth:`appliance.controller.store.ControllerStore.oidc_login`); the
   session is the same as after a password login.

Every failure has a ``reason`` for the audit log and a ``message`` for the person; neither
ever holds a code, a token or the client secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from appliance.config import OidcSettings
from appliance.controller.roles import Role, parse_role
from appliance.errors import ConfigurationError

FLOW_COOKIE = "__Host-sluis-oidc"
FLOW_LIFETIME = timedelta(minutes=10)
START_PATH = "/login/oidc"
CALLBACK_PATH = "/login/oidc/callback"
ALGORITHMS = ("RS256", "ES256")
MAX_DOCUMENT = 1 << 20  # bytes of a discovery document, JWKS or token response
METADATA_MAX_AGE = 3600.0  # seconds the discovery document is kept
JWKS_MIN_REFRESH = 30.0  # an unknown kid fetches the JWKS again, at most this often
BASIC_AUTH = "client_secret_basic"
_FLOW_CONTEXT = b"sluis controller oidc v1 "

AGAIN = "The login with the identity provider did not succeed. Please try again."


class OidcError(Exception):
    """A refused OIDC login: ``reason`` for the audit log, ``message`` for the person."""

    def __init__(self, reason: str, message: str = AGAIN, *, username: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.username = username


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not all(ch.isalnum() or ch in "-_" for ch in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Flow:
    """One login in progress; its secrets are derived from the flow id in the cookie."""

    flow_id: str

    def _derive(self, label: str) -> str:
        return b64url(
            hmac.new(
                self.flow_id.encode("utf-8"), _FLOW_CONTEXT + label.encode(), hashlib.sha256
            ).digest()
        )

    @property
    def id_hash(self) -> str:
        return hashlib.sha256(self.flow_id.encode("utf-8")).hexdigest()

    @property
    def state(self) -> str:
        return self._derive("state")

    @property
    def nonce(self) -> str:
        return self._derive("nonce")

    @property
    def code_verifier(self) -> str:
        return self._derive("pkce")  # 43 characters of [A-Za-z0-9_-] (RFC 7636 section 4.1)

    @property
    def code_challenge(self) -> str:
        return b64url(hashlib.sha256(self.code_verifier.encode("ascii")).digest())

    def state_matches(self, state: str | None) -> bool:
        return bool(state) and hmac.compare_digest(self.state.encode(), str(state).encode())


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_method: str  # client_secret_basic or client_secret_post


@dataclass(frozen=True)
class Identity:
    """Who the provider says logged in, and the role that gives them here."""

    subject: str  # "<issuer> <sub>": one account per person at the provider
    username: str
    role: Role
    group: str


def _https(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigurationError(f"[controller.oidc] {what} must be an https URL, not {url!r}")
    return url


def check_settings(settings: OidcSettings) -> None:
    """Refuse a configuration that cannot work (ConfigurationError, with the reason)."""
    _https(settings.issuer, "issuer")
    _https(settings.redirect_url, "redirect_url")
    if urlsplit(settings.redirect_url).path != CALLBACK_PATH:
        raise ConfigurationError(
            f"[controller.oidc] redirect_url must end in {CALLBACK_PATH} (the controller's "
            f"callback), not {settings.redirect_url!r}"
        )
    if "openid" not in settings.scopes:
        raise ConfigurationError("[controller.oidc] scopes must include openid")
    if not settings.client_id:
        raise ConfigurationError("[controller.oidc] client_id is empty")
    if not settings.roles:
        raise ConfigurationError(
            "[controller.oidc.roles] maps no group to a role: nobody could log in"
        )
    for group, role in settings.roles:
        try:
            parse_role(role)
        except ValueError as exc:
            raise ConfigurationError(f"[controller.oidc.roles] {group!r}: {exc}") from None
    if not 0 <= settings.leeway_seconds <= 300:
        raise ConfigurationError("[controller.oidc] leeway_seconds must be 0 to 300")
    if not 1 <= settings.timeout_seconds <= 60:
        raise ConfigurationError("[controller.oidc] timeout_seconds must be 1 to 60")


def read_client_secret(settings: OidcSettings) -> str:
    try:
        secret = Path(settings.client_secret_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(
            f"[controller.oidc] client_secret_file {settings.client_secret_file}: "
            f"{exc.strerror or exc}"
        ) from None
    if not secret:
        raise ConfigurationError(
            f"[controller.oidc] client_secret_file {settings.client_secret_file} is empty"
        )
    return secret


def tls_context(settings: OidcSettings) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=settings.ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"[controller.oidc] ca_bundle {settings.ca_bundle}: {exc}"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def public_key(jwk: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(algorithm, key)`` of a JWK usable for ID token signatures, or None."""
    if jwk.get("use", "sig") != "sig":
        return None
    try:
        if jwk.get("kty") == "RSA" and jwk.get("alg", "RS256") == "RS256":
            n = int.from_bytes(unb64url(str(jwk["n"])), "big")
            e = int.from_bytes(unb64url(str(jwk["e"])), "big")
            if n.bit_length() < 2048:
                return None
            return "RS256", rsa.RSAPublicNumbers(e, n).public_key()
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            if jwk.get("alg", "ES256") != "ES256":
                return None
            x = int.from_bytes(unb64url(str(jwk["x"])), "big")
            y = int.from_bytes(unb64url(str(jwk["y"])), "big")
            return "ES256", ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError, binascii.Error):
        return None
    return None


def _verify_signature(algorithm: str, key: Any, signature: bytes, signed: bytes) -> bool:
    try:
        if algorithm == "RS256":
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            return True
        if len(signature) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OidcError(f"ID token: {name} missing or not a number")
    return float(value)


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name looks into objects (``realm_access.roles``)."""
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def groups_of(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claim(claims, name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _clip(values: list[str], limit: int = 10) -> str:
    shown = ", ".join(v[:64] for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


class OidcClient:
    """The controller's side of the flow for one provider (one per worker)."""

    def __init__(
        self,
        settings: OidcSettings,
        client_secret: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self._secret = client_secret
        self._ssl = ssl_context or tls_context(settings)
        self._clock = clock
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, list[tuple[str | None, str, Any]]] | None = None

    @classmethod
    def from_settings(cls, settings: OidcSettings) -> OidcClient:
        check_settings(settings)
        return cls(settings, read_client_secret(settings), ssl_context=tls_context(settings))

    @property
    def provider_name(self) -> str:
        return self.settings.provider_name

    # -- talking to the provider --------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
                ) as session,
                session.request(
                    method,
                    url,
                    data=dict(data) if data is not None else None,
                    headers={"Accept": "application/json", **(headers or {})},
                    allow_redirects=False,
                ) as response,
            ):
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise OidcError(f"{what}: the answer is larger than {MAX_DOCUMENT} bytes")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise OidcError(
                f"{what}: {url} not reachable: {type(exc).__name__}: {str(exc)[:200]}",
                "The identity provider could not be reached. Please try again later.",
            ) from None
        try:
            return status, json.loads(body)
        except ValueError:
            raise OidcError(f"{what}: HTTP {status}, not JSON") from None

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (kept for an hour)."""
        if self._metadata is not None and time.monotonic() - self._metadata[0] < METADATA_MAX_AGE:
            return self._metadata[1]
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        status, doc = await self._call("GET", url, "discovery")
        if status != 200 or not isinstance(doc, dict):
            raise OidcError(f"discovery: HTTP {status} from {url}")
        if doc.get("issuer") != self.settings.issuer:
            raise OidcError(
                f"discovery: the document's issuer {str(doc.get('issuer'))[:200]!r} is not the "
                f"configured {self.settings.issuer!r}"
            )
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme != "https":
                raise OidcError(f"discovery: {name} missing or not https")
            endpoints[name] = value
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcError("discovery: the provider does not support PKCE with S256")
        auth_methods = doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        if not isinstance(auth_methods, list):
            auth_methods = ["client_secret_basic"]
        if "client_secret_basic" in auth_methods:
            auth_method = "client_secret_basic"
        elif "client_secret_post" in auth_methods:
            auth_method = "client_secret_post"
        else:
            raise OidcError(
                "discovery: the token endpoint takes neither client_secret_basic nor "
                "client_secret_post"
            )
        metadata = ProviderMetadata(
            issuer=self.settings.issuer, token_auth_method=auth_method, **endpoints
        )
        self._metadata = (time.monotonic(), metadata)
        return metadata

    async def _fetch_keys(self, metadata: ProviderMetadata) -> list[tuple[str | None, str, Any]]:
        status, doc = await self._call("GET", metadata.jwks_uri, "JWKS")
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if status != 200 or not isinstance(keys, list):
            raise OidcError(f"JWKS: HTTP {status} from {metadata.jwks_uri}, or no keys")
        usable = []
        for jwk in keys:
            if isinstance(jwk, dict) and (found := public_key(jwk)) is not None:
                kid = jwk.get("kid")
                usable.append((kid if isinstance(kid, str) else None, *found))
        self._keys = (time.monotonic(), usable)
        return usable

    async def keys_for(
        self, metadata: ProviderMetadata, kid: str | None, algorithm: str
    ) -> list[Any]:
        """The provider's keys that may have made a signature; an unknown ``kid`` fetches the
        JWKS again (key rotation), at most every ``JWKS_MIN_REFRESH`` seconds."""

        def matching(keys: list[tuple[str | None, str, Any]]) -> list[Any]:
            return [k for k_id, alg, k in keys if alg == algorithm and (kid is None or k_id == kid)]

        if self._keys is None:
            return matching(await self._fetch_keys(metadata))
        found = matching(self._keys[1])
        if not found and time.monotonic() - self._keys[0] >= JWKS_MIN_REFRESH:
            found = matching(await self._fetch_keys(metadata))
        return found

    # -- the flow -------------------------------------------------------------------------------

    async def authorization_url(self, flow: Flow) -> str:
        metadata = await self.metadata()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_url,
                "scope": " ".join(self.settings.scopes),
                "state": flow.state,
                "nonce": flow.nonce,
                "code_challenge": flow.code_challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = metadata.authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def exchange(self, metadata: ProviderMetadata, code: str, flow: Flow) -> str:
        """The ID token for ``code`` (from the token endpoint)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_url,
            "code_verifier": flow.code_verifier,
        }
        headers = {}
        if metadata.token_auth_method == BASIC_AUTH:
            # RFC 6749 section 2.3.1: both form-urlencoded before Basic.
            pair = f"{_form(self.settings.client_id)}:{_form(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.settings.client_id, "client_secret": self._secret}
        status, doc = await self._call(
            "POST", metadata.token_endpoint, "token endpoint", data=form, headers=headers
        )
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise OidcError(
                f"token endpoint refused the code: HTTP {status} {str(error)[:100]}".rstrip()
            )
        token = doc.get("id_token")
        if not isinstance(token, str) or len(token) > 64 * 1024:
            raise OidcError("token endpoint: no ID token in the answer")
        return token

    async def identity(self, code: str, flow: Flow) -> Identity:
        """Exchange ``code``, verify the ID token and map its groups to a role."""
        metadata = await self.metadata()
        token = await self.exchange(metadata, code, flow)
        header, claims, signed, signature = parse_jws(token)
        algorithm = header["alg"]
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        keys = await self.keys_for(metadata, kid, algorithm)
        if not keys:
            raise OidcError(f"ID token: no {algorithm} key {kid or ''} in the provider's JWKS")
        if not any(_verify_signature(algorithm, key, signature, signed) for key in keys):
            raise OidcError(f"ID token: the {algorithm} signature does not verify")
        self.check_claims(claims, flow)
        return self.identity_from(claims)

    def check_claims(self, claims: Mapping[str, Any], flow: Flow) -> None:
        settings = self.settings
        now = self._clock().timestamp()
        leeway = settings.leeway_seconds
        if claims.get("iss") != settings.issuer:
            raise OidcError(f"ID token: issuer {str(claims.get('iss'))[:200]!r} is not ours")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or settings.client_id not in audiences:
            raise OidcError(f"ID token: audience {str(audience)[:200]!r} is not our client id")
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is None:
            raise OidcError("ID token: several audiences and no authorized party (azp)")
        if azp is not None and azp != settings.client_id:
            raise OidcError(f"ID token: authorized party {str(azp)[:100]!r} is not our client id")
        exp = _number(claims, "exp")
        iat = _number(claims, "iat")
        nbf = _number(claims, "nbf") if "nbf" in claims else None
        if now >= exp + leeway:
            raise OidcError(f"ID token: expired {int(now - exp)} s ago")
        if iat > now + leeway or (nbf is not None and nbf > now + leeway):
            raise OidcError("ID token: issued in the future (check both clocks)")
        if iat < now - FLOW_LIFETIME.total_seconds() - leeway:
            raise OidcError(f"ID token: issued {int(now - iat)} s ago, before this login began")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), flow.nonce.encode()
        ):
            raise OidcError("ID token: the nonce is not this login's")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 255:
            raise OidcError("ID token: no valid sub")

    def identity_from(self, claims: Mapping[str, Any]) -> Identity:
        settings = self.settings
        username = claim(claims, settings.username_claim)
        if not isinstance(username, str) or not username:
            raise OidcError(
                f"ID token: no {settings.username_claim} claim (username_claim)",
                "The identity provider did not say your username. Ask an administrator.",
            )
        groups = groups_of(claims, settings.groups_claim)
        for group, role in settings.roles:
            if group in groups:
                return Identity(
                    subject=f"{settings.issuer} {claims['sub']}",
                    username=username,
                    role=parse_role(role),
                    group=group,
                )
        raise OidcError(
            f"no group maps to a role ({settings.groups_claim}: {_clip(groups) or 'none'})",
            f"Your account at {settings.provider_name} is in no group that has a role in this "
            "controller. Ask an administrator to add you to one.",
            username=username,
        )


def _form(value: str) -> str:
    return quote_plus(value)


def parse_jws(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signed bytes and signature of a compact JWS (nothing verified yet,
    except that the algorithm is one we accept)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise OidcError("ID token: not a compact JWS")
    try:
        header = json.loads(unb64url(parts[0]))
        claims = json.loads(unb64url(parts[1]))
        signature = unb64url(parts[2])
    except (ValueError, binascii.Error):
        raise OidcError("ID token: not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OidcError("ID token: header or claims not a JSON object")
    if header.get("alg") not in ALGORITHMS:
        raise OidcError(f"ID token: algorithm {str(header.get('alg'))[:20]!r} not accepted")
    if "crit" in header:
        raise OidcError("ID token: critical header parameters are not supported")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature

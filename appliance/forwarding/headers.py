"""The forwarding policy: which headers cross a gateway, in one place for both gateways.

docs/inway.md and docs/outway.md ("What crosses the gateway") are the written policy; this
module implements it. A request header, in this order:

1. hop by hop (RFC 9110 7.6.1): ``Connection`` and every header it names, ``Keep-Alive``,
   ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``: removed; so are
   ``Host`` and ``Expect``, which the gateway's own connection sets or has answered;
2. ``Fsc-*``: removed, all of them. The gateway adds the ones it validated or made itself
   (``fsc``): the inway the ``Fsc-Authorization`` it verified and the ``Fsc-Transaction-Id``
   it logged (Core "Inway" > "Routing", Logging "Inway"), the outway its own token and
   transaction id. No other ``Fsc-*`` header is defined for a request to a service;
3. named in the service's allow list (``pass_headers``, never ``Fsc-*`` or hop by hop): kept;
4. ``Sluis-*`` (the gateways' own namespace): removed;
5. a header proxies use to say who the client is or what it asked for (:func:`is_identity`:
   whole families by prefix and suffix, not a list of names): removed. The peer is proven
   by the mutual-TLS connection and the token, never by a header someone else wrote;
6. anything else: kept, in the order it came.

An answer loses its hop-by-hop headers (never ``Fsc-*``) and ``Date`` (the gateway's server
sets its own). A service's ``Fsc-*`` headers are renamed ``Sluis-Service-Fsc-*`` by the inway:
``Fsc-Error-Code`` means a gateway refused the request, and a service must not be able to
say that on a gateway's behalf.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

Headers = list[tuple[str, str]]
RawHeaders = Iterable[tuple[bytes, bytes]]

FSC_PREFIX = "fsc-"
SLUIS_PREFIX = "sluis-"
SERVICE_FSC_PREFIX = "Sluis-Service-"  # + the service's own Fsc-* name
AUTHORIZATION_HEADER = "Fsc-Authorization"

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
_REQUEST_OWN = frozenset({"host", "expect"})
_RESPONSE_OWN = frozenset({"date"})

# Who the client is, where it came from, which certificate it showed, what it first asked
# for: as written by reverse proxies, load balancers, CDNs and authenticating proxies.
IDENTITY_PREFIXES = (
    "x-forwarded",  # X-Forwarded, X-Forwarded-For, -Host, -User, -Email, -Client-Cert, ...
    "x-original-",  # X-Original-URL, -Forwarded-For, -Host
    "x-rewrite-",
    "x-real-",
    "x-client-",
    "x-ssl",
    "ssl-",
    "x-arr-",
    "client-cert",
    "x-remote-",
    "remote-",
    "cf-",
    "true-client-",
    "x-cluster-client-",
    "x-originating-",
    "x-envoy-",
    "x-auth-request-",
    "x-authenticated-",
    "x-amzn-oidc-",
    "x-goog-authenticated-",
    "x-ms-client-principal",
    "x-http-method",  # -Override: a method other than the one checked and logged
    "x-method-override",
)
IDENTITY_SUFFIXES = ("-client-ip", "-client-cert", "-client-verify", "-connecting-ip")
IDENTITY_NAMES = frozenset(
    {"forwarded", "via", "x-host", "x-http-host", "x-scheme", "x-url-scheme", "front-end-https"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name


def is_identity(lower: str) -> bool:
    """Whether the (lower-case) header name belongs to a family proxies use for identity."""
    return (
        lower in IDENTITY_NAMES
        or lower.startswith(IDENTITY_PREFIXES)
        or lower.endswith(IDENTITY_SUFFIXES)
    )


def _is_hop_by_hop(lower: str) -> bool:
    return lower in HOP_BY_HOP or lower.startswith("proxy-")


def _decoded(raw: RawHeaders) -> Headers:
    # latin-1: the bytes go on as they came.
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def _connection_names(headers: Headers) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def request_headers(
    raw: RawHeaders,
    *,
    fsc: Iterable[tuple[str, str]],
    allow: frozenset[str] = frozenset(),
) -> Headers:
    """The headers of a request for the next hop: ``raw`` under the policy, plus ``fsc``.

    ``allow``: lower-case names the service needs passed although the policy removes them
    (see :func:`allow_list`).
    """
    headers = _decoded(raw)
    named = _connection_names(headers)
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if (
            _is_hop_by_hop(lower)
            or lower in named
            or lower in _REQUEST_OWN
            or lower.startswith(FSC_PREFIX)
        ):
            continue
        if lower in allow or not (lower.startswith(SLUIS_PREFIX) or is_identity(lower)):
            kept.append((name, value))
    kept.extend(fsc)
    return kept


def _answer(raw: RawHeaders, *, rename_fsc: bool) -> Headers:
    headers = _decoded(raw)
    named = _connection_names(headers)
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(FSC_PREFIX):
            kept.append((SERVICE_FSC_PREFIX + name if rename_fsc else name, value))
        elif not (_is_hop_by_hop(lower) or lower in named or lower in _RESPONSE_OWN):
            kept.append((name, value))
    return kept


def service_answer_headers(raw: RawHeaders) -> Headers:
    """What the outway gets of a service's answer headers (at the inway)."""
    return _answer(raw, rename_fsc=True)


def inway_answer_headers(raw: RawHeaders) -> Headers:
    """What the application gets of an inway's answer headers (at the outway)."""
    return _answer(raw, rename_fsc=False)


def allow_list(names: str) -> frozenset[str]:
    """A service's ``pass_headers`` (comma-separated names), lower case; ValueError if a name
    is not a header name, is ``Fsc-*`` (only the gateway's validated ones ever pass) or is one
    the next hop's connection owns (hop by hop, ``Host``, ``Expect``)."""
    allowed: set[str] = set()
    for name in (n.strip() for n in names.split(",")):
        lower = name.lower()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if lower.startswith(FSC_PREFIX):
            raise ValueError(f"{name}: Fsc-* headers cannot be passed on request")
        if _is_hop_by_hop(lower) or lower in _REQUEST_OWN:
            raise ValueError(f"{name}: the next hop's connection sets this header itself")
        allowed.add(lower)
    return frozenset(allowed)

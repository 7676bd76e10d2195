"""Which headers cross the inway: everything end to end, nothing hop by hop (RFC 9110 7.6.1).

Removed in both directions: ``Connection`` and every header it names, ``Keep-Alive``,
``Proxy-*`` (``Proxy-Connection``, ``Proxy-Authenticate``, ``Proxy-Authorization``), ``TE``,
``Trailer``, ``Transfer-Encoding`` and ``Upgrade``. FSC headers (``Fsc-*``: the access token
and the transaction id among them) always pass, even when ``Connection`` names them.

The inway's own connections set their own framing and host: the request also loses ``Host``
(the backend's is set) and ``Expect`` (the inway's server already answered it); the response
loses ``Date``, which the inway's server adds itself (two would be invalid).

The request also loses the headers proxies use to pass on who the client is
(:data:`IDENTITY_HEADERS`: ``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``, client-certificate
headers): the peer is proven by the mutual-TLS connection and the access token, and a backend
that trusts such a header from "its" proxy must never get one written by another
organisation's outway.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
IDENTITY_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-client-cert",
        "x-real-ip",
        "x-client-cert",
        "x-client-dn",
        "x-ssl-client-cert",
        "x-ssl-client-dn",
        "ssl-client-cert",
        "client-cert",
        "client-cert-chain",
    }
)
REQUEST_ONLY = frozenset({"host", "expect"}) | IDENTITY_HEADERS
RESPONSE_ONLY = frozenset({"date"})

Headers = list[tuple[str, str]]


def end_to_end(headers: Iterable[tuple[str, str]], also: frozenset[str] = frozenset()) -> Headers:
    """``headers`` without the hop-by-hop ones (and without ``also``), order kept."""
    headers = list(headers)
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        hop_by_hop = (
            lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in named or lower in also
        )
        if lower.startswith("fsc-") or not hop_by_hop:
            kept.append((name, value))
    return kept


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """What the backend gets of an ASGI request's headers (latin-1: bytes kept as they came)."""
    return end_to_end(
        ((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw), REQUEST_ONLY
    )


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """What the Outway gets of the backend's response headers."""
    return end_to_end(
        ((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw), RESPONSE_ONLY
    )

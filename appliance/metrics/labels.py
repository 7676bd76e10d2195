"""Label values that cannot grow without bound.

A series per label value: a value taken from a request (a peer's id, a service name, an error
code an inway sent back) could make a new series per request if it were used as it came, and
fill the scrape and Prometheus' memory. :class:`Bounded` lets a value through only if it has
the expected form and fewer than ``limit`` values were let through before (per worker
process); everything else is counted as ``other``, an absent value as ``-``.
"""

from __future__ import annotations

import functools
import re

from appliance.tls.peer import PeerIdentity

OTHER = "other"
NONE = "-"
# FSC peer ids (the subject serialNumber of a peer's certificate: OINs, serial numbers).
PEER_ID = re.compile(r"[A-Za-z0-9._~-]{1,20}")


class Bounded:
    def __init__(self, pattern: re.Pattern[str], limit: int) -> None:
        self._pattern = pattern
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value in self._seen:
            return value
        if not value:
            return NONE
        if len(self._seen) >= self._limit or not self._pattern.fullmatch(value):
            return OTHER
        self._seen.add(value)
        return value


def status_class(status: int) -> str:
    """``2xx`` for 200 to 299 and so on; ``other`` outside 100 to 599."""
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


@functools.lru_cache(maxsize=64)
def certificate_peer(certificate: bytes) -> str:
    """The FSC peer id (subject serialNumber) of a verified certificate (DER), or ``-`` for
    one without exactly one: a backend's, say. Bound it like any other value."""
    try:
        return PeerIdentity.from_der(certificate).peer_id
    except Exception:  # any certificate without one FSC identity: counted, not named
        return NONE

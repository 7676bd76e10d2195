"""The gateways' HTTP/1.1 client for their next hop (outway -> inway, inway -> service).

See :mod:`appliance.upstream.client`.
"""

from appliance.upstream.client import (
    UpstreamClosed,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)

__all__ = [
    "UpstreamClosed",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
]

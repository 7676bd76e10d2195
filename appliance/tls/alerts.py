"""Send the TLS alert that says why a handshake was refused, before the connection closes.

When OpenSSL refuses a handshake (no client certificate, unknown CA, revoked, bad certificate)
it writes the fatal alert into the connection's outgoing memory BIO and fails
``SSL_do_handshake``. asyncio's and uvloop's ``SSLProtocol`` then close the transport at once,
without sending what is in that BIO: the client saw an EOF or a reset, and an operator could not
tell a missing certificate from an unknown CA or a network fault.

:class:`AlertingSSLObject` keeps the error and reports "want read" instead, which makes the
protocol send the outgoing bytes (the alert) and wait. The next handshake step raises the kept
error and the protocol closes: when the client answers the alert by closing (an EOF), sends
anything more, or the listener's handshake timeout passes (``appliance.serving.worker``).
"""

from __future__ import annotations

import ssl
from typing import Any

from appliance.tls import revocation


class AlertingSSLObject(revocation.WatchedSSLObject):
    """Server-side SSLObject whose refused handshake sends its alert before failing."""

    _sluis_refusal: ssl.SSLError | None = None
    _sluis_outgoing: ssl.MemoryBIO | None = None

    @classmethod
    def _create(
        cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any
    ) -> Any:
        self = super()._create(incoming, outgoing, *args, **kwargs)  # type: ignore[misc]
        self._sluis_outgoing = outgoing
        return self

    def do_handshake(self) -> None:
        if self._sluis_refusal is not None:
            raise self._sluis_refusal
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if self._sluis_outgoing is None or not self._sluis_outgoing.pending:
                raise  # no alert to send (a plain HTTP request, say): close at once
            # The alert is in the outgoing BIO: "want read" makes the protocol send it.
            self._sluis_refusal = exc
            raise ssl.SSLWantReadError("handshake refused; alert pending") from exc

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

A handshake that failed because the organisation key could not sign (the token went away:
pkcs11-provider's signature fails, OpenSSL reports its EVP layer) is also told to the process's
key watch (``appliance.hsm.watch``), which logs it once and brings the listener back when the
token returns. The client gets an ``internal_error`` alert. From then on, until the worker is
replaced, new handshakes are refused at their first step without asking the token (the client
sees the connection closed): no call to a dead module, no error line of the module per client.
"""

from __future__ import annotations

import ssl
from typing import Any

from appliance.hsm import watch
from appliance.tls import revocation

# What OpenSSL says when the provider's signature with the server's key failed.
_KEY_FAILURE = "EVP lib"


def key_failed(exc: ssl.SSLError) -> bool:
    """Whether a server's refused handshake failed on its own key (not on the peer)."""
    return not getattr(exc, "reason", None) and _KEY_FAILURE in str(exc)


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
        if watch.refusing():
            raise ssl.SSLError("the organisation key is not usable; handshake refused")
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if key_failed(exc):
                watch.report(watch.TLS_HANDSHAKE, str(exc))
            if self._sluis_outgoing is None or not self._sluis_outgoing.pending:
                raise  # no alert to send (a plain HTTP request, say): close at once
            # The alert is in the outgoing BIO: "want read" makes the protocol send it.
            self._sluis_refusal = exc
            raise ssl.SSLWantReadError("handshake refused; alert pending") from exc

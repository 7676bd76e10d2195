"""The certificates this Peer's Manager signs access tokens with: the appliance's own chain.

The Manager signs with the organisation key in the HSM and names its certificate in the
token header (``x5t#S256``). The inway knows that certificate from ``[tls] certificate_chain``
(a live link that rotation repoints), re-read when the file changes, and the previous one
(``.previous``). Leaves seen before stay known, so tokens signed just before a rotation remain
valid for their short lifetime, in running workers and in those the reload starts.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.errors import ConfigurationError
from appliance.hsm.certs import previous_link
from appliance.tls.peer import PeerIdentity, PeerIdentityError, certificate_thumbprint

KEEP_PREVIOUS = 4  # leaves remembered after rotations


def load_leaf(path: Path) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the certificate chain {path}: {exc}") from None
    if not chain:
        raise ConfigurationError(f"{path} holds no certificate")
    return chain[0]


class SigningCertificates:
    """``x5t#S256`` -> this Peer's own certificate, and this Peer's id (its subject OIN)."""

    def __init__(
        self,
        leaves: Sequence[x509.Certificate],
        *,
        path: Path | None = None,
        check_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not leaves:
            raise ConfigurationError("no signing certificate")
        self._path = path
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, x509.Certificate] = {}
        self._stamp = self._file_stamp()
        self._checked = clock()
        self.peer_id = ""
        for leaf in leaves:
            self._add(leaf)

    @classmethod
    def from_file(cls, path: Path) -> SigningCertificates:
        """The live chain's leaf, and the previous one's (``.previous``, kept by every
        rotation): a worker started by the reload after a rotation still verifies tokens the
        Manager signed just before it, which outways keep using for their short lifetime."""
        live = load_leaf(path)
        certificates = cls([live], path=path)
        previous = previous_link(path)
        if previous.exists():
            # An unreadable previous chain, or one of another peer (a mistake), is left out
            # rather than stopping the inway.
            with contextlib.suppress(ConfigurationError):
                certificates._add(load_leaf(previous))
                certificates._add(live)  # the live one stays the newest
        return certificates

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)  # follows the live link
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def _add(self, leaf: x509.Certificate) -> None:
        der = leaf.public_bytes(Encoding.DER)
        try:
            peer_id = PeerIdentity.from_der(der).peer_id
        except PeerIdentityError as exc:
            raise ConfigurationError(f"own certificate: {exc}") from None
        if self.peer_id and peer_id != self.peer_id:
            raise ConfigurationError(
                f"the certificate chain now names peer {peer_id}, not {self.peer_id}"
            )
        self.peer_id = peer_id
        thumbprint = certificate_thumbprint(der)
        self._known.pop(thumbprint, None)
        self._known[thumbprint] = leaf
        while len(self._known) > KEEP_PREVIOUS + 1:
            del self._known[next(iter(self._known))]

    def _maybe_reload(self, *, now: bool = False) -> None:
        if self._path is None or (not now and self._clock() - self._checked < self._interval):
            return
        with self._lock:
            self._checked = self._clock()
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp:
                return
            try:
                self._add(load_leaf(self._path))
            except ConfigurationError:
                return  # half-written during rotation: keep what we have, look again later
            self._stamp = stamp

    def find(self, thumbprint: str) -> x509.Certificate | None:
        self._maybe_reload()
        if thumbprint not in self._known:
            # The Manager may sign with a just-installed certificate before the interval has
            # passed here; one stat() settles it (the file is only read when it changed).
            self._maybe_reload(now=True)
        return self._known.get(thumbprint)

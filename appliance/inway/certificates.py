"""The certificates this Peer's Manager signs access tokens with: the appliance's own chain.

The Manager signs with the organisation key in the HSM and names its certificate in the
token header (``x5t#S256``). The inway knows that certificate from ``[tls] certificate_chain``
(a live link that rotation repoints), re-read when the file changes, and the previous one
(``.previous``). Leaves seen before stay known, so tokens signed just before a rotation remain
valid for their short lifetime, in running workers and in those the reload starts.

An organisation of several gateway nodes (docs/ha.md) has one key and certificate per node,
never copied; an outway may get its token from one node's Manager and reach the inway of
another behind the same virtual address. So the inway also accepts the chains in
``cluster/*.pem`` next to the live link (the other nodes' live and previous chains, public,
placed by the keepalived role): exactly the files there now, re-read when the directory
changes, so a node taken out of the organisation stops being accepted within seconds.
Every one of them must name this Peer.
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
CLUSTER_DIR = "cluster"  # next to [tls] certificate_chain: the other nodes' chains


def load_leaf(path: Path) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the certificate chain {path}: {exc}") from None
    if not chain:
        raise ConfigurationError(f"{path} holds no certificate")
    return chain[0]


def cluster_dir(live: Path) -> Path:
    """Where the other nodes' chains of this organisation are (docs/ha.md)."""
    return live.parent / CLUSTER_DIR


_Stamp = tuple[tuple[str, int, int, int, int], ...]


def _cluster_stamp(directory: Path) -> _Stamp:
    """Name, inode, device, size and mtime of every chain in the directory (none: empty)."""
    stamps = []
    try:
        # Hidden names are files being written (Ansible's temporary copies), not chains yet.
        names = sorted(p.name for p in directory.glob("*.pem") if not p.name.startswith("."))
    except OSError:
        return ()
    for name in names:
        try:
            st = os.stat(directory / name)
        except OSError:
            continue  # removed between the listing and now
        stamps.append((name, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class SigningCertificates:
    """``x5t#S256`` -> this Peer's own certificates and those of its other nodes, and this
    Peer's id (its subject OIN)."""

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
        self._cluster: dict[str, x509.Certificate] = {}  # exactly the files there now
        self._stamp = self._file_stamp()
        self._cluster_stamp: _Stamp = ()
        self._checked = clock()
        self.peer_id = ""
        for leaf in leaves:
            self._add(leaf)

    @classmethod
    def from_file(
        cls, path: Path, *, clock: Callable[[], float] = time.monotonic
    ) -> SigningCertificates:
        """The live chain's leaf, and the previous one's (``.previous``, kept by every
        rotation): a worker started by the reload after a rotation still verifies tokens the
        Manager signed just before it, which outways keep using for their short lifetime."""
        live = load_leaf(path)
        certificates = cls([live], path=path, clock=clock)
        previous = previous_link(path)
        if previous.exists():
            # An unreadable previous chain, or one of another peer (a mistake), is left out
            # rather than stopping the inway.
            with contextlib.suppress(ConfigurationError):
                certificates._add(load_leaf(previous))
                certificates._add(live)  # the live one stays the newest
        # Another peer's chain among the nodes' is a mistake that would let that peer's
        # Manager authorise calls here: refuse to start rather than guess.
        certificates._reload_cluster(strict=True)
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

    def _leaf_of_this_peer(self, path: Path) -> tuple[str, x509.Certificate]:
        leaf = load_leaf(path)
        der = leaf.public_bytes(Encoding.DER)
        try:
            peer_id = PeerIdentity.from_der(der).peer_id
        except PeerIdentityError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        if peer_id != self.peer_id:
            raise ConfigurationError(f"{path} names peer {peer_id}, not this peer {self.peer_id}")
        return certificate_thumbprint(der), leaf

    def _reload_cluster(self, *, strict: bool = False) -> None:
        """Take the other nodes' chains as they are in the directory now. A file that cannot
        be read or names another peer keeps the set as it was (and stops a start)."""
        if self._path is None:
            return
        directory = cluster_dir(self._path)
        stamp = _cluster_stamp(directory)
        if stamp == self._cluster_stamp:
            return
        cluster: dict[str, x509.Certificate] = {}
        for name, *_ in stamp:
            try:
                thumbprint, leaf = self._leaf_of_this_peer(directory / name)
            except ConfigurationError:
                if strict:
                    raise
                return  # half-written or wrong: keep what we have, look again later
            cluster[thumbprint] = leaf
        self._cluster = cluster
        self._cluster_stamp = stamp

    def _maybe_reload(self, *, now: bool = False) -> None:
        if self._path is None or (not now and self._clock() - self._checked < self._interval):
            return
        with self._lock:
            self._checked = self._clock()
            self._reload_cluster()
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
        if thumbprint not in self._known and thumbprint not in self._cluster:
            # The Manager may sign with a just-installed certificate before the interval has
            # passed here; a few stat() calls settle it (files are only read when changed).
            self._maybe_reload(now=True)
        return self._known.get(thumbprint) or self._cluster.get(thumbprint)

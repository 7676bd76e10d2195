"""CRLs in a running process: re-read when the bundle changes, fail closed when stale.

A gunicorn worker lives for days; the CRL bundle (``[tls] crls``) is replaced by a timer
(``sluis pki fetch-crl``) every few hours. Without a reload a worker would go on trusting a
certificate revoked since it started, and, once the CRL it loaded passed its nextUpdate, refuse
every peer until restarted.

Handshakes. Every context built by :mod:`appliance.tls.context` is attached to the watch of its
CRL bundle, and hands out SSL objects that call :func:`poll` before each handshake step. A poll
costs one clock comparison; at most every :data:`CHECK_INTERVAL` seconds it ``stat``\\ s the
bundle, and when the file changed it loads it into every attached context's X509 store again.
OpenSSL then picks, per issuer, the current CRL with the newest thisUpdate (the older CRL stays
in the store but loses); a CRL past its nextUpdate fails the handshake
(``X509_V_ERR_CRL_HAS_EXPIRED``), so a bundle that is not refreshed fails closed.

Requests. A connection opened before a revocation was verified with the CRL of that moment and
may be kept alive for minutes. :func:`peer_refusal` checks the peer of every request against the
CRLs of the current bundle: revoked, expired, or no fresh CRL of its issuer means refused, which
the apps answer in the FSC error format (``appliance.serving.app``).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from appliance.tls import errqueue
from appliance.tls.peer import PeerIdentity

log = logging.getLogger("sluis.tls.revocation")

# Seconds between two looks at the bundle file: a revocation reaches every worker within this
# time after the new bundle is in place (plus the CRL fetch timer's own period).
CHECK_INTERVAL = 1.0

_PEM_CRL_END = b"-----END X509 CRL-----"

Stamp = tuple[int, int, int, int]


@dataclass(frozen=True)
class LoadedCrl:
    """What a request check needs of one CRL."""

    issuer: str
    this_update: datetime
    next_update: datetime | None
    revoked: frozenset[int]


def parse_bundle(data: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM bundle (the form ``ssl`` reads); ValueError when one is unreadable."""
    crls: list[x509.CertificateRevocationList] = []
    for part in data.split(_PEM_CRL_END):
        start = part.find(b"-----BEGIN X509 CRL-----")
        if start < 0:
            if part.strip():
                raise ValueError("text outside a PEM CRL block")
            continue
        crls.append(x509.load_pem_x509_crl(part[start:] + _PEM_CRL_END + b"\n"))
    if not crls:
        raise ValueError("no CRL in the bundle")
    return crls


def _newest_per_issuer(crls: list[x509.CertificateRevocationList]) -> dict[str, LoadedCrl]:
    newest: dict[str, LoadedCrl] = {}
    for crl in crls:
        loaded = LoadedCrl(
            issuer=crl.issuer.rfc4514_string(),
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            revoked=frozenset(entry.serial_number for entry in crl),
        )
        known = newest.get(loaded.issuer)
        if known is None or loaded.this_update > known.this_update:
            newest[loaded.issuer] = loaded
    return newest


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class CrlWatch:
    """One CRL bundle in this process: the contexts that load it and its parsed CRLs."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        self._stamp: Stamp | None = None
        self._crls: dict[str, LoadedCrl] = {}
        self._next_check = 0.0
        self.reloads = 0
        with self._lock:
            self._load(_stamp(path), initial=True)

    @property
    def crls(self) -> dict[str, LoadedCrl]:
        return dict(self._crls)

    def attach(self, ctx: ssl.SSLContext) -> None:
        """Keep ``ctx``'s store current (it loaded the bundle when it was built)."""
        with self._lock:
            self._contexts.add(ctx)

    def poll(self) -> None:
        """Reload the bundle if it changed; looks at the file at most every interval."""
        now = self._clock()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self._interval
            stamp = _stamp(self.path)
            if stamp is not None and stamp != self._stamp:
                self._load(stamp, initial=False)

    def _load(self, stamp: Stamp | None, *, initial: bool) -> None:
        self._stamp = stamp  # a broken file is reported once, not at every poll
        try:
            crls = parse_bundle(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            # Keep the CRLs loaded before: they expire at their nextUpdate (fail closed).
            log.error("CRL bundle %s not loaded, keeping the previous CRLs: %s", self.path, exc)
            return
        for ctx in list(self._contexts):
            try:
                ctx.load_verify_locations(cafile=str(self.path))
            except (ssl.SSLError, OSError) as exc:
                log.error("CRL bundle %s not loaded into a TLS context: %s", self.path, exc)
        self._crls = _newest_per_issuer(crls)
        if not initial:
            self.reloads += 1
            log.info(
                "CRL bundle %s reloaded: %s",
                self.path,
                "; ".join(
                    f"{c.issuer}: {len(c.revoked)} revoked, next update "
                    f"{c.next_update.isoformat() if c.next_update else 'none'}"
                    for c in self._crls.values()
                ),
            )
        now = datetime.now(UTC)
        for crl in self._crls.values():
            if crl.next_update is None or crl.next_update < now:
                log.error(
                    "CRL of %s in %s is stale (next update %s): peers it covers are refused "
                    "until a fresh CRL is fetched",
                    crl.issuer,
                    self.path,
                    crl.next_update.isoformat() if crl.next_update else "none",
                )

    def refusal(self, peer: PeerIdentity, *, now: datetime | None = None) -> str | None:
        """Why ``peer``'s certificate must be refused now, or None when it may be used."""
        self.poll()
        now = now or datetime.now(UTC)
        if peer.not_after <= now:
            return f"certificate expired at {peer.not_after.isoformat()}"
        crl = self._crls.get(peer.issuer)
        if crl is None:
            return f"no CRL of its issuer ({peer.issuer}) is loaded"
        if crl.next_update is None or crl.next_update < now:
            return f"the CRL of its issuer ({peer.issuer}) is stale"
        if peer.serial_number in crl.revoked:
            return "certificate revoked"
        return None


_WATCHES: dict[Path, CrlWatch] = {}
_REGISTRY_LOCK = threading.Lock()


def watch_for(path: Path) -> CrlWatch:
    """The process' watch of the CRL bundle at ``path`` (one per file)."""
    key = path.absolute()
    with _REGISTRY_LOCK:
        watch = _WATCHES.get(key)
        if watch is None:
            watch = _WATCHES[key] = CrlWatch(key)
        return watch


def poll() -> None:
    """Reload every changed bundle of this process; never raises (it runs in handshakes)."""
    for watch in list(_WATCHES.values()):
        try:
            watch.poll()
        except Exception:  # a reload problem must not break a handshake
            log.exception("CRL bundle %s: reload failed", watch.path)


def peer_refusal(peer: PeerIdentity) -> str | None:
    """Why ``peer`` must be refused by this process, checked against every CRL bundle it loads.

    A process that built no TLS context (a unit test driving an app directly) has no bundle and
    refuses nothing here; its peers were never verified by TLS in the first place.
    """
    for watch in list(_WATCHES.values()):
        reason = watch.refusal(peer)
        if reason is not None:
            return reason
    return None


def describe(peer: PeerIdentity) -> str:
    """The peer as a refusal log line names it: identity and certificate, never content."""
    return (
        f"peer {peer.peer_id} (O={peer.organisation}, CN={peer.common_name}, "
        f"serial {peer.serial_number:x}, issuer {peer.issuer})"
    )


class WatchedSSLObject(errqueue.CleanSSLObject):
    """SSLObject (asyncio, uvloop) that brings the CRLs up to date before a handshake step."""

    def do_handshake(self) -> None:
        poll()
        super().do_handshake()


class WatchedSSLSocket(errqueue.CleanSSLSocket):
    """SSLSocket (blocking clients) with the same behaviour."""

    def do_handshake(self, block: bool = False) -> None:
        poll()
        super().do_handshake(block)


def install(ctx: ssl.SSLContext, crls: Path) -> ssl.SSLContext:
    """Attach ``ctx`` (which loaded ``crls``) to the watch and hand out watched SSL objects."""
    watch_for(crls).attach(ctx)
    errqueue.install(ctx)
    ctx.sslobject_class = WatchedSSLObject
    ctx.sslsocket_class = WatchedSSLSocket
    return ctx


def reset_for_tests() -> None:
    """Forget every watch (tests that build contexts for several bundles in one process)."""
    with _REGISTRY_LOCK:
        _WATCHES.clear()

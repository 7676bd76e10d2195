"""The organisation key stopped working in this long-running process: say so once, find out
when the token is back, and replace the process then.

Why a fresh process: a listener's TLS key is held by pkcs11-provider inside OpenSSL, beside
python-pkcs11 on the same PKCS#11 module. Measured with each kind of token (docs/keys.md,
"When the token goes away"): once the token went away, the process's module stays broken after
the token is back, and re-initialising it in place does not help reliably: with p11-kit's
client new contexts still cannot load the key (the module counts initialisations, so one
C_Finalize does not reconnect), with SoftHSM2 the contexts built before it fail and new ones
refuse every peer (the provider's verifications run on dead sessions); only tpm2-pkcs11
recovered. A new process initialises the module afresh and works with each of them.

So :class:`KeyWatch` (one per process, :func:`install`):

1. :meth:`KeyWatch.failed` is told of every failure that needs the key (a TLS handshake the
   key could not sign, a failed readiness check of the token). The first failure of each kind
   in an outage is logged, one warning; later ones only count.
2. The first failure starts one thread that checks the token from a *fresh process*
   (``python -m appliance.hsm.probe``: a session, the key, random bytes from the device),
   after 0.25 s, then doubling up to 1 s between checks (about 0.15 s of CPU each).
3. Once the check passes it logs one line and calls ``on_recovered`` (the gunicorn worker
   stops gracefully; its master starts a fresh one, which builds its TLS context with the
   token back).

While the outage lasts :attr:`KeyWatch.problem` says why (readiness answers it). Once a TLS
handshake failed on the key, :func:`refusing` is true: the listener then refuses new handshakes
before they reach the module (``appliance.tls.alerts``), so a dead token costs neither a call
that fails nor the module's own error lines per call (tpm2-pkcs11 writes one or more to stderr
for each, and cannot be told not to).

Outgoing connections (the outway towards inways) fail on a dead module without saying so: the
provider also verifies the peer's signatures in the token, so OpenSSL reports the *peer's*
certificate or CRL as badly signed. :func:`check_here` decides, in this process (a fresh one
finds the token fine while this one's module stays broken): readiness's check of the token, at
most once per ``CHECK_INTERVAL``; a key found unusable is reported as :data:`OUTGOING_TLS`, and
:func:`outgoing_refused` is then true until the process is replaced.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.hsm.settings import HsmSettings

log = logging.getLogger("sluis.hsm")

FIRST_CHECK = 0.25
LONGEST_WAIT = 1.0
PROBE_TIMEOUT = 20.0
PROBE_MODULE = "appliance.hsm.probe"
# The kind of failure after which a listener refuses new handshakes (appliance.tls.alerts).
TLS_HANDSHAKE = "TLS handshake"
# The kind after which the outway sends nothing more (appliance.outway.proxy).
OUTGOING_TLS = "outgoing TLS"
# At most one in-process check of the token per this many seconds (check_here).
CHECK_INTERVAL = 1.0

Probe = Callable[[], str | None]


def probe_in_fresh_process(config: Path) -> Probe:
    """A probe that runs ``python -m appliance.hsm.probe <config>``: None when the key is
    usable, else the reason it printed."""
    argv = [sys.executable, "-m", PROBE_MODULE, str(config)]

    def probe() -> str | None:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return f"the token check gave no answer within {PROBE_TIMEOUT:g} s"
        if done.returncode == 0:
            return None
        lines = (done.stdout.strip() or done.stderr.strip() or "no reason given").splitlines()
        return lines[-1]

    return probe


class KeyWatch:
    """Failures of the organisation key in this process, and its recovery (module docstring)."""

    def __init__(
        self,
        settings: HsmSettings,
        probe: Probe,
        on_recovered: Callable[[], None],
        *,
        first_check: float = FIRST_CHECK,
        longest_wait: float = LONGEST_WAIT,
    ) -> None:
        self._settings = settings
        self._probe = probe
        self._on_recovered = on_recovered
        self._first_check = first_check
        self._longest_wait = longest_wait
        self._lock = threading.Lock()
        self._kinds: dict[str, int] = {}  # failures of each kind in the current outage
        self._since: float | None = None
        self._problem: str | None = None
        self._thread: threading.Thread | None = None
        self.recoveries = 0

    @property
    def settings(self) -> HsmSettings:
        return self._settings

    @property
    def problem(self) -> str | None:
        """Why the key is not usable in this process now (None: no failure seen)."""
        with self._lock:
            return self._problem

    def failures(self) -> dict[str, int]:
        """The failures of each kind in the current outage."""
        with self._lock:
            return dict(self._kinds)

    def failed(self, kind: str, detail: str) -> None:
        """Something that needs the key failed (``kind``: what, e.g. ``TLS handshake``)."""
        with self._lock:
            first_of_kind = kind not in self._kinds
            self._kinds[kind] = self._kinds.get(kind, 0) + 1
            if self._since is None:
                self._since = time.monotonic()
                self._problem = f"organisation key not usable ({kind}: {detail})"
            start = self._thread is None
            if start:
                self._thread = threading.Thread(
                    target=self._watch, name="sluis-key-watch", daemon=True
                )
        if first_of_kind:
            log.warning(
                "pid %s: organisation key %r in token %r failed (%s: %s); checking the token "
                "from a fresh process until it is back",
                os.getpid(),
                self._settings.key_label,
                self._settings.token_label,
                kind,
                detail,
            )
        if start and self._thread is not None:
            self._thread.start()

    def _watch(self) -> None:
        wait = self._first_check
        reason: str | None = None
        while True:
            time.sleep(wait)
            try:
                reason = self._probe()
            except Exception as exc:  # a probe that breaks is a failed check, not a dead watch
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                break
            wait = min(wait * 2, self._longest_wait)
        with self._lock:
            since = self._since or time.monotonic()
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self._kinds.items()))
            self._problem = (
                f"organisation key usable again (checked in a fresh process); pid {os.getpid()} "
                "is being replaced to use it"
            )
            self.recoveries += 1
        log.warning(
            "pid %s: organisation key %r in token %r usable again after %.1f s (failed: %s); "
            "replacing this process to use it",
            os.getpid(),
            self._settings.key_label,
            self._settings.token_label,
            time.monotonic() - since,
            counts,
        )
        self._on_recovered()


_WATCH: KeyWatch | None = None


def install(watch: KeyWatch | None) -> None:
    """Make ``watch`` this process's watch (None: none; failures are then not reported)."""
    global _WATCH
    _WATCH = watch


def current() -> KeyWatch | None:
    return _WATCH


def refusing() -> bool:
    """Whether this process's TLS key failed (and the process is not replaced yet): new
    handshakes are refused. Other failures (a readiness check) leave the listener alone."""
    watch = _WATCH
    return watch is not None and TLS_HANDSHAKE in watch.failures()


def report(kind: str, detail: str) -> None:
    """Tell this process's watch, if it has one, that ``kind`` failed."""
    watch = _WATCH
    if watch is not None:
        watch.failed(kind, detail)


_CHECK_LOCK = threading.Lock()
_last_check: tuple[float, bool] | None = None  # (monotonic time, key usable)


def outgoing_refused() -> bool:
    """Whether this process found its key unusable for outgoing connections (until it is
    replaced): send nothing, answer that the key is unusable."""
    watch = _WATCH
    return watch is not None and OUTGOING_TLS in watch.failures()


def check_here(detail: str, *, interval: float = CHECK_INTERVAL) -> bool:
    """An outgoing handshake failed in a way the module may have caused (``detail``): is the
    key unusable in this process? Checks the token here (a session, the key, random bytes;
    no re-initialisation) at most once per ``interval``, otherwise answers the last verdict;
    blocks for the check (call it off the event loop). A dead key is reported to the watch
    (:data:`OUTGOING_TLS`), which replaces the process once a fresh one can use the token."""
    global _last_check
    watch = _WATCH
    if watch is None:
        return False
    if OUTGOING_TLS in watch.failures():
        return True
    from appliance.hsm.status import token_status  # pkcs11 only where a check runs

    with _CHECK_LOCK:  # concurrent failures wait for one check and share its verdict
        last = _last_check
        if last is not None and time.monotonic() - last[0] < interval:
            usable = last[1]
            reason = None
        else:
            status = token_status(watch.settings, recover=False)
            usable, reason = status.usable, status.reason
            _last_check = (time.monotonic(), usable)
    if usable:
        return False
    if reason is not None:
        watch.failed(OUTGOING_TLS, f"{detail}; the token check in this process: {reason}")
    return True

"""What the token-loss tests share (test_hsm_listener_outage, test_hsm_outgoing_outage): the
case (a token and how to take it away), the load of two clients with a new connection per
request, the run's phases, the certificates of the software peer, the printed summary and the
key watch's log lines."""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import SluisConfig
from appliance.demo.processes import Component
from appliance.pki.ca import DemoCA

GONE_SECONDS = 2.0
CLIENTS = 2
PAUSE = 0.02
WORKERS = 2
BEFORE = 20  # answers before the token goes away
SETTLED = 20  # answers in a row after it is back


@dataclass
class Case:
    name: str
    config: SluisConfig
    ca: DemoCA
    take_away: Callable[[], object]
    bring_back: Callable[[], object]
    fqdn: str


@dataclass
class Run:
    results: list[tuple[float, str]] = field(default_factory=list)
    started_at: float = 0.0
    gone_at: float = 0.0
    back_at: float = 0.0
    recovered_at: float | None = None

    def during(self, start: float, end: float) -> Counter[str]:
        return Counter(outcome for t, outcome in self.results if start <= t < end)

    def failed(self) -> list[tuple[float, str]]:
        return [(t, o) for t, o in self.results if o != "HTTP 200"]

    def recovery(self) -> float | None:
        """Seconds from the token's return to the first answer again."""
        return None if self.recovered_at is None else self.recovered_at - self.back_at


def software_peer(
    ca: DemoCA, where: Path, *, organisation: str, serial: str, fqdn: str, server: bool
) -> ssl.SSLContext:
    """A Group member with a software key and a certificate of the demo CA (the load client,
    or the inway's stand-in). Its key file is removed as soon as it is loaded: the session
    checks that no organisation key is left on disk."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
            x509.NameAttribute(NameOID.COMMON_NAME, fqdn),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    chain, key_file = where / f"{fqdn}.pem", where / f"{fqdn}.key"
    chain.write_bytes(ca.chain_pem(ca.issue(csr.public_bytes(serialization.Encoding.PEM))))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if server:
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca.trust_anchor_path))
    try:
        ctx.load_cert_chain(str(chain), str(key_file))
    finally:
        key_file.unlink()
    return ctx


def run_under_load(case: Case, request: Callable[[], str], *, outage_shows: bool) -> Run:
    """CLIENTS threads sending ``request()`` (its outcome: ``HTTP 200``, ...) every PAUSE;
    BEFORE answers and at least a second, the token away for GONE_SECONDS (counted from the
    first failure when ``outage_shows``), back, until SETTLED answers in a row or 30 s."""
    run = Run()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            outcome = request()
            run.results.append((started, outcome))
            back = run.back_at
            if outcome == "HTTP 200" and back and started >= back and run.recovered_at is None:
                run.recovered_at = started
            time.sleep(PAUSE)

    threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
    run.started_at = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        # Answers before the outage, over at least a second (the check reads the last half
        # second before it; under load the first ones may take a while).
        deadline = time.monotonic() + 30
        while (
            sum(o == "HTTP 200" for _, o in run.results) < BEFORE
            or time.monotonic() < run.started_at + 1.0
        ):
            assert time.monotonic() < deadline, run.results[-10:]
            time.sleep(0.05)
        run.gone_at = time.monotonic()
        case.take_away()
        if outage_shows:  # the outage must show before the token returns
            deadline = time.monotonic() + 30
            while not any(t >= run.gone_at and o != "HTTP 200" for t, o in run.results):
                assert time.monotonic() < deadline, "nothing failed with the token gone"
                time.sleep(0.02)
        time.sleep(GONE_SECONDS)  # the length of the outage, not a wait for a condition
        case.bring_back()
        run.back_at = time.monotonic()
        deadline = run.back_at + 30
        while time.monotonic() < deadline:
            recent = [o for t, o in run.results[-SETTLED:] if t > run.back_at]
            if len(recent) == SETTLED and all(o == "HTTP 200" for o in recent):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return run


def wait_for_workers(component: Component, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` workers have logged that they serve."""
    deadline = time.monotonic() + timeout
    while component.log().count(": serving") < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers serving: {component.log()}"
        time.sleep(0.1)


def summarise(case: Case, run: Run, lines: list[str], what: str, extra: str = "") -> None:
    """Print the run's figures and log lines, and check what every case must show: only
    answers before the outage, recovery within 10 s of the token's return, no traceback."""
    failed = run.failed()
    recovery = run.recovery()
    print(
        f"\n{case.name}{what}: {len(run.results)} requests (a new mutual-TLS connection each), "
        f"{len(failed)} failed; token gone {GONE_SECONDS:g} s; recovery "
        f"{f'{recovery:.2f} s' if recovery is not None else 'none'} after it came back; "
        f"failures: {dict(Counter(o for _, o in failed))}; {extra}log lines meanwhile: "
        f"{len(lines)}; load average {os.getloadavg()[0]:.1f}"
    )
    print("\n".join(lines))
    # Before the token went away (a request under way at that moment may fail).
    assert set(run.during(0, run.gone_at - 0.5)) == {"HTTP 200"}
    assert recovery is not None, "no recovery within 30 s"
    assert recovery < 10
    assert "Traceback" not in "\n".join(lines)


def watch_lines(lines: list[str]) -> tuple[list[str], list[str]]:
    """The key watch's lines: the key failed (one per worker and kind), and usable again."""
    down = [line for line in lines if "organisation key" in line and "failed (" in line]
    up = [line for line in lines if "usable again" in line]
    return down, up

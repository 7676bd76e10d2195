"""The token goes away and comes back: signatures fail clearly, ``token_status`` says so once
in the log, and everything works again within seconds, without a restart.

Each case signs in a loop (the manager's signer, one signature every 5 ms) while a readiness
probe calls ``token_status`` every 100 ms; the token goes away for a second and comes back. The
test prints the failed signatures and the recovery time (from the token's return to the first
good signature).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hosttools import require
from provisioned import p11kit_socket

from appliance.hsm.errors import HsmError
from appliance.hsm.settings import SOFTHSM_MODULE, HsmSettings
from appliance.hsm.signer import Pkcs11Signer
from appliance.hsm.status import token_status

MakeToken = Callable[..., HsmSettings]
CLIENT_MODULE = Path("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")


@dataclass
class Outage:
    signed: int = 0
    failed: int = 0
    errors: set[str] = field(default_factory=set)
    unusable_seen: list[str] = field(default_factory=list)
    back_at: float | None = None
    recovered_at: float | None = None


def run_outage(
    settings: HsmSettings, take_away: Callable[[], None], bring_back: Callable[[], None]
) -> Outage:
    outage = Outage()
    stop = threading.Event()
    # This test process may hold the module from an earlier test, connected to a server gone
    # since: the same recovery brings it back before the signer opens.
    assert token_status(settings).usable
    signer = Pkcs11Signer(settings)

    def sign_loop() -> None:
        while not stop.is_set():
            try:
                signer.sign(b"payload")
                outage.signed += 1
                if outage.back_at is not None and outage.recovered_at is None:
                    outage.recovered_at = time.monotonic()
            except HsmError as exc:
                outage.failed += 1
                outage.errors.add(str(exc))
            time.sleep(0.005)

    def probe_loop() -> None:
        while not stop.is_set():
            status = token_status(settings)
            if not status.usable and status.reason:
                outage.unusable_seen.append(status.reason)
            time.sleep(0.1)

    threads = [threading.Thread(target=sign_loop), threading.Thread(target=probe_loop)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        take_away()
        time.sleep(1.0)
        bring_back()
        outage.back_at = time.monotonic()
        deadline = outage.back_at + 10
        while outage.recovered_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        signer.close()
    return outage


def report(name: str, outage: Outage) -> None:
    recovery = (
        f"{outage.recovered_at - outage.back_at:.2f} s"
        if outage.recovered_at is not None and outage.back_at is not None
        else "none"
    )
    print(
        f"\n{name}: {outage.signed} signatures, {outage.failed} failed during the outage, "
        f"recovery {recovery} after the token came back; errors: {sorted(outage.errors)}"
    )


def assert_recovered(
    settings: HsmSettings, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    assert outage.failed > 0  # the outage was real
    assert outage.unusable_seen  # readiness said so
    assert outage.recovered_at is not None
    assert outage.back_at is not None
    assert outage.recovered_at - outage.back_at < 5
    assert token_status(settings).usable
    records = [r for r in caplog.records if r.name == "appliance.hsm.status"]
    down = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    up = [r.getMessage() for r in records if r.levelno == logging.INFO]
    # One line per kind of failure, not one per check (the probe ran ~10 times a second).
    kinds = [message.split("(", 1)[1].split(")", 1)[0] for message in down]
    assert down, "no warning"
    assert len(kinds) == len(set(kinds)), down
    assert len(down) < len(outage.unusable_seen), down
    assert len(up) == 1, up


class KeyBox:
    """``p11-kit server`` serving one SoftHSM2 token; stopped and started like a network HSM."""

    def __init__(self, socket: Path, token_label: str) -> None:
        self.socket, self.token_label = socket, token_label
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.server = subprocess.Popen(
            ["p11-kit", "server", "-f", "--provider", str(SOFTHSM_MODULE), "--name",
             str(self.socket), f"pkcs11:token={self.token_label}"],
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # the server and its per-connection children: one group
        )  # fmt: skip
        while not self.socket.exists():
            assert self.server.poll() is None, "p11-kit server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        # The whole group: stopping only the listener leaves open connections served.
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait()


@pytest.fixture
def key_box(
    make_token: MakeToken, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HsmSettings, KeyBox]]:
    require("p11-kit")
    require(str(CLIENT_MODULE))
    settings = make_token("status-remote")
    box = KeyBox(p11kit_socket(tmp_path_factory), settings.token_label)
    box.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("P11_KIT_SERVER_ADDRESS", f"unix:path={box.socket}")
            yield replace(settings, module=CLIENT_MODULE), box
    finally:
        box.stop()


def test_the_network_hsm_goes_away_and_comes_back(
    key_box: tuple[HsmSettings, KeyBox], caplog: pytest.LogCaptureFixture
) -> None:
    settings, box = key_box
    caplog.set_level(logging.INFO, logger="appliance.hsm.status")
    outage = run_outage(settings, box.stop, box.start)
    report("p11-kit server stopped", outage)
    assert_recovered(settings, outage, caplog)


def test_the_softhsm_token_store_goes_away_and_comes_back(
    make_token: MakeToken, softhsm_env: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_token("status-local")
    token_dir: Path = getattr(softhsm_env, "token_dir")  # noqa: B009 - SoftHsmEnv is conftest's
    away = token_dir.with_name(token_dir.name + ".away")
    caplog.set_level(logging.INFO, logger="appliance.hsm.status")
    try:
        outage = run_outage(
            settings, lambda: token_dir.rename(away), lambda: away.rename(token_dir)
        )
    finally:
        if away.exists():
            away.rename(token_dir)
    report("SoftHSM2 token store moved away", outage)
    assert_recovered(settings, outage, caplog)

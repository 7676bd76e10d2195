"""``appliance.hsm.watch`` by itself, with a scripted probe (the real probe, a fresh process,
and the replacement of real gunicorn workers are in test_hsm_listener_outage.py)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.hsm import watch
from appliance.hsm.settings import HsmSettings
from appliance.tls.alerts import key_failed

SETTINGS = HsmSettings(token_label="watched", pin_file=Path("/nonexistent/pin"))


@pytest.fixture(autouse=True)
def no_watch_left() -> Iterator[None]:
    yield
    watch.install(None)


def test_one_line_per_kind_probes_with_back_off_and_recovers_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = ["token gone", "token gone", "token gone", None]
    probed: list[float] = []
    recovered = threading.Event()

    def probe() -> str | None:
        probed.append(time.monotonic())
        return answers.pop(0)

    caplog.set_level(logging.INFO, logger="sluis.hsm")
    keys = watch.KeyWatch(SETTINGS, probe, recovered.set, first_check=0.05, longest_wait=0.2)
    watch.install(keys)
    assert not watch.refusing()
    started = time.monotonic()
    for _ in range(50):
        watch.report(watch.TLS_HANDSHAKE, "[SSL] EVP lib")
    watch.report("readiness", "session failed")
    assert watch.refusing()
    assert keys.problem is not None
    assert "TLS handshake" in keys.problem
    assert recovered.wait(5)
    assert keys.failures() == {"TLS handshake": 50, "readiness": 1}
    # 0.05, then 0.1, 0.2, 0.2 s between checks: doubling, bounded.
    gaps = [b - a for a, b in zip([started, *probed], probed, strict=False)]
    assert len(probed) == 4
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    assert 0.2 <= gaps[3] < 1.0
    lines = [r.getMessage() for r in caplog.records if r.name == "sluis.hsm"]
    down = [line for line in lines if "failed (" in line]
    up = [line for line in lines if "usable again" in line]
    assert len(down) == 2, lines  # one per kind, not 51
    assert len(up) == 1, lines
    assert "50 TLS handshake" in up[0]
    assert keys.recoveries == 1
    time.sleep(0.3)
    assert keys.recoveries == 1  # one thread, one recovery: the process is being replaced


def test_a_probe_that_breaks_counts_as_a_failed_check() -> None:
    calls: list[int] = []
    recovered = threading.Event()

    def probe() -> str | None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("fork failed")
        return None

    keys = watch.KeyWatch(SETTINGS, probe, recovered.set, first_check=0.01, longest_wait=0.01)
    keys.failed("TLS handshake", "x")
    assert recovered.wait(5)
    assert len(calls) == 2


def test_without_a_watch_nothing_is_refused_or_reported() -> None:
    watch.install(None)
    watch.report("TLS handshake", "x")
    assert not watch.refusing()


def test_the_real_probe_names_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "sluis.toml"
    reason = watch.probe_in_fresh_process(missing)()
    assert reason is not None
    assert str(missing) in reason


@pytest.mark.parametrize(
    ("error", "ours"),
    [
        (ssl.SSLError(1, "[SSL] EVP lib (_ssl.c:1006)"), True),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), False),
    ],
)
def test_which_handshake_failures_are_the_keys(error: ssl.SSLError, ours: bool) -> None:
    if not ours:
        error.reason = "SOME_REASON"
    assert key_failed(error) is ours

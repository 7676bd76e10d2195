"""The readiness check ``hsm`` (``appliance.metrics.health.hsm_check``) against a real SoftHSM2
token whose store goes away and comes back: it says ``HSM token gone`` and then passes again;
in a worker (a key watch installed) it hands the failure to the watch instead of
re-initialising the module under pkcs11-provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.hsm import watch
from appliance.hsm.settings import SOFTHSM_MODULE, HsmSettings
from appliance.hsm.token import reinitialize_module
from appliance.metrics.health import hsm_check

MakeToken = Callable[..., HsmSettings]


@pytest.fixture
def moved_store(softhsm_env: object) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    token_dir: Path = getattr(softhsm_env, "token_dir")  # noqa: B009 - SoftHsmEnv is conftest's
    away = token_dir.with_name(token_dir.name + ".readiness-away")
    try:
        yield (lambda: token_dir.rename(away), lambda: away.rename(token_dir))
    finally:
        if away.exists():
            away.rename(token_dir)
        watch.install(None)
        # A watched check never re-initialises; later tests need the module working again.
        reinitialize_module(SOFTHSM_MODULE)


def _run(settings: HsmSettings) -> str | None:
    check = hsm_check(SimpleNamespace(hsm=settings))  # type: ignore[arg-type]
    assert check.name == "hsm"
    return asyncio.run(check.run())


def test_readiness_says_the_token_is_gone_and_back(
    make_token: MakeToken, moved_store: tuple[Callable[[], None], Callable[[], None]]
) -> None:
    settings = make_token("readiness-alone")
    take_away, bring_back = moved_store
    assert _run(settings) is None
    take_away()
    problem = _run(settings)
    assert problem is not None
    assert problem.startswith("HSM token gone: ")
    bring_back()
    # Without a watch (not a listener) the check re-initialises the module itself, once a
    # second at most (appliance.hsm.status).
    deadline = 5.0
    while deadline > 0 and _run(settings) is not None:
        asyncio.run(asyncio.sleep(0.2))
        deadline -= 0.2
    assert _run(settings) is None


def test_in_a_worker_the_failure_goes_to_the_key_watch(
    make_token: MakeToken, moved_store: tuple[Callable[[], None], Callable[[], None]]
) -> None:
    settings = make_token("readiness-watched")
    take_away, bring_back = moved_store
    replaced = threading.Event()
    probes: list[str] = []

    def probe() -> str | None:
        probes.append("checked")
        return None if len(probes) > 1 else "still gone"

    def recovered() -> None:
        replaced.set()

    keys = watch.KeyWatch(settings, probe, recovered, first_check=0.5, longest_wait=0.5)
    watch.install(keys)
    assert _run(settings) is None
    take_away()
    problem = _run(settings)
    assert problem is not None
    assert problem.startswith("HSM token gone: ")
    assert "readiness check" in keys.failures()
    assert not watch.refusing()  # a readiness failure leaves the TLS listener alone
    bring_back()
    # Until the worker is replaced the check answers the watch's reason.
    again = _run(settings)
    assert again is not None
    assert again.startswith("HSM token gone: ")
    assert replaced.wait(10)

"""``appliance.metrics.hsm``: signatures and logins on a real SoftHSM2 token counted by result,
timed, and the key's usability from the readiness check (docs/monitoring.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from appliance.hsm.errors import WrongPinError
from appliance.hsm.pin import write_pin_file
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer
from appliance.hsm.token import logout
from appliance.metrics import hsm as hsm_metrics
from appliance.metrics.health import hsm_check

MakeToken = Callable[..., HsmSettings]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_signatures_and_logins_are_counted_and_timed(
    make_token: MakeToken, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = make_token("metrics-counted")
    logout(settings)  # make_token logged this process in; the signer logs in anew
    signs = _value("sluis_hsm_operations_total", operation="sign", result="ok")
    logins = _value("sluis_hsm_operations_total", operation="login", result="ok")
    timed = _value("sluis_hsm_operation_duration_seconds_count", operation="sign")
    with Pkcs11Signer(settings) as signer:
        for _ in range(5):
            signer.sign(b"counted")
    assert _value("sluis_hsm_operations_total", operation="sign", result="ok") == signs + 5
    assert _value("sluis_hsm_operation_duration_seconds_count", operation="sign") == timed + 5
    assert _value("sluis_hsm_operations_total", operation="login", result="ok") >= logins + 1

    logout(settings)
    wrong = tmp_path_factory.mktemp("wrong-pin") / "wrong.pin"
    write_pin_file(wrong, "not-the-pin")
    failed = _value("sluis_hsm_operations_total", operation="login", result="WrongPinError")
    with pytest.raises(WrongPinError):
        Pkcs11Signer(replace(settings, pin_file=wrong))
    assert (
        _value("sluis_hsm_operations_total", operation="login", result="WrongPinError")
        == failed + 1
    )
    assert hsm_metrics.OPERATIONS is not None


def test_the_readiness_check_sets_key_usable(make_token: MakeToken) -> None:
    settings = make_token("metrics-usable")
    check = hsm_check(SimpleNamespace(hsm=settings))  # type: ignore[arg-type]
    assert asyncio.run(check.run()) is None
    assert _value("sluis_hsm_key_usable") == 1
    missing = hsm_check(SimpleNamespace(hsm=replace(settings, key_label="no-such-key")))  # type: ignore[arg-type]
    assert asyncio.run(missing.run()) is not None
    assert _value("sluis_hsm_key_usable") == 0

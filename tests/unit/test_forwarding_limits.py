"""The gateways' per-service shares (appliance.forwarding.limits), their settings, and the
deadline the outway sends (appliance.forwarding.deadline)."""

from __future__ import annotations

import gc

import pytest

from appliance.errors import ConfigurationError
from appliance.forwarding.deadline import answer_deadline, timeout_header
from appliance.forwarding.limits import Shares
from appliance.forwarding.settings import service_limits


def test_a_full_share_refuses_and_a_released_slot_makes_room() -> None:
    shares = Shares(2, {"kadaster": 1})
    first, second = shares.enter("brp"), shares.enter("brp")
    assert first is not None
    assert second is not None
    assert shares.enter("brp") is None  # full
    held = shares.enter("kadaster")  # another share, its own limit
    assert held is not None
    assert shares.enter("kadaster") is None
    first.release()
    first.release()  # idempotent: frees one place, not two
    assert shares.in_flight("brp") == 1
    third = shares.enter("brp")
    assert third is not None
    assert shares.enter("brp") is None


def test_a_slot_nobody_released_is_freed_with_it() -> None:
    """A streamed answer Falcon never started is dropped, not closed: its slot goes with it."""
    shares = Shares(1)
    slot = shares.enter("brp")
    assert slot is not None
    del slot
    gc.collect()
    assert shares.in_flight("brp") == 0


def test_the_outway_keys_a_share_by_inway_and_service_with_the_services_limit() -> None:
    shares = Shares(1, {"00000001001234567002/kadaster": 2})
    key = "https://inway.example.nl:443 00000001001234567002/kadaster"
    config_key = "00000001001234567002/kadaster"
    held = [shares.enter(key, config_key), shares.enter(key, config_key)]
    assert None not in held
    assert shares.enter(key, config_key) is None


def test_refusals_are_reported_once_per_interval_with_their_count() -> None:
    shares = Shares(1)
    assert shares.refused("brp", 100.0) == 1  # the first is reported at once
    assert [shares.refused("brp", 100.0 + i) for i in range(1, 4)] == [0, 0, 0]
    assert shares.refused("brp", 111.0) == 4  # the three held back and this one


def test_service_limits_default_to_a_quarter_of_the_pool_and_never_exceed_it() -> None:
    def limits(default: int, table: tuple[tuple[str, int], ...] = ()) -> tuple[int, dict[str, int]]:
        return service_limits(
            "inway",
            default,
            table,
            connections=("backend_connections", 256),
            is_service={"brp", "kadaster"}.__contains__,
            what="a service",
        )

    assert limits(0) == (64, {})
    assert limits(10, (("kadaster", 256),)) == (10, {"kadaster": 256})
    with pytest.raises(ConfigurationError, match=r"service_limit must be 1\.\.backend_connections"):
        limits(257)
    with pytest.raises(ConfigurationError, match="service_limits kadaster must be"):
        limits(0, (("kadaster", 0),))
    with pytest.raises(ConfigurationError, match="'nergens' is not a service"):
        limits(0, (("nergens", 4),))


def test_the_inway_answers_before_the_outways_timeout_less_a_margin() -> None:
    assert timeout_header(30.0) == ("Sluis-Timeout", "30")
    assert answer_deadline("30", 1000.0) == pytest.approx(1029.0)  # at most 1 s back
    assert answer_deadline("4", 1000.0) == pytest.approx(1003.6)  # a tenth of a short one
    for value in (None, "", "soon", "0", "-3", "nan", "inf"):
        assert answer_deadline(value, 1000.0) is None

"""The outway refusing every request that names a data subject for want of a pseudonymisation
key (a configuration state) logs it once, then counts, not per request (issue 16)."""

from __future__ import annotations

import logging

import pytest

from appliance.outway import logging as outway_logging
from appliance.outway.errors import OutwayError
from appliance.outway.logging import DATA_SUBJECT_HEADER, purpose_binding
from appliance.statelog import FailureState


def test_a_missing_pseudonymisation_key_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {DATA_SUBJECT_HEADER: "123456782"}
    # The state is per process: an earlier test may have begun it.
    fresh = FailureState(outway_logging.log, "no pseudonymisation key", "requests refused")
    monkeypatch.setattr(outway_logging, "_NO_PSEUDONYM_KEY", fresh)
    with caplog.at_level(logging.INFO, logger="sluis.outway"):
        for _ in range(200):
            with pytest.raises(OutwayError) as refused:
                purpose_binding(headers.get, None)
            assert refused.value.fsc_code == "TRANSACTION_LOG_WRITE_ERROR"
            assert refused.value.log_level == logging.DEBUG  # not once more per request
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("no pseudonymisation key: requests name a data subject")

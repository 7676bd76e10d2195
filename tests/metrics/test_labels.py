"""Label values stay bounded whatever a request carries."""

from __future__ import annotations

import re

from appliance.metrics.labels import NONE, OTHER, Bounded, status_class


def test_values_of_the_expected_form_pass_up_to_the_limit() -> None:
    bounded = Bounded(re.compile(r"[0-9]{1,20}"), limit=3)
    assert [bounded(v) for v in ("1", "2", "3", "4", "1")] == ["1", "2", "3", OTHER, "1"]


def test_values_of_another_form_are_other_and_do_not_use_up_the_limit() -> None:
    bounded = Bounded(re.compile(r"[0-9]{1,20}"), limit=1)
    hostile = ("x" * 10_000, 'a"b', "1\n2", "123456789012345678901", "٣")  # the last: Arabic 3
    assert {bounded(v) for v in hostile} == {OTHER}
    assert bounded("7") == "7"


def test_an_absent_value_is_a_dash() -> None:
    bounded = Bounded(re.compile(r".+"), limit=5)
    assert bounded(None) == NONE
    assert bounded("") == NONE


def test_status_classes() -> None:
    assert [status_class(s) for s in (101, 200, 299, 404, 503, 99, 600)] == [
        "1xx",
        "2xx",
        "2xx",
        "4xx",
        "5xx",
        OTHER,
        OTHER,
    ]

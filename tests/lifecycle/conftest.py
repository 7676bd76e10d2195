"""A Group (directory, a, b) per test module: the tests change certificates and CRLs."""

from __future__ import annotations

import pytest
from lifecycletest import make_group

from appliance.demo.group import Member
from appliance.pki.ca import DemoCA


@pytest.fixture(scope="module")
def group(
    softhsm_env: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DemoCA, dict[str, Member]]:
    return make_group(tmp_path_factory.mktemp("lifecycle"))

"""Fixtures for the contract tests; helpers live in contracttest.py."""

from __future__ import annotations

import pytest
from contracttest import Group, make_group


@pytest.fixture(scope="session")
def group() -> Group:
    """One in-memory CA and its Peers, shared by the session (keys never touch the disk)."""
    return make_group()

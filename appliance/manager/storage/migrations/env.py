"""Alembic's environment for the Manager's database (configured in code, no alembic.ini)."""

from __future__ import annotations

from typing import Any

from appliance.manager.storage.database import MANAGER_MIGRATIONS as MIGRATIONS
from appliance.manager.storage.schema import metadata
from appliance.migrations import run_env


def _include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    # The transaction log and the controller may share the database: their tables are not ours.
    if type_ == "table":
        return name is not None and not name.startswith(("txlog_", "controller_"))
    return True


run_env(MIGRATIONS, metadata, include_name=_include_name)

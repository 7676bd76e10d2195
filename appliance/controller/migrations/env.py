"""Alembic's environment for the controller (configured in code, no alembic.ini).

Only ``controller_`` tables are the controller's: autogenerate ignores every other table, so
it can share a database with the Manager and the transaction log.
"""

from __future__ import annotations

from typing import Any

from appliance.controller.database import CONTROLLER_MIGRATIONS as MIGRATIONS
from appliance.controller.schema import TABLE_PREFIX, metadata
from appliance.migrations import run_env


def _include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


run_env(MIGRATIONS, metadata, include_name=_include_name)

"""Alembic's environment for the transaction log (configured in code, no alembic.ini).

Only ``txlog_`` tables are the log's: autogenerate ignores every other table, so the log can
share a database with the Manager without either proposing to drop the other's tables.
"""

from __future__ import annotations

from typing import Any

from appliance.migrations import run_env
from appliance.txlog.database import TXLOG_MIGRATIONS as MIGRATIONS
from appliance.txlog.schema import TABLE_PREFIX, metadata


def _include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


run_env(MIGRATIONS, metadata, include_name=_include_name)

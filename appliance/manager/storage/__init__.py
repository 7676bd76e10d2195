"""The FSC Manager's storage: SQLAlchemy Core on SQLite (default) or PostgreSQL, with Alembic.

``ManagerStore.open(url)`` connects and migrates; every method is one transaction.
"""

from appliance.database import create_engine
from appliance.manager.storage import rows
from appliance.manager.storage.database import migrate
from appliance.manager.storage.errors import (
    DuplicateIvError,
    StorageError,
    UnknownContractError,
    UnknownCursorError,
)
from appliance.manager.storage.rows import *  # noqa: F403 - the names in rows.__all__
from appliance.manager.storage.store import ManagerStore, StoreTransaction

__all__ = [
    "DuplicateIvError",
    "ManagerStore",
    "StorageError",
    "StoreTransaction",
    "UnknownContractError",
    "UnknownCursorError",
    "create_engine",
    "migrate",
]
__all__ += rows.__all__

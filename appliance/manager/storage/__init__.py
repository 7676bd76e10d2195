"""The FSC Manager's storage: SQLAlchemy Core on SQLite (default) or PostgreSQL, with Alembic.

``ManagerStore.open(url)`` connects and migrates; every method is one transaction.
"""

from appliance.manager.storage.database import create_engine, migrate
from appliance.manager.storage.errors import (
    DuplicateIvError,
    StorageError,
    UnknownContractError,
    UnknownCursorError,
)
from appliance.manager.storage.rows import (
    CertificateRow,
    ContractRow,
    Delivery,
    GrantRow,
    OutboxKind,
    OutboxRow,
    PeerRow,
    ServiceRow,
    SignatureRow,
    SignatureType,
)
from appliance.manager.storage.store import ManagerStore, StoreTransaction

__all__ = [
    "CertificateRow",
    "ContractRow",
    "Delivery",
    "DuplicateIvError",
    "GrantRow",
    "ManagerStore",
    "OutboxKind",
    "OutboxRow",
    "PeerRow",
    "ServiceRow",
    "SignatureRow",
    "SignatureType",
    "StorageError",
    "StoreTransaction",
    "UnknownContractError",
    "UnknownCursorError",
    "create_engine",
    "migrate",
]

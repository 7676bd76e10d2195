"""The audit log as a chained log: its stream, its canonical form and its PostgreSQL lock.

One stream, ``CONTROLLER_AUDIT``: every entry of ``controller_audit`` in ``chain_seq`` order
(1, 2, 3...), assigned by :meth:`appliance.controller.store.ControllerStore.append_audit`
inside the transaction that stores the entry, after reading the head under a lock (SQLite's
``BEGIN IMMEDIATE``; on PostgreSQL a transaction-scoped advisory lock), so several workers and
several controllers sharing one database extend one chain one entry after the other. The
chain, checkpoints and verification are :mod:`appliance.txlog.chain`'s, with this
:data:`AUDIT` description.

The canonical form (docs/txlog.md, "The audit log"): an entry's hash is the lowercase
hexadecimal SHA-256 of the RFC 8785 (JCS) serialisation of ::

    {"v": 1, "seq": <chain_seq>, "prev": <hash of seq-1, or 64 zeros for seq 1>,
     "actor", "role", "action", "target", "outcome", "peer_address", "detail":
         <the stored text, null when absent>,
     "at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always six digits)}

The row's ``id`` is not part of it (the order is ``seq``). Checkpoints are signed like the
transaction log's, with ``"type": "sluis-audit-checkpoint"`` and ``"stream":
"CONTROLLER_AUDIT"``.
"""

from __future__ import annotations

from appliance.controller import schema
from appliance.txlog.chain import Log

STREAM = "CONTROLLER_AUDIT"
FIELDS = ("actor", "role", "action", "target", "outcome", "peer_address", "detail")

AUDIT = Log(
    name="audit log",
    records=schema.audit,
    checkpoints=schema.audit_checkpoints,
    stream_column=None,
    streams=(STREAM,),
    fields=FIELDS,
    moment="at",
    # "sluis-a" + 1: neither the transaction log's locks nor the migrations'.
    locks={STREAM: 0x736C_7569_732D_6101},
    checkpoint_type="sluis-audit-checkpoint",
)

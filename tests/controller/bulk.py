"""Many contracts at once: copies of a stored contract written straight into the Manager's
tables (for the listing tests and ``bench/controller_scale.py``).

Each copy has its own iv, creation time (one second older than the one before) and content
hash, the template's grants and its stored signatures; every ``pending_every``-th copy has
only Peer A's signature, so it waits for B's approval. The state columns are computed by the
store's own ``states.refresh``.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import sqlalchemy as sa
from apitest import hash_of
from contracttest import OIN_A
from controllertest import Env

from appliance.manager.storage import schema as t
from appliance.manager.storage.states import refresh

BATCH = 5000


def _rows(conn: sa.Connection, table: sa.Table, column: sa.Column[Any], value: str) -> list[Any]:
    return [dict(row._mapping) for row in conn.execute(sa.select(table).where(column == value))]


def add_copies(env: Env, template: str, start: int, count: int, *, pending_every: int = 6) -> None:
    """``count`` copies of contract ``template`` written straight into the Manager's tables."""
    engine = env.service.store.engine
    with engine.connect() as conn:
        contract = _rows(conn, t.contracts, t.contracts.c.content_hash, template)[0]
        grants = _rows(conn, t.grants, t.grants.c.contract_hash, template)
        peers = _rows(conn, t.contract_peers, t.contract_peers.c.contract_hash, template)
        signatures = _rows(conn, t.signatures, t.signatures.c.contract_hash, template)
    content = json.loads(contract["content_json"])
    for first in range(start, start + count, BATCH):
        batch: dict[str, list[dict[str, Any]]] = {"c": [], "g": [], "p": [], "s": []}
        for number in range(first, min(first + BATCH, start + count)):
            copied = copy.deepcopy(content)
            copied["iv"] = str(uuid.UUID(int=number + 1))
            copied["created_at"] = int(content["created_at"]) - number - 1
            digest = hash_of(copied)
            batch["c"].append(
                contract
                | {
                    "content_hash": digest,
                    "iv": copied["iv"],
                    "created_at": contract["created_at"].fromtimestamp(
                        copied["created_at"], contract["created_at"].tzinfo
                    ),
                    "content_json": json.dumps(copied, separators=(",", ":"), sort_keys=True),
                }
            )
            batch["g"].extend(g | {"contract_hash": digest} for g in grants)
            created_at = batch["c"][-1]["created_at"]
            batch["p"].extend(
                p | {"contract_hash": digest, "created_at": created_at} for p in peers
            )
            pending = number % pending_every == 0
            batch["s"].extend(
                {k: v for k, v in s.items() if k != "id"} | {"contract_hash": digest}
                for s in signatures
                if not pending or s["peer_id"] == OIN_A
            )
        with engine.begin() as conn:
            conn.execute(t.contracts.insert(), batch["c"])
            conn.execute(t.grants.insert(), batch["g"])
            conn.execute(t.contract_peers.insert(), batch["p"])
            conn.execute(t.signatures.insert(), batch["s"])
            # The state columns the store keeps, as the store computes them.
            refresh(conn, [row["content_hash"] for row in batch["c"]])


def copy_tables(source: sa.Engine, target: sa.Engine) -> None:
    """The Manager's contract tables (peers, certificates, contracts, grants, peers of
    contracts, signatures) of ``source`` into ``target``, a migrated empty store."""
    with source.connect() as read, target.begin() as write:
        for table in (t.peers, t.certificates, t.contracts, t.grants, t.contract_peers):
            rows = [dict(row._mapping) for row in read.execute(sa.select(table))]
            write.execute(table.insert(), rows)
        rows = [
            {k: v for k, v in row._mapping.items() if k != "id"}
            for row in read.execute(sa.select(t.signatures))
        ]
        write.execute(t.signatures.insert(), rows)

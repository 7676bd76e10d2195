"""The inway's records reach the durable log through the [txlog] configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.txlog.gateway import inway_writer, open_log
from appliance.txlog.record import new_transaction_id

BASE = """
[hsm]
token_label = "t"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/o.cnf"
"""

GRANT = "$1$3$" + "A" * 86


def test_inway_records_are_stored_durably(tmp_path: Path) -> None:
    path = tmp_path / "sluis.toml"
    path.write_text(BASE + f'\n[txlog]\ndatabase = "sqlite:///{tmp_path / "txlog.db"}"\n')
    config = load_config(path)
    writer = inway_writer(config)
    transaction = new_transaction_id()
    record = {
        "transaction_id": transaction,
        "direction": "DIRECTION_INCOMING",
        "grant_hash": GRANT,
        "source": {"type": "SOURCE_TYPE_SOURCE", "outway_peer_id": "00000001000000000001"},
        "destination": {
            "type": "DESTINATION_TYPE_DESTINATION",
            "service_peer_id": "00000001000000000002",
        },
        "service_name": "basisregistratie",
        "created_at": 1_790_000_000,
    }
    asyncio.run(writer.write(record))
    with open_log(config) as log:
        records, _ = log.query("00000001000000000001")
    assert [r.transaction_id for r in records] == [transaction]
    assert records[0].to_api()["service_name"] == "basisregistratie"


def test_without_a_txlog_section_there_is_no_writer(tmp_path: Path) -> None:
    path = tmp_path / "sluis.toml"
    path.write_text(BASE)
    with pytest.raises(ConfigurationError, match=r"no \[txlog\] section"):
        inway_writer(load_config(path))

"""The inway's records reach the durable log through the [txlog] configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.inway.logging import log_record
from appliance.inway.tokens import AccessToken
from appliance.txlog.errors import InvalidLogRecordError
from appliance.txlog.gateway import inway_writer, open_log
from appliance.txlog.record import LogRecord, new_transaction_id

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


def inway_record(transaction: str) -> dict[str, Any]:
    """An inway's record (logging.yaml ``logRecord``) as the inway hands it to its writer."""
    return {
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


def test_inway_records_are_stored_durably(tmp_path: Path) -> None:
    path = tmp_path / "sluis.toml"
    path.write_text(BASE + f'\n[txlog]\ndatabase = "sqlite:///{tmp_path / "txlog.db"}"\n')
    config = load_config(path)
    writer = inway_writer(config)
    transaction = new_transaction_id()
    record = inway_record(transaction)
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


def test_inway_records_keep_the_fraction_of_the_second(tmp_path: Path, store_url: str) -> None:
    """The inway's record goes to the durable log with its microseconds, as the outway's does
    (they were cut to whole seconds on the way); on SQLite and PostgreSQL."""
    path = tmp_path / "sluis.toml"
    path.write_text(BASE + f'\n[txlog]\ndatabase = "{store_url}"\n')
    config = load_config(path)
    token = AccessToken(
        grant_hash=GRANT,
        group_id="g",
        subject="00000001000000000001",
        issuer="00000001000000000002",
        service="basisregistratie",
        audience="https://inway.test:443",
        expires=1_790_000_300.0,
        not_before=1_789_999_000.0,
        certificate_thumbprint="x",
    )
    transaction = new_transaction_id()
    writer = inway_writer(config)
    asyncio.run(writer.write(log_record(token, transaction, now=1_790_000_000.123456)))
    with open_log(config) as log:
        (record,), _ = log.query("00000001000000000001")
    assert record.created_at == datetime(2026, 9, 21, 14, 13, 20, 123456, tzinfo=UTC)
    assert record.to_api()["created_at"] == 1_790_000_000  # the API: whole seconds


def test_a_fraction_of_the_second_from_another_manager_is_refused() -> None:
    data = {**inway_record(new_transaction_id()), "created_at": 1_790_000_000.5}
    with pytest.raises(InvalidLogRecordError):
        LogRecord.from_api(data)
    assert LogRecord.from_api(data, fractional_time=True).created_at.microsecond == 500_000

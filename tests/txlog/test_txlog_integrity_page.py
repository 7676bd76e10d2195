"""The controller's ``/integrity`` page (appliance.controller.integrity): the last verified
checkpoint of each stream of the transaction log and of the audit log, and a warning when
verification fails. Mounted here on a bare Falcon app (the page and its template) with the
controller's transaction reader and store; tests/controller/test_controller_web.py opens it in
the controller's own app, with its menu entry and access rule."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import falcon.asgi
import falcon.testing
import pytest
from txlogtest import (
    Capsys,
    SigningOrganisation,
    append_audit,
    recompute_after_change,
    records_at,
    run,
    tamper,
    write_all,
)

from appliance.cli.main import main
from appliance.config import SluisConfig, TxlogSettings
from appliance.controller.integrity import Integrity, IntegrityStatus
from appliance.controller.store import ControllerStore
from appliance.controller.transactions import TransactionReader
from appliance.txlog import Direction, TransactionLog


@dataclass
class FakeController:
    """What the page reads of the controller: its config, transaction reader and store."""

    config: SluisConfig
    transactions: TransactionReader
    auth: SimpleNamespace


@pytest.fixture
def audit_store(tmp_path: Path) -> Iterator[ControllerStore]:
    """The controller's store with two audit entries (chained, not yet signed)."""
    store = ControllerStore.open(f"sqlite:///{tmp_path / 'controller.db'}")
    append_audit(store, 2, at=datetime.now(UTC))  # fresh: not yet overdue for a checkpoint
    yield store
    store.close()


def page(config: SluisConfig, store: ControllerStore) -> falcon.testing.TestClient:
    reader = TransactionReader.open(config.txlog.database if config.txlog else None)
    controller = FakeController(config, reader, SimpleNamespace(store=store))
    app = falcon.asgi.App()
    app.add_route("/integrity", Integrity(controller, IntegrityStatus(controller, max_age=0)))  # type: ignore[arg-type]
    return falcon.testing.TestClient(app)


def test_the_page_shows_the_last_verified_checkpoint_and_warns(
    store_url: str,
    organisation: SigningOrganisation,
    capsys: Capsys,
    audit_store: ControllerStore,
) -> None:
    with TransactionLog.open(store_url) as log:
        items = records_at(20) + records_at(5, direction=Direction.INCOMING)
        assert run(write_all(log, items)) == [None] * 25
    config_file = organisation.with_txlog(store_url)
    assert main(["txlog", "checkpoint", "--config", str(config_file)]) == 0
    capsys.readouterr()
    config = SluisConfig(
        hsm=organisation.config.hsm,
        tls=organisation.config.tls,
        txlog=TxlogSettings(database=store_url),
    )
    client = page(config, audit_store)
    shown = client.simulate_get("/integrity")
    assert shown.status_code == 200
    assert "Verified: every stream matches its last signed checkpoint." in shown.text
    # The transaction log's two streams, and the audit log's one (its entries fresh).
    assert shown.text.count('class="integrity-ok"') == 3
    assert "<h2>Audit log</h2>" in shown.text
    assert "seq 20, signed" in shown.text
    assert "(manual)" in shown.text
    tamper(store_url, recompute_after_change)
    shown = client.simulate_get("/integrity")
    assert 'role="alert">Verification FAILED: transaction log not what' in shown.text
    assert shown.text.count('class="integrity-problem"') == 1
    assert "was changed" in shown.text


def test_without_a_log_the_page_says_so(
    organisation: SigningOrganisation, audit_store: ControllerStore
) -> None:
    config = SluisConfig(hsm=organisation.config.hsm, tls=organisation.config.tls)
    shown = page(config, audit_store).simulate_get("/integrity")
    assert shown.status_code == 200
    assert shown.text.count("no transaction log configured ([txlog])") == 1
    # Not a failure: the audit log is checked and verified.
    assert "Verified: every stream matches its last signed checkpoint." in shown.text
    assert shown.text.count('class="integrity-ok"') == 1


def test_a_broken_audit_log_is_warned_about(
    organisation: SigningOrganisation, audit_store: ControllerStore
) -> None:
    """The audit log's own checkpoint, then a changed entry: the page warns and names it."""
    config_file = organisation.root / "integrity-audit.toml"
    assert organisation.config.source is not None
    database = str(audit_store.engine.url)
    config_file.write_text(
        organisation.config.source.read_text() + f'\n[controller]\ndatabase = "{database}"\n'
    )
    assert main(["controller", "audit", "checkpoint", "--config", str(config_file)]) == 0
    config = SluisConfig(hsm=organisation.config.hsm, tls=organisation.config.tls)
    client = page(config, audit_store)
    shown = client.simulate_get("/integrity")
    assert "Verified: every stream matches its last signed checkpoint." in shown.text
    assert "seq 2, signed" in shown.text
    with audit_store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER controller_audit_no_update")
        connection.exec_driver_sql("UPDATE controller_audit SET actor = 'x' WHERE chain_seq = 2")
    shown = client.simulate_get("/integrity")
    assert 'role="alert">Verification FAILED: audit log not what' in shown.text
    assert "sluis controller audit verify --config" in shown.text
    assert shown.text.count('class="integrity-problem"') == 1
    assert "is not the one checkpoint 1" in shown.text

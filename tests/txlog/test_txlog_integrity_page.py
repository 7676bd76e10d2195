"""The controller's ``/integrity`` page (appliance.controller.integrity): the last verified
checkpoint of each stream, and a warning when verification fails. Mounted here on a bare
Falcon app (the page and its template); tests/controller/test_controller_web.py opens it in the
controller's own app, with its menu entry and access rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import falcon.asgi
import falcon.testing
from txlogtest import (
    Capsys,
    SigningOrganisation,
    recompute_after_change,
    records_at,
    run,
    tamper,
    write_all,
)

from appliance.cli.main import main
from appliance.config import SluisConfig, TxlogSettings
from appliance.controller.integrity import Integrity, IntegrityStatus
from appliance.txlog import Direction, TransactionLog


@dataclass
class FakeController:
    config: SluisConfig


def page(config: SluisConfig) -> falcon.testing.TestClient:
    controller = FakeController(config)
    app = falcon.asgi.App()
    app.add_route("/integrity", Integrity(controller, IntegrityStatus(controller, max_age=0)))  # type: ignore[arg-type]
    return falcon.testing.TestClient(app)


def test_the_page_shows_the_last_verified_checkpoint_and_warns(
    store_url: str, organisation: SigningOrganisation, capsys: Capsys, tmp_path: Path
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
    client = page(config)
    shown = client.simulate_get("/integrity")
    assert shown.status_code == 200
    assert "Verified: every stream matches its last signed checkpoint." in shown.text
    assert shown.text.count('class="integrity-ok"') == 2
    assert "seq 20, signed" in shown.text
    assert "(manual)" in shown.text
    tamper(store_url, recompute_after_change)
    shown = client.simulate_get("/integrity")
    assert 'role="alert">Verification FAILED' in shown.text
    assert shown.text.count('class="integrity-problem"') == 1
    assert "was changed" in shown.text


def test_without_a_log_the_page_says_so(organisation: SigningOrganisation) -> None:
    config = SluisConfig(hsm=organisation.config.hsm, tls=organisation.config.tls)
    shown = page(config).simulate_get("/integrity")
    assert shown.status_code == 200
    assert "no transaction log configured" in shown.text

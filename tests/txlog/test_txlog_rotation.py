"""``sluis pki install-cert`` signs a checkpoint (reason ``rotation``) of each stream of the
transaction log and the audit log with the key and certificate still live, before the swap;
when that cannot be done nothing is installed, unless ``--no-checkpoint``. A real SoftHSM
token and a renewal issued by the organisation's own demo CA."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from txlogtest import (
    Capsys,
    SigningOrganisation,
    append_audit,
    records_at,
    run,
    sql,
    tamper,
    write_all,
)

from appliance.cli.main import main
from appliance.controller.store import ControllerStore
from appliance.hsm.jws import SUPPORTED_ALGORITHMS, parse_compact
from appliance.pki.ca import DemoCA
from appliance.tls.peer import certificate_thumbprint
from appliance.txlog import TransactionLog, schema
from appliance.txlog.database import create_engine


def configured(organisation: SigningOrganisation, txlog: str, controller: str) -> Path:
    path = organisation.root / "rotation.toml"
    assert organisation.config.source is not None
    text = organisation.config.source.read_text(encoding="utf-8")
    path.write_text(
        f'{text}\n[txlog]\ndatabase = "{txlog}"\n\n[controller]\ndatabase = "{controller}"\n',
        encoding="utf-8",
    )
    return path


def renewed(organisation: SigningOrganisation, config: Path, out: Path) -> x509.Certificate:
    """A renewal of the live certificate (same key, same subject) by the organisation's CA."""
    live = x509.load_pem_x509_certificates(organisation.config.tls.certificate_chain.read_bytes())
    subject = live[0].subject
    name = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
    oin = subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
    fqdn = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    csr = out.with_suffix(".csr")
    argv = ["hsm", "csr", "--config", str(config), "--out", str(csr)]
    assert main([*argv, "--organisation", str(name), "--oin", str(oin), "--fqdn", str(fqdn)]) == 0
    ca = DemoCA.open(organisation.root.parent / "ca")
    certificate = ca.issue(csr.read_bytes())
    out.write_bytes(ca.chain_pem(certificate))
    return certificate


def checkpoints(url: str, table: sa.Table) -> list[dict[str, object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.id))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def live_link(organisation: SigningOrganisation) -> str:
    return os.readlink(organisation.config.tls.certificate_chain)


def test_install_cert_signs_both_logs_with_the_old_key_first(
    organisation: SigningOrganisation, tmp_path: Path, capsys: Capsys
) -> None:
    from appliance.controller import schema as controller_schema

    txlog = f"sqlite:///{tmp_path / 'txlog.db'}"
    audit = f"sqlite:///{tmp_path / 'controller.db'}"
    with TransactionLog.open(txlog) as log:
        assert run(write_all(log, records_at(3))) == [None] * 3
    store = ControllerStore.open(audit)
    append_audit(store, 2, at=datetime.now(UTC))  # fresh: not yet overdue for a checkpoint
    store.close()
    config = configured(organisation, txlog, audit)
    old_leaf = organisation.config.tls.certificate_chain.read_bytes()
    old = certificate_thumbprint(
        x509.load_pem_x509_certificate(old_leaf).public_bytes(Encoding.DER)
    )

    first = renewed(organisation, config, tmp_path / "first.pem")
    capsys.readouterr()
    argv = ["pki", "install-cert", "--config", str(config), "--no-tls-check"]
    assert main([*argv, "--chain", str(tmp_path / "first.pem")]) == 0
    out = capsys.readouterr().out
    assert "signed transaction log checkpoint 1" in out
    assert "signed audit log checkpoint 1" in out
    assert f"installed {first.serial_number:x}" in out
    (signed_txlog,) = checkpoints(txlog, schema.checkpoints)
    (signed_audit,) = checkpoints(audit, controller_schema.audit_checkpoints)
    assert (signed_txlog["reason"], signed_txlog["seq"]) == ("rotation", 3)
    assert (signed_audit["reason"], signed_audit["seq"]) == ("rotation", 2)
    for made in (signed_txlog, signed_audit):  # by the certificate live before the swap
        assert (
            parse_compact(str(made["jws"]), algorithms=SUPPORTED_ALGORITHMS).header["x5t#S256"]
            == old
        )
    # Both verify afterwards, the old certificate found in the archive.
    assert main(["txlog", "verify", "--config", str(config)]) == 0
    assert main(["controller", "audit", "verify", "--config", str(config)]) == 0
    capsys.readouterr()

    # A chain that cannot be vouched for: no checkpoint, so no swap...
    with TransactionLog.open(txlog) as log:
        assert run(write_all(log, records_at(2))) == [None] * 2
    tamper(txlog, sql("UPDATE txlog_records SET service_name = 'x' WHERE chain_seq = 4"))
    renewed(organisation, config, tmp_path / "second.pem")
    before = live_link(organisation)
    capsys.readouterr()
    assert main([*argv, "--chain", str(tmp_path / "second.pem")]) == 2
    error = capsys.readouterr().err
    assert "nothing installed: no rotation checkpoint" in error
    assert "the chain is broken since the last checkpoint" in error
    assert "--no-checkpoint" in error
    assert live_link(organisation) == before
    assert len(checkpoints(txlog, schema.checkpoints)) == 1
    # ... unless the operator says so.
    done = main([*argv, "--no-checkpoint", "--json", "--chain", str(tmp_path / "second.pem")])
    assert done == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert live_link(organisation) != before


def test_a_log_not_there_yet_is_not_an_error(
    organisation: SigningOrganisation, tmp_path: Path, capsys: Capsys
) -> None:
    """No database file, no table: nothing to vouch for (and no empty file made)."""
    config = configured(
        organisation, f"sqlite:///{tmp_path / 'none.db'}", f"sqlite:///{tmp_path / 'no.db'}"
    )
    from appliance.cli.txlog import rotation_checkpoints
    from appliance.config import load_config

    lines = rotation_checkpoints(load_config(config))
    assert lines == [
        "transaction log: nothing to sign (no txlog_records table yet)",
        "audit log: nothing to sign (no controller_audit table yet)",
    ]
    assert not (tmp_path / "none.db").exists()
    capsys.readouterr()


def test_a_re_key_switch_is_not_signed_here(
    organisation: SigningOrganisation,
    other_organisation: SigningOrganisation,
    tmp_path: Path,
) -> None:
    """The configured key is not the live certificate's (the re-key playbook names the new key
    before the new chain is live): said, not signed, and no error (the role's restart of the
    checkpoint service signs with the old key)."""
    from dataclasses import replace

    from appliance.cli.txlog import rotation_checkpoints
    from appliance.config import TxlogSettings

    txlog = f"sqlite:///{tmp_path / 'txlog.db'}"
    with TransactionLog.open(txlog) as log:
        assert run(write_all(log, records_at(2))) == [None] * 2
    config = replace(
        organisation.config, tls=other_organisation.config.tls, txlog=TxlogSettings(txlog)
    )
    assert rotation_checkpoints(config) == [
        "transaction log: not signed here: [hsm] key_label names another key than the live "
        "certificate's (a re-key switch)"
    ]
    assert checkpoints(txlog, schema.checkpoints) == []

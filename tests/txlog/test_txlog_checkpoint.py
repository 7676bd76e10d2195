"""Signed checkpoints: ``sluis txlog checkpoint`` signs each stream's head in the HSM (a real
SoftHSM token, a certificate from a demo CA), and ``sluis txlog verify`` holds the store and its
export to every checkpoint: a cut tail, a recomputed chain, a replaced checkpoint and one
signed with another key are each found, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding
from txlogtest import (
    IN,
    OUT,
    T0,
    Capsys,
    SigningOrganisation,
    edit,
    ids,
    only_problem,
    recompute_after_change,
    records_at,
    run,
    sql,
    tamper,
    verify,
    write_all,
)

from appliance.cli.main import main
from appliance.hsm.jws import sign_compact
from appliance.hsm.signer import Pkcs11Signer
from appliance.tls.peer import certificate_thumbprint
from appliance.txlog import Direction, TransactionLog, schema
from appliance.txlog.chain import record_hash
from appliance.txlog.checkpoint import (
    Certificates,
    Checkpointer,
    CheckpointError,
    organisation_certificates,
    payload,
)
from appliance.txlog.database import create_engine
from appliance.txlog.export import export_jsonl


def write(url: str, outgoing: int, incoming: int = 0) -> None:
    with TransactionLog.open(url) as log:
        items = records_at(outgoing) + records_at(incoming, direction=Direction.INCOMING)
        assert run(write_all(log, items)) == [None] * len(items)


def checkpoint(capsys: Capsys, config: Path, *argv: str) -> list[dict[str, Any]]:
    assert main(["txlog", "checkpoint", "--config", str(config), "--json", *argv]) == 0
    made: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return made


def checkpoints(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(schema.checkpoints).order_by(schema.checkpoints.c.id)
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


@pytest.fixture
def signed(
    store_url: str, organisation: SigningOrganisation, capsys: Capsys
) -> tuple[str, Path, dict[str, int]]:
    """20 outgoing and 5 incoming records with a checkpoint of each head; the config file and
    each stream's checkpoint id."""
    write(store_url, 20, 5)
    config = organisation.with_txlog(store_url)
    made = checkpoint(capsys, config)
    assert {(c["stream"], c["seq"], c["reason"]) for c in made} == {
        (OUT, 20, "manual"),
        (IN, 5, "manual"),
    }
    return store_url, config, {c["stream"]: c["checkpoint_id"] for c in made}


def test_a_signed_store_verifies_and_counts_its_checkpoints(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    url, config, made = signed
    code, report = verify(capsys, "--config", str(config))
    assert code == 0, report
    assert report["checkpoints"] == 2
    assert report["streams"][OUT]["last_checkpoint"]["seq"] == 20
    assert report["streams"][OUT]["last_checkpoint"]["checkpoint"] == made[OUT]
    # Nothing new: nothing signed again. New records: only their stream's head is signed.
    assert checkpoint(capsys, config) == []
    write(url, 3)
    (again,) = checkpoint(capsys, config, "--reason", "rotation")
    assert (again["stream"], again["seq"], again["reason"]) == (OUT, 23, "rotation")
    code, report = verify(capsys, "--config", str(config))
    assert code == 0
    assert report["streams"][OUT]["checkpoints"] == 2
    assert main(["txlog", "verify", "--config", str(config)]) == 0
    assert "last signed checkpoint at seq 23" in capsys.readouterr().out


def test_checkpoints_are_not_ignored_without_certificates(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    url, _, _ = signed
    code, report = verify(capsys, "--database", url)
    assert code == 1
    assert "2 signed checkpoint(s) not checked" in only_problem(report)["problem"]


def test_a_cut_tail_is_found_through_the_last_checkpoint(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    url, config, made = signed
    tamper(url, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq > 17", d=OUT))
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["checkpoint"]) == (OUT, 18, made[OUT])
    assert f"the tail was cut: checkpoint {made[OUT]} (signed " in problem["problem"]
    assert "is seq 20, the last record is seq 17" in problem["problem"]


def test_a_recomputed_chain_is_found_at_the_checkpoint(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    url, config, made = signed
    seqs = ids(url)

    tamper(url, recompute_after_change)
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["seq"], problem["log_id"]) == (20, seqs[20])
    assert f"not the record of checkpoint {made[OUT]} (signed" in problem["problem"]
    # And the appliance refuses to sign over it.
    write(url, 1)
    assert main(["txlog", "checkpoint", "--config", str(config)]) == 1
    assert "not signed" in capsys.readouterr().err


def _replace_jws(url: str, checkpoint_id: int, jws: str) -> None:
    tamper(
        url,
        lambda connection: connection.execute(
            sa.update(schema.checkpoints)
            .where(schema.checkpoints.c.id == checkpoint_id)
            .values(jws=jws)
        ),
    )


def _forged(
    url: str, made: dict[str, int], signer_of: SigningOrganisation, thumbprint: str | None
) -> str:
    """A checkpoint JWS over the stored fields, signed with ``signer_of``'s key, naming
    ``thumbprint`` (or its own certificate's)."""
    (row,) = [c for c in checkpoints(url) if c["id"] == made[OUT]]
    certificate = organisation_certificates(signer_of.config.tls.certificate_chain, None).all[0]
    own = certificate_thumbprint(certificate.public_bytes(Encoding.DER))
    body = payload(row["stream"], row["seq"], row["head"], row["signed_at"], row["reason"])
    with Pkcs11Signer(signer_of.config.hsm) as signer:
        return sign_compact(signer, body, {"x5t#S256": thumbprint or own})


def test_a_checkpoint_signed_with_another_key_is_found(
    signed: tuple[str, Path, dict[str, int]],
    other_organisation: SigningOrganisation,
    organisation: SigningOrganisation,
    capsys: Capsys,
) -> None:
    url, config, made = signed
    ours = organisation_certificates(organisation.config.tls.certificate_chain, None).all[0]
    thumbprint = certificate_thumbprint(ours.public_bytes(Encoding.DER))
    # Another key, claiming our certificate: the signature does not verify.
    _replace_jws(url, made[OUT], _forged(url, made, other_organisation, thumbprint))
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["checkpoint"]) == (OUT, 20, made[OUT])
    assert "the signature does not verify with certificate" in problem["problem"]
    # Another key with its own certificate: not one of ours.
    _replace_jws(url, made[OUT], _forged(url, made, other_organisation, None))
    code, report = verify(capsys, "--config", str(config))
    problem = only_problem(report)
    assert "not among the organisation's" in problem["problem"]
    # Nor does the appliance build on it.
    write(url, 1)
    assert main(["txlog", "checkpoint", "--config", str(config)]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_a_replaced_checkpoint_is_found(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    """Its columns changed (to vouch for a shorter stream), or another checkpoint's JWS in its
    place: what was signed is not what is stored."""
    url, config, made = signed
    seqs = ids(url)
    head_17 = record_hash({**_row(url, seqs[17])}, 17, _row(url, seqs[17])["chain_prev"])
    tamper(
        url,
        lambda connection: connection.execute(
            sa.update(schema.checkpoints)
            .where(schema.checkpoints.c.id == made[OUT])
            .values(seq=17, head=head_17)
        ),
    )
    tamper(url, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq > 17", d=OUT))
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["checkpoint"]) == (OUT, 17, made[OUT])
    assert (
        "the stored checkpoint is not what was signed (signed: DIRECTION_OUTGOING seq 20"
        in (problem["problem"])
    )
    (incoming,) = [c for c in checkpoints(url) if c["id"] == made[IN]]
    _replace_jws(url, made[OUT], incoming["jws"])
    code, report = verify(capsys, "--config", str(config))
    assert (
        "not what was signed (signed: DIRECTION_INCOMING seq 5" in only_problem(report)["problem"]
    )


def _row(url: str, log_id: int) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.select(schema.records).where(schema.records.c.id == log_id)
            ).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


def test_the_certificates_must_chain_to_a_root_given(
    signed: tuple[str, Path, dict[str, int]],
    organisation: SigningOrganisation,
    other_organisation: SigningOrganisation,
    capsys: Capsys,
    tmp_path: Path,
) -> None:
    url, _, _ = signed
    chain = str(organisation.config.tls.certificate_chain)
    for roots, words in (
        ([], "no root certificate"),
        (
            [other_organisation.config.tls.trust_anchors],
            "does not chain to the organisation's root",
        ),
        ([organisation.config.tls.trust_anchors], None),
    ):
        given = [arg for path in [chain, *roots] for arg in ("--certificates", str(path))]
        code, report = verify(capsys, "--database", url, *given)
        assert code == (0 if words is None else 1)
        if words is not None:  # each checkpoint, each stream
            assert [p["stream"] for p in report["problems"]] == [IN, OUT]
            assert all(words in p["problem"] for p in report["problems"])


# -- the export carries the checkpoints; the collector's copy is verified with them --------------


def test_the_export_carries_the_checkpoints(
    signed: tuple[str, Path, dict[str, int]],
    organisation: SigningOrganisation,
    capsys: Capsys,
    tmp_path: Path,
) -> None:
    url, config, made = signed
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    first = export_jsonl(url, out, state, settle_seconds=0)
    assert (first.exported, first.checkpoints) == (25, 2)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["checkpoint_id"] for line in lines[25:]] == sorted(made.values())
    assert export_jsonl(url, out, state, settle_seconds=0).checkpoints == 0  # not twice
    write(url, 2)
    checkpoint(capsys, config)
    again = export_jsonl(url, out, state, settle_seconds=0)
    assert (again.exported, again.checkpoints) == (2, 1)
    certificates = str(organisation.root / "certs.pem")
    Path(certificates).write_bytes(
        organisation_certificates(
            organisation.config.tls.certificate_chain, organisation.config.tls.trust_anchors
        ).pem()
    )
    code, report = verify(capsys, "--bundle", str(out), "--certificates", certificates)
    assert code == 0, report
    assert (report["records"], report["checkpoints"]) == (27, 3)
    # The collector's copy, its tail cut: found through the last checkpoint it holds.
    edit(
        out,
        lambda lines: [x for x in lines if not (x.get("direction") == OUT and x["chain_seq"] > 19)],
    )
    code, report = verify(capsys, "--bundle", str(out), "--certificates", certificates)
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"]) == (OUT, 20)
    assert "the tail was cut" in problem["problem"]


def test_the_export_cursor_survives_a_checkpoint_as_the_last_line(
    signed: tuple[str, Path, dict[str, int]], tmp_path: Path
) -> None:
    """The cursor files lost (a crash before they were written): the output file's last record
    and checkpoint lines say where to go on, nothing is written twice."""
    url, _, _ = signed
    out, state = tmp_path / "export.jsonl", tmp_path / "cursor"
    export_jsonl(url, out, state, settle_seconds=0)
    state.unlink()
    state.with_name("cursor.checkpoints").unlink()
    again = export_jsonl(url, out, state, settle_seconds=0)
    assert (again.exported, again.checkpoints) == (0, 0)
    assert len(out.read_text().splitlines()) == 27


def test_the_checkpointer_refuses_a_certificate_of_another_key(
    store_url: str, organisation: SigningOrganisation, other_organisation: SigningOrganisation
) -> None:
    theirs = organisation_certificates(other_organisation.config.tls.certificate_chain, None)
    engine = create_engine(store_url)
    try:
        with (
            Pkcs11Signer(organisation.config.hsm) as signer,
            pytest.raises(CheckpointError, match="does not belong to the signing key"),
        ):
            Checkpointer(engine, signer, theirs.all[0], Certificates(theirs.all))
    finally:
        engine.dispose()


# -- retention: a purge keeps the rest verifiable ---------------------------------------------


def test_a_purge_leaves_a_verifiable_rest_and_a_cut_without_its_checkpoint_fails(
    store_url: str, organisation: SigningOrganisation, capsys: Capsys
) -> None:
    write(store_url, 20, 5)  # created T0, T0 + 1 s, ...
    config = organisation.with_txlog(store_url)
    checkpoint(capsys, config)  # heads 20 and 5 signed, above the cuts
    seqs = ids(store_url)
    before = (T0 + timedelta(seconds=10)).isoformat()
    assert main(["txlog", "purge", "--config", str(config), "--before", before, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Outgoing seq 1..10 are older; incoming all are, but its head (seq 5) is kept.
    assert result["cuts"] == {OUT: 10, IN: 4}
    assert result["deleted"] == 14
    assert {(c["stream"], c["seq"], c["reason"]) for c in result["checkpoints"]} == {
        (OUT, 10, "purge"),
        (IN, 4, "purge"),
    }
    assert sorted(ids(store_url)) == list(range(11, 21))
    code, report = verify(capsys, "--config", str(config))
    assert code == 0, report
    assert report["streams"][OUT]["records"] == 10
    # Purging again at the same date: nothing more (the heads stay).
    assert main(["txlog", "purge", "--config", str(config), "--before", before]) == 0
    assert "deleted 0 record(s)" in capsys.readouterr().out
    # The cut's checkpoint gone: the first records are reported deleted.
    (cut,) = [c["checkpoint_id"] for c in result["checkpoints"] if c["stream"] == OUT]
    tamper(store_url, sql("DELETE FROM txlog_checkpoints WHERE id = :i", i=cut))
    code, report = verify(capsys, "--config", str(config))
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["log_id"]) == (OUT, 11, seqs[11])
    assert "seq 1..10 are missing (deleted)" in problem["problem"]


def test_a_purge_refuses_to_sign_over_a_broken_chain(
    store_url: str, organisation: SigningOrganisation, capsys: Capsys
) -> None:
    write(store_url, 20)
    config = organisation.with_txlog(store_url)
    tamper(
        store_url, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq = 3", d=OUT)
    )
    before = (T0 + timedelta(seconds=10)).isoformat()
    assert main(["txlog", "purge", "--config", str(config), "--before", before]) == 1
    assert "nothing purged" in capsys.readouterr().err
    assert len(ids(store_url)) == 19  # nothing deleted
    with pytest.raises(SystemExit) as exited:
        main(["txlog", "purge", "--config", str(config), "--before", "yesterday"])
    assert exited.value.code == 2
    assert "not an ISO 8601 date: 'yesterday'" in capsys.readouterr().err


# -- an auditor's bundle: verified with nothing else -------------------------------------------


def test_an_auditors_bundle_verifies_with_nothing_else(
    signed: tuple[str, Path, dict[str, int]],
    organisation: SigningOrganisation,
    other_organisation: SigningOrganisation,
    capsys: Capsys,
    tmp_path: Path,
) -> None:
    _, config, made = signed
    bundle = tmp_path / "audit.jsonl"
    assert main(["txlog", "export-bundle", "--config", str(config), "--output", str(bundle)]) == 0
    assert "25 record(s), 2 checkpoint(s)" in capsys.readouterr().out
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 0, report
    assert (report["records"], report["checkpoints"], report["roots_from"]) == (
        25,
        2,
        "the bundle",
    )
    ca_root = organisation.config.tls.trust_anchors.read_text()
    assert len(report["roots"]) == ca_root.count("BEGIN CERTIFICATE") == 1
    assert main(["txlog", "verify", "--bundle", str(bundle)]) == 0
    assert "compare that root with one known from elsewhere" in capsys.readouterr().out
    # The auditor's own root instead of the bundle's: the bundle's certificates must chain to
    # it (they do to ours, not to another one).
    for root, code_wanted in ((organisation, 0), (other_organisation, 1)):
        anchors = str(root.config.tls.trust_anchors)
        code, report = verify(capsys, "--bundle", str(bundle), "--certificates", anchors)
        assert code == code_wanted
        assert report["roots_from"] == "given"
    assert all("does not chain to the" in p["problem"] for p in report["problems"])
    # The tail cut in the bundle: found through the last checkpoint.
    edit(
        bundle,
        lambda lines: [
            x for x in lines if not (x.get("direction") == IN and x.get("chain_seq") == 5)
        ],
    )
    code, report = verify(capsys, "--bundle", str(bundle))
    assert code == 1
    problem = only_problem(report)
    assert (problem["stream"], problem["seq"], problem["checkpoint"]) == (IN, 5, made[IN])


# -- the integrity now (status: monitoring, the controller) ------------------------------------


def status(capsys: Capsys, config: Path, *argv: str) -> tuple[int, dict[str, dict[str, Any]]]:
    code = main(["txlog", "status", "--config", str(config), "--json", *argv])
    return code, {s["stream"]: s for s in json.loads(capsys.readouterr().out)}


def test_status_shows_the_last_checkpoint_and_warns(
    signed: tuple[str, Path, dict[str, int]], capsys: Capsys
) -> None:
    url, config, made = signed
    code, found = status(capsys, config)
    assert code == 0, found
    assert found[OUT]["checkpoint"]["checkpoint_id"] == made[OUT]
    assert (found[OUT]["head_seq"], found[OUT]["unsigned"], found[OUT]["problem"]) == (20, 0, None)
    assert main(["txlog", "status", "--config", str(config)]) == 0
    assert "last signed checkpoint" in capsys.readouterr().out
    # Records after it older than allowed (records_at writes them at T0, weeks ago): a problem.
    write(url, 2)
    code, found = status(capsys, config)
    assert (code, found[OUT]["unsigned"]) == (1, 2)
    assert "2 record(s) since 2026-11-01T12:00:00.000000Z not signed" in found[OUT]["problem"]
    checkpoint(capsys, config)
    assert status(capsys, config)[0] == 0
    # The signed record changed and the chain recomputed: found at the checkpoint.
    tamper(url, recompute_after_change)
    code, found = status(capsys, config)
    assert code == 1
    assert "is not the one checkpoint" in found[OUT]["problem"]
    assert found[IN]["problem"] is None


def test_status_finds_a_cut_tail_and_a_bad_checkpoint(
    signed: tuple[str, Path, dict[str, int]],
    other_organisation: SigningOrganisation,
    capsys: Capsys,
) -> None:
    url, config, made = signed
    tamper(url, sql("DELETE FROM txlog_records WHERE direction = :d AND chain_seq >= 5", d=IN))
    code, found = status(capsys, config)
    assert code == 1
    assert "the tail was cut" in found[IN]["problem"]
    _replace_jws(url, made[OUT], _forged(url, made, other_organisation, None))
    code, found = status(capsys, config)
    assert "does not verify" in found[OUT]["problem"]


def test_the_service_signs_once_more_when_stopped(
    store_url: str, organisation: SigningOrganisation, capsys: Capsys
) -> None:
    """``--interval``: SIGTERM (systemd stopping it) ends it with a ``shutdown`` checkpoint."""
    write(store_url, 4, 2)
    config = organisation.with_txlog(store_url)
    argv = [sys.executable, "-m", "appliance", "txlog", "checkpoint", "--config", str(config)]
    with subprocess.Popen(
        [*argv, "--interval", "600", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as service:
        assert service.stdout is not None
        assert "signing every 600 s" in service.stdout.readline()
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    made = json.loads(out)
    assert {(c["stream"], c["seq"], c["reason"]) for c in made} == {
        (OUT, 4, "shutdown"),
        (IN, 2, "shutdown"),
    }
    assert [c["reason"] for c in checkpoints(store_url)] == ["shutdown", "shutdown"]

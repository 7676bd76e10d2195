"""``sluis pki install-cert``, ``rollback-cert`` and ``expiry`` against a real token: what is
checked before the live link changes, the rollback after a failed TLS self-check, and the exit
status a renewal timer reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lifecycletest import live_serial, renew, sluis

from appliance.demo.group import Member
from appliance.hsm.certs import previous_link
from appliance.pki.ca import DemoCA

Group = tuple[DemoCA, dict[str, Member]]


def _links(member: Member) -> tuple[str, str | None]:
    live = member.config.tls.certificate_chain
    previous = previous_link(live)
    return os.readlink(live), os.readlink(previous) if previous.is_symlink() else None


def test_renew_install_and_roll_back(group: Group, tmp_path: Path) -> None:
    ca, members = group
    a = members["a"]
    old_target, _ = _links(a)
    old_serial = live_serial(a)
    renewed = renew(ca, a, tmp_path / "renewed.pem")

    done = sluis(a, "pki", "install-cert", "--chain", str(tmp_path / "renewed.pem"))
    assert done.returncode == 0, done.stderr
    assert "installed" in done.stdout
    new_target, previous = _links(a)
    assert live_serial(a) == renewed.serial_number
    assert previous == old_target
    assert new_target != old_target
    # The components' own check passes with the new chain and the same key in the token.
    check = sluis(a, "tls", "check")
    assert check.returncode == 0, check.stderr
    assert f"serial:          {renewed.serial_number:x}" in check.stdout
    assert "mutual handshake with itself" in check.stdout

    # Run again (a playbook re-run): nothing changes, the previous chain stays the way back.
    again_installed = sluis(
        a, "pki", "install-cert", "--chain", str(tmp_path / "renewed.pem"), "--json"
    )
    assert again_installed.returncode == 0, again_installed.stderr
    shown = json.loads(again_installed.stdout)
    assert shown["changed"] is False
    assert shown["serial"] == f"{renewed.serial_number:x}"
    assert shown["x5t#S256"] in check.stdout
    assert _links(a) == (new_target, previous)

    back = sluis(a, "pki", "rollback-cert")
    assert back.returncode == 0, back.stderr
    assert _links(a) == (old_target, new_target)
    assert live_serial(a) == old_serial
    # A second rollback undoes the first.
    again = sluis(a, "pki", "rollback-cert")
    assert again.returncode == 0, again.stderr
    assert _links(a) == (new_target, old_target)


def test_refused_chains_leave_the_live_link_alone(group: Group, tmp_path: Path) -> None:
    ca, members = group
    a, b = members["a"], members["b"]
    before = _links(a)

    # Another organisation's certificate: other PeerID, other key.
    foreign = sluis(a, "pki", "install-cert", "--chain", str(b.config.tls.certificate_chain))
    assert foreign.returncode == 2
    assert "another public key" in foreign.stderr or "names peer" in foreign.stderr

    # A chain the Group's trust anchors did not issue.
    other = DemoCA.create(tmp_path / "other-ca", name="Other", crl_base_url="http://127.0.0.1:1/x")
    csr = tmp_path / "a.csr"
    made = sluis(
        a, "hsm", "csr", "--organisation", "Organisation a", "--oin", a.oin, "--fqdn", a.fqdn,
        "--out", str(csr),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "other.pem").write_bytes(other.chain_pem(other.issue(csr.read_bytes())))
    untrusted = sluis(a, "pki", "install-cert", "--chain", str(tmp_path / "other.pem"))
    assert untrusted.returncode == 2
    assert "no trust anchor" in untrusted.stderr

    # A certificate revoked (and the appliance already has the CRL saying so).
    revoked = renew(ca, a, tmp_path / "revoked.pem")
    ca.revoke(revoked.serial_number)
    crls = a.config.tls.crls
    crls.write_bytes(ca.crl_bundle_path.read_bytes())
    refused = sluis(a, "pki", "install-cert", "--chain", str(tmp_path / "revoked.pem"))
    assert refused.returncode == 2
    assert "was revoked" in refused.stderr

    assert _links(a) == before


def test_a_failed_tls_self_check_rolls_back(group: Group, tmp_path: Path) -> None:
    """Re-key gone wrong: the certificate is for a new key in the token, but the key reference
    still names the old one. Every check before the swap passes; the TLS self-check cannot use
    key and certificate together, so the previous chain is live again."""
    ca, members = group
    a = members["a"]
    before = _links(a)
    generated = sluis(a, "hsm", "generate-key", "--key-label", "sluis-organisation-2")
    assert generated.returncode == 0, generated.stderr
    renew(ca, a, tmp_path / "rekeyed.pem", "--key-label", "sluis-organisation-2")

    done = sluis(
        a, "pki", "install-cert", "--chain", str(tmp_path / "rekeyed.pem"),
        "--key-label", "sluis-organisation-2",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert "TLS self-check" in done.stderr
    assert "previous chain is live again" in done.stderr
    assert _links(a) == before
    assert sluis(a, "tls", "check").returncode == 0


def test_expiry_exit_status(group: Group) -> None:
    _, members = group
    a = members["a"]
    quiet = sluis(a, "pki", "expiry", "--within-days", "30")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    # The organisation certificate runs a year: within 400 days it is due.
    due = sluis(a, "pki", "expiry", "--within-days", "400", "--json")
    assert due.returncode == 1
    report = json.loads(due.stdout)
    roles = {item["role"] for item in report["items"] if item["due"]}
    assert "organisation" in roles
    # The demo CRLs run 7 days: with a 8-day CRL horizon they are due too.
    crl = sluis(a, "pki", "expiry", "--within-days", "30", "--crl-within-hours", "192")
    assert crl.returncode == 1
    assert "DUE" in crl.stdout
    assert "crl" in crl.stdout

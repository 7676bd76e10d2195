"""Expiry watch in the controller: the live and the previous organisation certificate and every
CRL, with days and hours left and a *due* flag, in the API, on the certificates page and as a
warning line on the overview.

The certificates and CRLs are real ones of the demo CA (``appliance.pki``), laid out the way
``sluis pki install-cert`` does (an archive, the live link and its ``.previous``, with the same
helpers), and read by the controller (the real app, on Peer B's Manager service) on every
request. A stale CRL is one the demo CA published with its clock a week back: really signed, its
next update really in the past. The figures are checked against the certificates and CRLs the
test made.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from contracttest import OIN_B, Group
from controllertest import Env, controller_env
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import appliance.pki.ca
from appliance.config import ControllerSettings
from appliance.controller.certificates import CRL_WARN_HOURS, WARN_DAYS
from appliance.controller.roles import MATRIX, Permission, Role
from appliance.hsm.certs import ARCHIVE_DIR, archive_name, previous_link, swap_link, write_archive
from appliance.pki.ca import DemoCA
from appliance.tls.revocation import parse_bundle

FQDN = "b.sluis.test"


@dataclass
class Pki:
    """The demo CA and B's key (in software: tests only; production keeps it in the HSM)."""

    ca: DemoCA
    key: ec.EllipticCurvePrivateKey

    def issue(self, days: int) -> x509.Certificate:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dienst Registers"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, OIN_B),
                x509.NameAttribute(NameOID.COMMON_NAME, FQDN),
            ]
        )
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(FQDN)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return self.ca.issue(csr.public_bytes(serialization.Encoding.PEM), days=days)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("demo-ca")
    return Pki(
        DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl"),
        ec.generate_private_key(ec.SECP256R1()),
    )


def install(env: Env, pki: Pki, certificate: x509.Certificate) -> str:
    """Archive the chain and make it live, as ``sluis pki install-cert`` does; the archive
    name (the link's target below the certificate directory)."""
    live = env.controller.config.tls.certificate_chain
    name = archive_name(certificate)
    write_archive(live.parent / ARCHIVE_DIR, name, pki.ca.chain_pem(certificate))
    swap_link(live, f"{ARCHIVE_DIR}/{name}")
    return f"{ARCHIVE_DIR}/{name}"


def publish_crls(env: Env, pki: Pki, monkeypatch: pytest.MonkeyPatch, *, age: timedelta) -> None:
    """The demo CA publishes its CRLs as if it were ``age`` ago (the CRLs live 7 days), and the
    appliance's bundle is replaced by them."""
    then = datetime.now(UTC) - age
    with monkeypatch.context() as patch:
        patch.setattr(appliance.pki.ca, "_now", lambda: then)
        pki.ca.publish_crls()
    env.controller.config.tls.crls.write_bytes(pki.ca.crl_bundle_path.read_bytes())


@pytest.fixture(scope="module")
def env(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """B's controller whose ``[tls]`` files are the demo CA's."""
    with controller_env(group, crls, tmp_path_factory.mktemp("controller")) as env:
        tls = env.controller.config.tls
        tls.trust_anchors.write_bytes(pki.ca.trust_anchor_path.read_bytes())
        yield env


@pytest.fixture
def fresh(env: Env, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A renewal: a certificate of 20 days, then its successor of 200 days (live, the first
    one behind ``.previous``), and CRLs published now. Returns what the test made."""
    old, new = pki.issue(20), pki.issue(200)
    install(env, pki, old)
    target = install(env, pki, new)
    publish_crls(env, pki, monkeypatch, age=timedelta(0))
    return {"old": old, "new": new, "target": target}


def certificates(env: Env, role: Role = Role.AUDITOR) -> dict[str, Any]:
    result = env.client.simulate_get("/api/v1/certificates", **env.as_role(role))
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json
    return body


def page(env: Env, path: str) -> str:
    result = env.client.simulate_get(path, **env.as_role(Role.AUDITOR))
    assert result.status_code == 200, result.text
    return result.text


def text(html: str) -> str:
    """The page's text without tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def days_left(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds() / 86400


def test_live_and_previous_certificate_and_fresh_crls(env: Env, fresh: dict[str, Any]) -> None:
    report = certificates(env)
    old, new = fresh["old"], fresh["new"]

    live = report["organisation"]
    assert live["target"] == fresh["target"]
    leaf, intermediate = live["items"]
    assert leaf["serial_number"] == format(new.serial_number, "x")
    assert leaf["oin"] == OIN_B
    assert leaf["days_to_expiry"] == int(days_left(new.not_valid_after_utc)) in (199, 200)
    assert leaf["due"] is False
    assert intermediate["subject"].startswith("CN=Sluis Demo Private Services CA")
    assert intermediate["due"] is False

    previous = report["previous_organisation"]
    assert previous["path"] == str(previous_link(env.controller.config.tls.certificate_chain))
    assert previous["target"] == f"{ARCHIVE_DIR}/{archive_name(old)}"
    assert previous["items"][0]["serial_number"] == format(old.serial_number, "x")
    assert previous["items"][0]["days_to_expiry"] in (19, 20)
    # Within 30 days, but not in use: kept for a rollback, never due.
    assert previous["items"][0]["due"] is False

    published = parse_bundle(env.controller.config.tls.crls.read_bytes())
    crls = report["crls"]["items"]
    assert [c["issuer"] for c in crls] == [
        crl.issuer.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"}) for crl in published
    ]
    for shown, crl in zip(crls, published, strict=True):
        assert crl.next_update_utc is not None
        assert shown["this_update"] == crl.last_update_utc.isoformat().replace("+00:00", "Z")
        assert shown["next_update"] == crl.next_update_utc.isoformat().replace("+00:00", "Z")
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert shown["crl_number"] == format(number, "x")
        assert shown["hours_to_next_update"] in (7 * 24 - 1, 7 * 24)
        assert shown["stale"] is False
        assert shown["due"] is False
        assert shown["revoked_certificates"] == 0

    assert report["warn_days"] == WARN_DAYS == 30
    assert report["crl_warn_hours"] == CRL_WARN_HOURS == 24
    assert report["due"] == []
    assert report["problems"] == []
    assert "PRIVATE" not in str(report)

    html = page(env, "/certificates")
    assert "Nothing is due" in html
    assert "Previous organisation certificate chain" in html
    assert format(old.serial_number, "x") in html
    assert "Due:" not in text(html)
    assert 'id="certificates-due"' not in page(env, "/")


def test_a_certificate_within_the_warning_period_is_due(
    env: Env, pki: Pki, fresh: dict[str, Any]
) -> None:
    # 31 days: just outside the warning period.
    outside = pki.issue(WARN_DAYS + 1)
    install(env, pki, outside)
    report = certificates(env)
    assert report["organisation"]["items"][0]["days_to_expiry"] == WARN_DAYS
    assert report["organisation"]["items"][0]["due"] is False
    assert report["due"] == []

    # 20 days: due. The 31-day one is now the previous chain.
    soon = pki.issue(20)
    install(env, pki, soon)
    report = certificates(env)
    leaf = report["organisation"]["items"][0]
    assert leaf["serial_number"] == format(soon.serial_number, "x")
    assert leaf["due"] is True
    assert leaf["expired"] is False
    assert report["previous_organisation"]["items"][0]["serial_number"] == format(
        outside.serial_number, "x"
    )
    assert report["previous_organisation"]["items"][0]["due"] is False
    (due,) = report["due"]
    assert due["kind"] == "certificate"
    assert due["role"] == "organisation"
    assert due["serial"] == format(soon.serial_number, "x")
    assert due["name"] == leaf["subject"]
    assert due["days_left"] == int(days_left(soon.not_valid_after_utc)) == 19
    assert due["expired"] is False
    assert due["source"] == str(env.controller.config.tls.certificate_chain)

    certificates_page = text(page(env, "/certificates"))
    assert "Due now" in certificates_page
    assert "Due: renew" in certificates_page  # a word, not only a colour
    assert "19 days left" in certificates_page
    overview = text(page(env, "/"))
    assert "Due: 1 certificate expiring within 30 days or expired." in overview
    assert "CRL" not in overview


def test_stale_and_soon_due_crls_and_revoked_serials(
    env: Env, pki: Pki, fresh: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pki.ca.revoke(fresh["old"].serial_number, x509.ReasonFlags.superseded)

    # Published 6.5 days ago: the next update is 12 hours away.
    publish_crls(env, pki, monkeypatch, age=timedelta(days=6, hours=12))
    report = certificates(env)
    root, intermediate = report["crls"]["items"]
    assert intermediate["revoked_certificates"] == 1
    assert root["revoked_certificates"] == 0
    for crl in (root, intermediate):
        assert crl["hours_to_next_update"] in (11, 12)
        assert crl["days_to_next_update"] == 0
        assert crl["stale"] is False
        assert crl["due"] is True
    assert [(d["kind"], d["role"], d["hours_left"] in (11, 12)) for d in report["due"]] == [
        ("crl", "crl", True),
        ("crl", "crl", True),
    ]

    # Published 8 days ago: the next update was a day ago.
    publish_crls(env, pki, monkeypatch, age=timedelta(days=8))
    report = certificates(env)
    for crl in report["crls"]["items"]:
        assert crl["stale"] is True
        assert crl["due"] is True
        assert crl["hours_to_next_update"] in (-25, -24)
    assert report["crls"]["items"][1]["revoked_certificates"] == 1
    assert {d["name"] for d in report["due"]} == {c["issuer"] for c in report["crls"]["items"]}
    assert all(d["expired"] for d in report["due"])
    # The certificates are not due.
    assert not any(c["due"] for c in report["organisation"]["items"])

    certificates_page = text(page(env, "/certificates"))
    assert certificates_page.count("yes: handshakes fail") == 2
    assert certificates_page.count("Due: refresh") == 2
    assert "stale since" in certificates_page
    overview = text(page(env, "/"))
    assert "Due: 2 CRLs are stale or due within 24 hours." in overview
    assert "certificate expiring" not in overview


def test_an_unreadable_file_is_due(env: Env, fresh: dict[str, Any]) -> None:
    env.controller.config.tls.crls.write_text("not a CRL\n")
    report = certificates(env)
    assert report["crls"]["items"] == []
    assert report["crls"]["error"]
    (problem,) = report["problems"]
    assert problem.startswith("CRL bundle:")
    assert "1 certificate or CRL file cannot be read." in text(page(env, "/"))
    assert "Unreadable" in text(page(env, "/certificates"))


@pytest.mark.parametrize("role", list(Role))
def test_every_role_that_may_view_reads_the_figures(
    env: Env, pki: Pki, fresh: dict[str, Any], role: Role
) -> None:
    install(env, pki, pki.issue(10))
    may = Permission.VIEW in MATRIX[role]
    for kwargs in (env.as_role(role), {"headers": env.bearer(role)}):
        result = env.client.simulate_get("/api/v1/certificates", **kwargs)
        if may:
            assert result.status_code == 200, result.text
            assert [d["role"] for d in result.json["due"]] == ["organisation"]
        else:
            assert result.status_code == 403
            assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_FORBIDDEN"
    anonymous = env.client.simulate_get("/api/v1/certificates")
    assert anonymous.status_code == 401
    assert "due" not in anonymous.json


def test_the_controllers_own_server_certificate_is_watched_too(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = pki.issue(5)
    chain = tmp_path / "controller-server.pem"
    chain.write_bytes(pki.ca.chain_pem(server))
    settings = ControllerSettings(
        database=f"sqlite:///{tmp_path / 'controller.db'}",
        certificate_chain=str(chain),
        key_file=str(tmp_path / "controller-key.pem"),
    )
    (tmp_path / "env").mkdir()
    with controller_env(group, crls, tmp_path / "env", settings=settings) as env:
        env.controller.config.tls.trust_anchors.write_bytes(pki.ca.trust_anchor_path.read_bytes())
        install(env, pki, pki.issue(200))
        publish_crls(env, pki, monkeypatch, age=timedelta(0))
        report = certificates(env)
        assert report["controller_server"]["items"][0]["due"] is True
        (due,) = report["due"]
        assert due["role"] == "controller-organisation"
        assert due["serial"] == format(server.serial_number, "x")
        assert due["days_left"] == 4
        # Only the server certificate: the organisation's and the CRLs are not due.
        assert not any(c["due"] for c in report["organisation"]["items"])
        assert not any(c["due"] for c in report["crls"]["items"])
        assert report["previous_organisation"] is None


def test_the_previous_chain_is_in_use_while_a_component_presents_it(
    env: Env, fresh: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After install-cert the running components keep the chain they loaded until they
    reload: the page asks them (the health probes) instead of calling it "not in use"."""
    old = fresh["old"].fingerprint(hashes.SHA256()).hex()
    new = fresh["new"].fingerprint(hashes.SHA256()).hex()
    html = text(page(env, "/certificates"))
    assert "not in use" not in html
    assert "no probed component presents it now" in html
    assert "Still in use" not in html

    async def presented() -> list[dict[str, Any]]:
        return [
            {"name": "manager", "certificate_sha256": old},
            {"name": "inway", "certificate_sha256": new},
            {"name": "outway", "certificate_sha256": None},
        ]

    monkeypatch.setattr(env.controller.health, "check", presented)
    html = text(page(env, "/certificates"))
    assert "Still in use: the manager presents the previous chain" in html
    assert "Reload it ( systemctl reload ) to take the live chain" in html

"""Provision one organisation's appliance files from a demo CA, with the key in its token.

The steps are the ones a security officer performs on a real appliance (docs/keys.md):
generate the key in the HSM, make the CSR in the HSM, have the CA issue the certificate,
import it, write the key reference and the OpenSSL configuration. Only the CA step differs:
here the demo CA issues directly instead of a PKIoverheid TSP.

Layout of ``root`` (the same as /etc/sluis on an appliance)::

    sluis.toml            appliance configuration
    openssl.cnf           pkcs11 provider + NCSC TLS policy
    hsm.pin               user PIN, mode 0600 (the only secret; never a key)
    keys/organisation.key.pem   PEM URI naming the HSM key (no key material)
    certs/organisation.pem      live link to the current chain in certs/archive/
    trust/anchors.pem     the Group's trust anchors (demo root)
    crl/crls.pem          CRLs of the demo root and intermediate
    softhsm/              this organisation's own SoftHSM2 token store (its "HSM")
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from appliance.config import ManagerSettings, SluisConfig, TlsSettings, load_config
from appliance.hsm.certs import import_certificate
from appliance.hsm.csr import make_csr
from appliance.hsm.keyref import write_key_reference
from appliance.hsm.keys import KeyAlgorithm, generate_key
from appliance.hsm.pin import write_pin_file
from appliance.hsm.settings import SOFTHSM_MODULE, HsmSettings
from appliance.hsm.softhsm import init_softhsm_token
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.tls.openssl_conf import write_openssl_config


@dataclass(frozen=True)
class Organisation:
    identity: OrganisationIdentity
    token_label: str
    key_algorithm: KeyAlgorithm = "ec-p256"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def manager_text(manager: ManagerSettings) -> str:
    lines = ["[manager]"]
    for field in fields(manager):
        lines.append(f"{field.name} = {_toml(getattr(manager, field.name))}")
    return "\n".join(lines) + "\n"


def config_text(hsm: HsmSettings, tls: TlsSettings, manager: ManagerSettings | None = None) -> str:
    q = _toml

    return "\n".join(
        [
            "# Sluis appliance configuration (docs/configuration.md)",
            "[hsm]",
            f"module = {q(hsm.module)}",
            f"token_label = {q(hsm.token_label)}",
            f"key_label = {q(hsm.key_label)}",
            f"pin_file = {q(hsm.pin_file)}",
            f"login_lock = {q(hsm.login_lock)}",
            *([f"softhsm_conf = {q(hsm.softhsm_conf)}"] if hsm.softhsm_conf else []),
            "",
            "[tls]",
            f"certificate_chain = {q(tls.certificate_chain)}",
            f"key_reference = {q(tls.key_reference)}",
            f"trust_anchors = {q(tls.trust_anchors)}",
            f"crls = {q(tls.crls)}",
            f"openssl_conf = {q(tls.openssl_conf)}",
            "",
            *([manager_text(manager)] if manager else []),
        ]
    )


def install_trust(ca: DemoCA, root: Path) -> tuple[Path, Path]:
    """Copy the Group's trust anchors and the current CRL bundle into the appliance."""
    anchors, crls = root / "trust" / "anchors.pem", root / "crl" / "crls.pem"
    for src, dest in ((ca.trust_anchor_path, anchors), (ca.crl_bundle_path, crls)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    return anchors, crls


def write_softhsm_conf(root: Path) -> Path:
    """A SoftHSM2 configuration whose token store belongs to this organisation alone."""
    conf, tokens = root / "softhsm" / "softhsm2.conf", root / "softhsm" / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    return conf


def provision_organisation(
    ca: DemoCA,
    organisation: Organisation,
    root: Path,
    manager: ManagerSettings | None = None,
) -> SluisConfig:
    """Provision one organisation with its own SoftHSM2 instance (a real appliance has one HSM).

    SoftHSM reads its configuration once per process, so the token work happens in a fresh
    child process that sees only this organisation's token store.
    """
    root.mkdir(parents=True, exist_ok=True)
    softhsm_conf = write_softhsm_conf(root)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        config_path: Path = pool.apply(
            _provision_in_child, (ca.directory, organisation, root, softhsm_conf, manager)
        )
    return load_config(config_path)


def _provision_in_child(
    ca_dir: Path,
    organisation: Organisation,
    root: Path,
    softhsm_conf: Path,
    manager: ManagerSettings | None,
) -> Path:
    os.environ["SOFTHSM2_CONF"] = str(softhsm_conf)
    config = provision_with_token(
        DemoCA.open(ca_dir), organisation, root, softhsm_conf=softhsm_conf, manager=manager
    )
    assert config.source is not None
    return config.source


def provision_with_token(
    ca: DemoCA,
    organisation: Organisation,
    root: Path,
    *,
    module: Path = SOFTHSM_MODULE,
    login_lock: Path | None = None,
    init_token: bool = True,
    softhsm_conf: Path | None = None,
    manager: ManagerSettings | None = None,
) -> SluisConfig:
    """Create token, key, certificate and configuration for one organisation under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    pin_file = root / "hsm.pin"
    hsm = HsmSettings(
        token_label=organisation.token_label,
        module=module,
        pin_file=pin_file,
        login_lock=login_lock or root / "run" / "hsm.lock",
        softhsm_conf=softhsm_conf,
    )
    if init_token:
        user_pin = secrets.token_hex(8)
        write_pin_file(pin_file, user_pin)
        # The SO PIN is only needed to re-initialise a lost user PIN; a demo token never is.
        init_softhsm_token(
            organisation.token_label,
            secrets.token_hex(8),
            user_pin,
            module=module,
            login_lock=hsm.login_lock,
        )
    generate_key(hsm, organisation.key_algorithm)
    csr = make_csr(hsm, organisation.identity)
    certificate = ca.issue(csr)
    live_chain = import_certificate(hsm, ca.chain_pem(certificate), root / "certs")
    anchors, crls = install_trust(ca, root)
    tls = TlsSettings(
        certificate_chain=live_chain,
        key_reference=root / "keys" / "organisation.key.pem",
        trust_anchors=anchors,
        crls=crls,
        openssl_conf=root / "openssl.cnf",
    )
    write_key_reference(tls.key_reference, hsm.pkcs11_uri())
    write_openssl_config(tls.openssl_conf, hsm)
    config_path = root / "sluis.toml"
    config_path.write_text(config_text(hsm, tls, manager), encoding="utf-8")
    return load_config(config_path)

"""``sluis hsm ...`` through a parser built with appliance.cli.hsm.register()."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from appliance.cli import hsm as hsm_cli
from appliance.errors import ConfigurationError
from appliance.hsm.errors import KeyExistsError
from appliance.hsm.keyref import decode_key_reference
from appliance.hsm.pin import write_pin_file
from appliance.hsm.settings import HsmSettings

IssueChain = Callable[..., bytes]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluis")
    subparsers = parser.add_subparsers(dest="command", required=True)
    hsm_cli.register(subparsers)
    return parser


def run(*argv: str) -> int:
    args = _parser().parse_args(["hsm", *argv])
    result: int = args.func(args)
    return result


@pytest.fixture
def cli_env(
    tmp_path: Path, softhsm_env: object, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    pin_file = tmp_path / "user.pin"
    write_pin_file(pin_file, "cli-user-pin-4321")
    monkeypatch.setenv("SLUIS_HSM_SO_PIN", "cli-so-pin-1234")
    return pin_file, tmp_path / "hsm.lock"


def test_full_flow(
    cli_env: tuple[Path, Path],
    tmp_path: Path,
    issue_chain: IssueChain,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pin_file, lock = cli_env
    common = ["--token", "cli-flow", "--pin-file", str(pin_file), "--login-lock", str(lock)]

    assert run("init-token", *common) == 0
    assert run("generate-key", *common, "--algorithm", "ec-p384") == 0
    out = capsys.readouterr().out
    assert "generated ec-p384 key 'sluis-organisation'" in out
    assert "-----BEGIN PUBLIC KEY-----" in out
    with pytest.raises(KeyExistsError):
        run("generate-key", *common)

    csr_path = tmp_path / "out" / "organisation.csr"
    assert (
        run(
            "csr",
            *common,
            "--organisation",
            "Gemeente Proefstad",
            "--oin",
            "00000001234567890000",
            "--fqdn",
            "gw.proefstad.example.nl",
            "--fqdn",
            "inway.proefstad.example.nl",
            "--out",
            str(csr_path),
        )
        == 0
    )
    request = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert request.is_signature_valid
    assert request.subject.rfc4514_string() == (
        "CN=gw.proefstad.example.nl,2.5.4.5=00000001234567890000,O=Gemeente Proefstad,C=NL"
    )
    assert csr_path.stat().st_mode & 0o777 == 0o644

    chain_path = tmp_path / "chain.pem"
    chain_path.write_bytes(issue_chain(csr_path.read_bytes(), days=30))
    cert_dir = tmp_path / "certs"
    assert run("import-cert", *common, "--chain", str(chain_path), "--cert-dir", str(cert_dir)) == 0
    assert (cert_dir / "organisation.pem").read_bytes() == chain_path.read_bytes()

    capsys.readouterr()
    assert run("list", *common) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["CLASS", "LABEL", "ID", "ALGORITHM"]
    assert "DAYS" in table[0]
    cert_row = next(line for line in table if line.startswith("certificate"))
    assert " 29 " in cert_row or " 30 " in cert_row
    assert "serialNumber" in cert_row or "2.5.4.5=00000001234567890000" in cert_row
    private_row = next(line for line in table if line.startswith("private-key"))
    assert "sensitive,non-extractable" in private_row
    assert "ec-p384" in private_row

    # --json: the same facts, parseable.
    assert run("list", *common, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    private = next(o for o in listed if o["class"] == "private-key")
    assert private["algorithm"] == "ec-p384"
    assert private["sensitive"] is True
    assert private["extractable"] is False
    assert private["sign"] is True
    certificate = next(o for o in listed if o["class"] == "certificate")
    assert certificate["days_to_expiry"] in (29, 30)
    assert certificate["oin"] == "00000001234567890000"

    ref = tmp_path / "keys" / "organisation.key.pem"
    assert run("key-reference", *common, "--out", str(ref)) == 0
    assert decode_key_reference(ref.read_text()) == HsmSettings(token_label="cli-flow").pkcs11_uri()
    assert "cli-user-pin-4321" not in capsys.readouterr().out


def test_config_file_and_environment(
    cli_env: tuple[Path, Path],
    tmp_path: Path,
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pin_file, lock = cli_env
    so_pin_file = tmp_path / "so.pin"
    write_pin_file(so_pin_file, "cli-so-pin-5678")
    monkeypatch.delenv("SLUIS_HSM_SO_PIN")
    config = write_config(
        token_label="cli-config", key_label="from-config", pin_file=pin_file, login_lock=lock
    )
    assert run("init-token", "--config", str(config), "--so-pin-file", str(so_pin_file)) == 0
    assert run("generate-key", "--config", str(config)) == 0
    assert "'from-config'" in capsys.readouterr().out
    # A command-line option overrides the file.
    ref = tmp_path / "ref.pem"
    assert run("key-reference", "--config", str(config), "--key-label", "x", "--out", str(ref)) == 0
    assert "object=x;" in decode_key_reference(ref.read_text())
    assert run("key-reference", "--config", str(config), "--out", str(ref)) == 0
    assert "object=from-config" in decode_key_reference(ref.read_text())
    # Without --config the environment names the token.
    monkeypatch.setenv("SLUIS_HSM_TOKEN", "cli-config")
    monkeypatch.setenv("SLUIS_HSM_KEY_LABEL", "from-config")
    monkeypatch.setenv("SLUIS_HSM_PIN_FILE", str(pin_file))
    capsys.readouterr()
    assert run("list", "--login-lock", str(lock)) == 0
    assert "from-config" in capsys.readouterr().out


def test_no_token_is_a_configuration_error(cli_env: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigurationError, match="--token"):
        run("list")


def test_no_pin_option_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--pin", "--so-pin", "--user-pin"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["hsm", "init-token", "--token", "t", option, "1234"])
    capsys.readouterr()


def test_missing_so_pin(cli_env: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pin_file, _lock = cli_env
    monkeypatch.delenv("SLUIS_HSM_SO_PIN")
    with pytest.raises(ConfigurationError, match="SLUIS_HSM_SO_PIN"):
        run("init-token", "--token", "no-so-pin", "--pin-file", str(pin_file))

"""``sluis pki`` end to end, through the parser that ``register`` builds."""

from __future__ import annotations

import argparse
import http.client
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from pkitest import CRL_BASE, FQDN, build_csr

from appliance.cli import main as cli_main
from appliance.cli import pki as pki_cli
from appliance.errors import SluisError
from appliance.pki.ca import DemoCA
from appliance.pki.publish import serve_public


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sluis")
    pki_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pki", *argv])
    result: int = args.func(args)
    return result


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    argv = ["init", "--ca-dir", str(directory), "--name", "Proef", "--crl-base-url", CRL_BASE]
    assert run(*argv) == 0
    return directory


def _issue(ca_dir: Path, tmp_path: Path, name: str = "org") -> x509.Certificate:
    csr = tmp_path / f"{name}.csr"
    csr.write_bytes(build_csr())
    out = tmp_path / f"{name}.chain.pem"
    assert run("issue", "--ca-dir", str(ca_dir), "--csr", str(csr), "--out", str(out)) == 0
    leaf, intermediate = x509.load_pem_x509_certificates(out.read_bytes())
    assert intermediate == DemoCA.open(ca_dir).intermediate_certificate
    return leaf


def test_init_creates_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "ca"
    assert run("init", "--ca-dir", str(directory), "--crl-base-url", CRL_BASE) == 0
    assert "public/root.pem" in capsys.readouterr().out
    ca = DemoCA.open(directory)
    assert ca.root_certificate.subject.rfc4514_string() == (
        "CN=Sluis Demo Root CA,O=Sluis Demo,C=NL"
    )
    for key in (directory / "private").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_init_twice_is_refused(ca_dir: Path) -> None:
    with pytest.raises(SluisError, match="already holds a CA"):
        run("init", "--ca-dir", str(ca_dir), "--crl-base-url", CRL_BASE)


def test_issue_list_revoke_list(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = _issue(ca_dir, tmp_path)
    serial_hex = format(leaf.serial_number, "x")
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == FQDN
    capsys.readouterr()

    assert run("list", "--ca-dir", str(ca_dir)) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(serial_hex)
    assert "valid" in line
    assert f"CN={FQDN}" in line

    # Accept the colon-separated upper-case form that openssl prints.
    pretty = ":".join(f"{b:02X}" for b in leaf.serial_number.to_bytes(20, "big"))
    assert run("revoke", "--ca-dir", str(ca_dir), "--serial", pretty, "--reason", "superseded") == 0
    crl = x509.load_der_x509_crl((ca_dir / "public" / "intermediate.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    capsys.readouterr()

    assert run("list", "--ca-dir", str(ca_dir)) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "revoked (superseded)" in line


def test_issue_days(ca_dir: Path, tmp_path: Path) -> None:
    csr = tmp_path / "org.csr"
    csr.write_bytes(build_csr())
    out = tmp_path / "chain.pem"
    run("issue", "--ca-dir", str(ca_dir), "--csr", str(csr), "--out", str(out), "--days", "30")
    leaf = x509.load_pem_x509_certificates(out.read_bytes())[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30


def test_issue_missing_csr_is_an_operator_error(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SluisError, match="cannot read CSR"):
        run(
            "issue",
            "--ca-dir",
            str(ca_dir),
            "--csr",
            str(tmp_path / "nope.csr"),
            "--out",
            str(tmp_path / "out.pem"),
        )


def test_revoke_unknown_serial(ca_dir: Path) -> None:
    with pytest.raises(SluisError, match="no certificate with serial beef"):
        run("revoke", "--ca-dir", str(ca_dir), "--serial", "0xBEEF")


def test_revoke_rejects_bad_serial_and_reason(ca_dir: Path) -> None:
    with pytest.raises(SystemExit):
        run("revoke", "--ca-dir", str(ca_dir), "--serial", "xyz")
    with pytest.raises(SystemExit):
        run("revoke", "--ca-dir", str(ca_dir), "--serial", "01", "--reason", "bored")


def test_crl_republishes(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("crl", "--ca-dir", str(ca_dir)) == 0
    assert "intermediate.crl" in capsys.readouterr().out
    crl = x509.load_der_x509_crl((ca_dir / "public" / "root.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_commands_need_an_existing_ca(tmp_path: Path) -> None:
    with pytest.raises(SluisError, match="holds no demo CA"):
        run("list", "--ca-dir", str(tmp_path))


def test_fetch_crl(ca_dir: Path, tmp_path: Path) -> None:
    server = serve_public(ca_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        public = ca_dir / "public"
        out = tmp_path / "crls.pem"
        argv = ["fetch-crl", "--out", str(out)]
        argv += ["--url", f"{base}/root.crl", "--issuer", str(public / "root.pem")]
        argv += ["--url", f"{base}/intermediate.crl", "--issuer", str(public / "intermediate.pem")]
        assert run(*argv) == 0
        assert out.read_bytes().count(b"-----BEGIN X509 CRL-----") == 2

        out.write_bytes(b"old\n")
        with pytest.raises(SluisError, match=r"gone\.crl"):
            run(
                "fetch-crl",
                "--out",
                str(out),
                "--url",
                f"{base}/gone.crl",
                "--issuer",
                str(public / "root.pem"),
            )
        assert out.read_bytes() == b"old\n"

        with pytest.raises(SluisError, match="one --issuer per --url"):
            run(
                "fetch-crl",
                "--out",
                str(out),
                "--url",
                f"{base}/root.crl",
                "--url",
                "x",
                "--issuer",
                str(public / "root.pem"),
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8088", ("127.0.0.1", 8088)),
        ("[::1]:0", ("::1", 0)),
        ("192.0.2.1:80", ("192.0.2.1", 80)),
    ],
)
def test_bind_parsing(text: str, expected: tuple[str, int]) -> None:
    assert pki_cli._bind(text) == expected


@pytest.mark.parametrize("text", ["8088", ":8088", "host:port", "host:70000"])
def test_bind_parsing_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        pki_cli._bind(text)


def test_main_reports_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the pki group: the other command modules are developed separately.
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("pki",))
    assert cli_main.main(["pki", "list", "--ca-dir", str(tmp_path)]) == 2
    assert "holds no demo CA" in capsys.readouterr().err


_SERVE_SCRIPT = """
import sys
from appliance.cli import main
main.COMMAND_MODULES = ("pki",)
sys.exit(main.main(sys.argv[1:]))
"""


def test_serve_command(ca_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SERVE_SCRIPT,
            "pki",
            "serve",
            "--ca-dir",
            str(ca_dir),
            "--bind",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        conn = http.client.HTTPConnection(url.removeprefix("http://").rstrip("/"), timeout=5)
        try:
            conn.request("GET", "/root.crl")
            response = conn.getresponse()
            assert response.getheader("Content-Type") == "application/pkix-crl"
            assert response.read() == (ca_dir / "public" / "root.crl").read_bytes()
        finally:
            conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""An independent scanner (testssl.sh) confirms the NCSC policy on a Sluis listener."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.demo.processes import Component

AEAD = ("GCM", "CHACHA20", "POLY1305")
GOOD_CURVES = {"prime256v1", "secp384r1", "X25519"}


@pytest.mark.slow
def test_testssl_sees_only_tls12_13_aead_and_good_curves(
    server_b: Component, tmp_path: Path
) -> None:
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    assert testssl, "testssl.sh is installed by scripts/setup.sh"
    report = tmp_path / "testssl.json"
    subprocess.run(
        [
            testssl,
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "-p",
            "-E",
            "-f",
            "--jsonfile-pretty",
            str(report),
            f"{server_b.host}:{server_b.port}",
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    scan = json.loads(report.read_text())["scanResult"][0]
    offered = {f["id"] for f in scan["protocols"] if f["finding"].startswith("offered")}
    assert offered == {"TLS1_2", "TLS1_3"}

    ciphers = [f["finding"] for f in scan["cipherTests"]]
    assert ciphers, "the scan found no cipher at all"
    for line in ciphers:
        assert any(mark in line for mark in AEAD), f"not an AEAD cipher: {line}"
        assert "ECDH" in line, f"not an ECDHE key exchange: {line}"

    (curves,) = [f["finding"] for f in scan["pfs"] if f["id"] == "PFS_ECDHE_curves"]
    assert set(curves.split()) <= GOOD_CURVES, curves
    assert "X25519" in curves.split()

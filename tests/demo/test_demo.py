"""The README's main command: the demo Group runs end to end on the embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sluis_demo_runs_the_group_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "the publication is valid at both ends" in out
    assert "the connection contract is valid at both ends" in out
    assert "obtained an access token" in out
    assert "sub=00000001001234567001 iss=00000001001234567002 svc=basisregistratie" in out
    assert "/basisregistratie/persons/42 -> 200" in out
    assert '"authorization": true' in out
    assert "gemeente log (outgoing)" in out
    assert "registers log (incoming)" in out
    assert (
        "private keys stored as files: ca/private/intermediate.key.pem, ca/private/root.key.pem"
        in out
    )

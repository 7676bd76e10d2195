"""A fresh install of the project (what scripts/setup.sh does on a new machine, and so the
demo's first run) prints no warning block of the build backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_an_editable_install_is_quiet(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # --upgrade-deps: a current pip, which shows what the build backend says (pip 23 did not).
    subprocess.run(
        [sys.executable, "-m", "venv", "--upgrade-deps", str(venv)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "BuildBackendWarning" not in said, said
    assert "Please be careful" not in said, said
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import appliance; print(appliance.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    assert imported.stdout.strip() == str(ROOT / "appliance" / "__init__.py")

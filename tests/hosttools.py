"""Host tools a test needs (scripts/host-requirements lists each with its Debian package).

A test whose tool is missing is skipped when pytest runs on its own (a developer's partial
machine), and fails in the test command (``SLUIS_REQUIRE_HOST_TOOLS=1``, set by
scripts/test.sh): there a skip would hide a missing install step, the defect that only a
fresh machine shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

MANIFEST = Path(__file__).resolve().parent.parent / "scripts" / "host-requirements"


def requirements() -> list[tuple[str, str, str]]:
    """The manifest's (group, package, need) lines."""
    entries = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3:
            entries.append((fields[0], fields[1], fields[2]))
    return entries


def package_of(need: str) -> tuple[str, str]:
    """The package scripts/host-requirements names for ``need`` (a command or a path), and
    the setup script that installs it."""
    for group, package, listed in requirements():
        if listed == need:
            script = "setup-molecule.sh" if group == "molecule" else "setup.sh"
            return package.split("@", 1)[0], script
    raise LookupError(f"{need} is not in {MANIFEST}: add it with the package that brings it")


def present(need: str) -> bool:
    return Path(need).exists() if need.startswith("/") else shutil.which(need) is not None


def require(need: str) -> None:
    """Skip (or, under the test command, fail) unless ``need`` is on this host."""
    package, script = package_of(need)  # also for a present tool: the manifest must list it
    if present(need):
        return
    message = f"{need} is missing: apt-get install {package} (scripts/{script} installs it)"
    if os.environ.get("SLUIS_REQUIRE_HOST_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)

"""scripts/host-requirements: what the setup scripts install and scripts/preflight.sh checks.

The manifest is only worth something if each line is true: the package named really brings
the command or file (so a fresh machine that installs it gets it), and the pre-flight check
really stops a run and names the package when something is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hosttools import MANIFEST, require, requirements

PREFLIGHT = MANIFEST.parent / "preflight.sh"


def _owners(path: str) -> set[str]:
    """The packages dpkg says own ``path`` (empty when none does)."""
    done = subprocess.run(
        ["dpkg-query", "-S", path], capture_output=True, text=True, check=False, timeout=30
    )
    owners: set[str] = set()
    for line in done.stdout.splitlines():
        if line.startswith("diversion by"):
            continue
        names, _, owned = line.rpartition(": ")
        if owned == path:
            owners.update(name.strip().split(":")[0] for name in names.split(","))
    return owners


@pytest.mark.parametrize(
    ("package", "need"), [(package, need) for _group, package, need in requirements()]
)
def test_the_package_named_owns_the_need(package: str, need: str) -> None:
    """No line may rely on a metapackage, a Recommends or a tool a machine happens to have."""
    require(need)
    path = need if need.startswith("/") else shutil.which(need)
    assert path is not None
    # A command may be a link (Debian's alternatives: iptables -> xtables-nft-multi), and
    # with merged /usr a package may own /bin/ss that PATH finds as /usr/bin/ss.
    linked = [path, os.path.realpath(path)]
    candidates = linked + [p.removeprefix("/usr") for p in linked if p.startswith("/usr/")]
    owners = set().union(*(_owners(candidate) for candidate in candidates))
    assert package.split("@", 1)[0] in owners, f"{need} ({candidates}) is owned by {owners}"


def _preflight(tmp_path: Path, manifest: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "host-requirements"
    path.write_text(manifest)
    return subprocess.run(
        [str(PREFLIGHT), *args],
        env={**os.environ, "SLUIS_HOST_REQUIREMENTS": str(path)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


MANIFEST_WITH_GAPS = """\
# a comment line, and a line's comment below
base     sh                         sh                    present everywhere  # a comment
base     sluis-absent-tool          sluis-absent-tool     a command nobody has
base     sluis-provider@bookworm-backports /nonexistent/sluis/provider.so   a file from backports
molecule sluis-molecule-only        /nonexistent/sluis/molecule              only for the scenarios
"""


def test_preflight_names_each_missing_package_and_fails(tmp_path: Path) -> None:
    done = _preflight(tmp_path, MANIFEST_WITH_GAPS, "base")
    assert done.returncode == 1
    assert "missing sluis-absent-tool: apt-get install sluis-absent-tool" in done.stderr
    assert (
        "missing /nonexistent/sluis/provider.so: apt-get install -t bookworm-backports "
        "sluis-provider" in done.stderr
    )
    assert "sluis-molecule-only" not in done.stderr  # not the group asked for
    assert "2 of 3 host requirements missing" in done.stderr


def test_preflight_passes_when_everything_is_there(tmp_path: Path) -> None:
    done = _preflight(tmp_path, "base sh sh\nbase coreutils /bin/ls\n", "base")
    assert done.returncode == 0, done.stderr
    assert "2 host requirements present" in done.stdout


def test_preflight_lists_the_packages_the_setup_scripts_install(tmp_path: Path) -> None:
    packages = _preflight(tmp_path, MANIFEST_WITH_GAPS, "--packages", "base")
    backports = _preflight(tmp_path, MANIFEST_WITH_GAPS, "--backports", "base")
    molecule = _preflight(tmp_path, MANIFEST_WITH_GAPS, "--packages", "molecule")
    assert packages.stdout.split() == ["sh", "sluis-absent-tool"]
    assert backports.stdout.split() == ["sluis-provider"]
    assert molecule.stdout.split() == ["sluis-molecule-only"]


def test_the_setup_scripts_install_only_what_the_manifest_lists() -> None:
    """A package added to a setup script by hand would not be checked by the pre-flight."""
    for script in ("setup.sh", "setup-molecule.sh"):
        text = (MANIFEST.parent / script).read_text()
        assert "preflight.sh --packages" in text, script
        for line in text.splitlines():
            if "apt-get" in line and " install " in line:
                assert "$missing" in line or '"${missing[@]}"' in line, (script, line)

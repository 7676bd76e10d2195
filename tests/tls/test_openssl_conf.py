"""Where pkcs11-provider is: derived per machine (amd64, arm64), tested on fake layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ConfigurationError
from appliance.hsm.settings import HsmSettings
from appliance.tls.openssl_conf import (
    find_pkcs11_provider,
    libcrypto_modules_dir,
    pkcs11_provider_path,
    render_openssl_config,
)


def _install(root: Path, triplet: str) -> Path:
    module = root / "usr/lib" / triplet / "ossl-modules/pkcs11.so"
    module.parent.mkdir(parents=True)
    module.write_bytes(b"\x7fELF")
    return module


@pytest.mark.parametrize(
    ("machine", "triplet"),
    [("x86_64", "x86_64-linux-gnu"), ("aarch64", "aarch64-linux-gnu")],
)
def test_the_machine_names_the_debian_directory(tmp_path: Path, machine: str, triplet: str) -> None:
    # Both layouts on one disk: the machine decides, not the first directory found.
    _install(tmp_path, "x86_64-linux-gnu")
    _install(tmp_path, "aarch64-linux-gnu")
    found = find_pkcs11_provider(root=tmp_path, modules_dir=None, multiarch=None, machine=machine)
    assert found == tmp_path / "usr/lib" / triplet / "ossl-modules/pkcs11.so"


def test_the_interpreters_multiarch_triplet_comes_before_the_machine(tmp_path: Path) -> None:
    # An arm64 userland on an x86_64 kernel name (e.g. under qemu-user) follows the userland.
    module = _install(tmp_path, "aarch64-linux-gnu")
    _install(tmp_path, "x86_64-linux-gnu")
    found = find_pkcs11_provider(
        root=tmp_path, modules_dir=None, multiarch="aarch64-linux-gnu", machine="x86_64"
    )
    assert found == module


def test_libcryptos_own_modules_directory_comes_first(tmp_path: Path) -> None:
    _install(tmp_path, "aarch64-linux-gnu")
    own = tmp_path / "opt/openssl/lib/ossl-modules/pkcs11.so"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"\x7fELF")
    found = find_pkcs11_provider(
        root=tmp_path,
        modules_dir=Path("/opt/openssl/lib/ossl-modules"),
        multiarch=None,
        machine="aarch64",
    )
    assert found == own


def test_a_missing_provider_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        find_pkcs11_provider(root=tmp_path, modules_dir=None, multiarch=None, machine="aarch64")
    message = str(caught.value)
    assert f"{tmp_path}/usr/lib/aarch64-linux-gnu/ossl-modules/pkcs11.so" in message
    assert "pkcs11-provider" in message


def test_this_machine_finds_the_provider_libcrypto_names() -> None:
    modules_dir = libcrypto_modules_dir()
    assert modules_dir is not None
    assert modules_dir.is_dir()
    assert pkcs11_provider_path() == modules_dir / "pkcs11.so"


def test_the_configuration_loads_the_derived_provider(tmp_path: Path) -> None:
    module = _install(tmp_path, "aarch64-linux-gnu")
    hsm = HsmSettings(token_label="t", pin_file=Path("/etc/sluis/hsm.pin"))
    text = render_openssl_config(hsm, provider=module)
    assert f"module = {module}\n" in text
    assert "pkcs11-module-token-pin = file:/etc/sluis/hsm.pin\n" in text
    assert f"module = {pkcs11_provider_path()}\n" in render_openssl_config(hsm)

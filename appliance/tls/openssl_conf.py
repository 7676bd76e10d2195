"""Write the OpenSSL configuration every Sluis process runs with (``OPENSSL_CONF``).

It does two things Python's ``ssl`` module cannot do by itself:
- loads the pkcs11 provider next to the default one, so that a PEM URI key file makes
  ``load_cert_chain`` sign inside the HSM;
- restricts groups, signature algorithms and protocol versions for every SSL_CTX (the NCSC
  policy in ``appliance.tls.policy``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import sysconfig
from pathlib import Path

from appliance.errors import ConfigurationError
from appliance.hsm.settings import HsmSettings
from appliance.tls import policy

PROVIDER_FILE = "pkcs11.so"
# Debian's multiarch triplets by kernel machine name (``uname -m``), for when the running
# libcrypto cannot tell its modules directory.
_TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "armv7l": "arm-linux-gnueabihf",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
}
_OPENSSL_MODULES_DIR = 8  # OpenSSL_version() type OPENSSL_MODULES_DIR (OpenSSL 3)


def libcrypto_modules_dir() -> Path | None:
    """The modules directory of the libcrypto this process runs with (``openssl version -m``)."""
    name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
    try:
        libcrypto = ctypes.CDLL(name)
        libcrypto.OpenSSL_version.restype = ctypes.c_char_p
        text = libcrypto.OpenSSL_version(_OPENSSL_MODULES_DIR) or b""
    except (OSError, AttributeError):
        return None
    found = re.fullmatch(r'MODULESDIR: "(.+)"', text.decode("utf-8", "replace"))
    return Path(found.group(1)) if found else None


def pkcs11_provider_path() -> Path:
    """Where pkcs11-provider is on this machine, derived rather than assumed (amd64, arm64...)."""
    return find_pkcs11_provider(
        root=Path("/"),
        modules_dir=libcrypto_modules_dir(),
        multiarch=sysconfig.get_config_var("MULTIARCH"),
        machine=platform.machine(),
    )


def find_pkcs11_provider(
    *, root: Path, modules_dir: Path | None, multiarch: str | None, machine: str
) -> Path:
    """The first ``pkcs11.so`` of: the running libcrypto's modules directory, then Debian's
    ``/usr/lib/<triplet>/ossl-modules`` for the interpreter's multiarch triplet, then for the
    machine's (``uname -m``). ``root`` prefixes every path (tests use a fake layout).
    """
    triplets = [multiarch, _TRIPLETS.get(machine)]
    candidates = [modules_dir / PROVIDER_FILE] if modules_dir else []
    candidates += [Path("/usr/lib") / t / "ossl-modules" / PROVIDER_FILE for t in triplets if t]
    for candidate in candidates:
        on_disk = root / candidate.relative_to("/")
        if on_disk.is_file():
            return on_disk
    looked = ", ".join(str(root / c.relative_to("/")) for c in dict.fromkeys(candidates))
    raise ConfigurationError(
        f"pkcs11-provider ({PROVIDER_FILE}) not found; looked in {looked or 'no directory'}. "
        "Install Debian's pkcs11-provider (bookworm-backports)"
    )


_TEMPLATE = """\
# Written by Sluis (appliance/tls/openssl_conf.py); changes are overwritten.
openssl_conf = sluis_init

[sluis_init]
providers = sluis_providers
ssl_conf = sluis_ssl

[sluis_providers]
default = sluis_default_provider
{pkcs11_section_ref}
[sluis_default_provider]
activate = 1
{pkcs11_section}
[sluis_ssl]
system_default = sluis_tls_policy

[sluis_tls_policy]
MinProtocol = {min_protocol}
MaxProtocol = {max_protocol}
CipherString = {ciphers}
Ciphersuites = {ciphersuites}
Groups = {groups}
SignatureAlgorithms = {sigalgs}
ClientSignatureAlgorithms = {sigalgs}
Options = -SessionTicket,NoRenegotiation,-Compression,ServerPreference
"""

_PKCS11_SECTION = """\
[sluis_pkcs11_provider]
module = {provider}
pkcs11-module-path = {module}
pkcs11-module-token-pin = file:{pin_file}
# SoftHSM crashes at exit without these; harmless for real HSMs.
pkcs11-module-quirks = no-deinit no-operation-state
# No pkcs11-module-load-behavior: the default defers loading the module to first use, which
# happens in a worker after fork, never in the gunicorn master.
activate = 1
"""


def render_openssl_config(hsm: HsmSettings | None, *, provider: Path | None = None) -> str:
    """Return the configuration text; without ``hsm`` only the TLS policy is set.

    ``provider``: the pkcs11-provider module, by default :func:`pkcs11_provider_path`.
    """
    if hsm is not None:
        provider = provider or pkcs11_provider_path()
        if hsm.pin_file is None:
            raise ValueError("the OpenSSL provider reads the PIN from a file: set hsm.pin_file")
        pkcs11_ref = "pkcs11 = sluis_pkcs11_provider\n"
        pkcs11_section = "\n" + _PKCS11_SECTION.format(
            provider=provider, module=hsm.module, pin_file=hsm.pin_file
        )
    else:
        pkcs11_ref = pkcs11_section = ""
    return _TEMPLATE.format(
        pkcs11_section_ref=pkcs11_ref,
        pkcs11_section=pkcs11_section,
        min_protocol=policy.MIN_PROTOCOL,
        max_protocol=policy.MAX_PROTOCOL,
        ciphers=policy.TLS12_CIPHERS,
        ciphersuites=policy.TLS13_CIPHERSUITES,
        groups=policy.GROUPS,
        sigalgs=policy.SIGNATURE_ALGORITHMS,
    )


def write_openssl_config(path: Path, hsm: HsmSettings | None) -> None:
    """Write the configuration atomically (readable by the service, no secret inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(render_openssl_config(hsm))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

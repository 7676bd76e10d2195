"""Write the OpenSSL configuration every Sluis process runs with (``OPENSSL_CONF``).

It does two things Python's ``ssl`` module cannot do by itself:
- loads the pkcs11 provider next to the default one, so that a PEM URI key file makes
  ``load_cert_chain`` sign inside the HSM;
- restricts groups, signature algorithms and protocol versions for every SSL_CTX (the NCSC
  policy in ``appliance.tls.policy``).
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.hsm.settings import HsmSettings
from appliance.tls import policy

PKCS11_PROVIDER = Path("/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so")

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


def render_openssl_config(hsm: HsmSettings | None, *, provider: Path = PKCS11_PROVIDER) -> str:
    """Return the configuration text; without ``hsm`` only the TLS policy is set."""
    if hsm is not None:
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

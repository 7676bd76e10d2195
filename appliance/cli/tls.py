"""``sluis tls``: write the OpenSSL configuration and check that a TLS identity works."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.tls.context import client_context, server_context
from appliance.tls.openssl_conf import write_openssl_config
from appliance.tls.peer import PeerIdentity


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("tls", help="OpenSSL configuration and TLS self-check")
    sub = parser.add_subparsers(dest="tls_command", required=True, metavar="COMMAND")

    conf = sub.add_parser(
        "openssl-config",
        help="write the OpenSSL config (pkcs11 provider + NCSC policy) named in [tls] openssl_conf",
    )
    conf.add_argument("--config", type=Path, required=True, help="appliance configuration (TOML)")
    conf.set_defaults(func=_openssl_config)

    check = sub.add_parser(
        "check", help="build the server and client contexts and show the certificate identity"
    )
    check.add_argument("--config", type=Path, required=True, help="appliance configuration (TOML)")
    check.set_defaults(func=_check)


def _openssl_config(args: argparse.Namespace) -> int:
    sluis = load_config(args.config)
    write_openssl_config(sluis.tls.openssl_conf, sluis.hsm)
    print(f"wrote {sluis.tls.openssl_conf}")
    return 0


def _check(args: argparse.Namespace) -> int:
    sluis = load_config(args.config)
    if os.environ.get("OPENSSL_CONF") != str(sluis.tls.openssl_conf):
        raise ConfigurationError(
            f"run with OPENSSL_CONF={sluis.tls.openssl_conf} so the pkcs11 provider is loaded"
        )
    server_context(sluis.tls, sluis.hsm)
    client_context(sluis.tls, sluis.hsm)
    leaf = x509.load_pem_x509_certificate(sluis.tls.certificate_chain.read_bytes())
    identity = PeerIdentity.from_der(leaf.public_bytes(Encoding.DER))
    print(f"peer id (OIN):   {identity.peer_id}")
    print(f"organisation:    {identity.organisation}")
    print(f"x5t#S256:        {identity.certificate_thumbprint}")
    print(f"expires:         {identity.not_after.isoformat()}")
    print("server and client contexts built with the HSM key: OK")
    return 0

"""``sluis tls``: write the OpenSSL configuration and check that a TLS identity works."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import SluisConfig, load_config
from appliance.errors import ConfigurationError
from appliance.tls.context import client_context, server_context
from appliance.tls.openssl_conf import write_openssl_config
from appliance.tls.peer import PeerIdentity
from appliance.tls.probe import run_probe


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

    probe = sub.add_parser(
        "probe",
        help="connect to a listener with this appliance's identity and GET a path",
        description="Mutual TLS with the HSM key; prints the server identity and the response "
        "as JSON. With --count/--concurrency it is a handshake load generator.",
    )
    probe.add_argument("--config", type=Path, required=True, help="appliance configuration (TOML)")
    probe.add_argument("--connect", required=True, help="host:port to connect to")
    probe.add_argument(
        "--server-name", required=True, help="FQDN the server certificate must carry"
    )
    probe.add_argument("--path", default="/whoami", help="path to GET (default %(default)s)")
    probe.add_argument("--count", type=int, default=1, help="requests, each a new connection")
    probe.add_argument("--concurrency", type=int, default=1, help="connections at once")
    probe.set_defaults(func=_probe)


def _openssl_config(args: argparse.Namespace) -> int:
    sluis = load_config(args.config)
    write_openssl_config(sluis.tls.openssl_conf, sluis.hsm)
    print(f"wrote {sluis.tls.openssl_conf}")
    return 0


def _require_env(path: Path) -> SluisConfig:
    sluis = load_config(path)
    if os.environ.get("OPENSSL_CONF") != str(sluis.tls.openssl_conf):
        raise ConfigurationError(
            f"run with OPENSSL_CONF={sluis.tls.openssl_conf} so the pkcs11 provider is loaded"
        )
    # The token store of [hsm] (SoftHSM2's SOFTHSM2_CONF), as the components set it: the
    # module reads it when the provider first opens the token, after this point.
    os.environ.update(sluis.hsm.environment())
    return sluis


def _probe(args: argparse.Namespace) -> int:
    sluis = _require_env(args.config)
    host, _, port = args.connect.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"--connect must be host:port, got {args.connect!r}")
    ctx = client_context(sluis.tls, sluis.hsm)
    result = asyncio.run(
        run_probe(
            ctx,
            host,
            int(port),
            args.server_name,
            path=args.path,
            count=args.count,
            concurrency=args.concurrency,
        )
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ok == result.requests else 1


def _check(args: argparse.Namespace) -> int:
    sluis = _require_env(args.config)
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

"""``sluis tls``: write the OpenSSL configuration and check that a TLS identity works."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.cli.groups import add_command, add_group
from appliance.config import SluisConfig, load_config
from appliance.errors import ConfigurationError
from appliance.tls.context import TlsSetupError, client_context, server_context
from appliance.tls.openssl_conf import write_openssl_config
from appliance.tls.peer import PeerIdentity
from appliance.tls.probe import run_probe


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "tls")
    sub = parser.add_subparsers(dest="tls_command", required=True, metavar="COMMAND")

    conf = add_command(
        sub,
        "openssl-config",
        help_text="write the OpenSSL config (pkcs11 provider + NCSC policy) named in [tls] "
        "openssl_conf",
        config=True,
    )
    conf.set_defaults(func=_openssl_config)

    check = add_command(
        sub,
        "check",
        help_text="build the server and client contexts and show the certificate identity",
        config=True,
    )
    check.set_defaults(func=_check)

    probe = add_command(
        sub,
        "probe",
        help_text="connect to a listener with this appliance's identity and GET a path",
        description="Mutual TLS with the HSM key; prints the server identity and the response "
        "as JSON. With --count/--concurrency it is a handshake load generator.",
        config=True,
    )
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


def _require_env(args: argparse.Namespace) -> SluisConfig:
    """The configuration, in a process whose OpenSSL loaded ``[tls] openssl_conf``.

    OpenSSL reads ``OPENSSL_CONF`` once, when the interpreter starts: without it the command
    runs itself again with it set (as ``sluis serve`` does); a relative one naming the same
    file is fine; one naming another file is refused, with both paths.
    """
    sluis = load_config(args.config)
    wanted = sluis.tls.openssl_conf
    seen = os.environ.get("OPENSSL_CONF")
    if not seen:
        env = {**os.environ, "OPENSSL_CONF": str(wanted.resolve())}
        again = [sys.executable, "-m", "appliance", *args.argv]
        os.execve(sys.executable, again, env)  # noqa: S606 (this very command, no shell)
    if Path(seen).resolve() != wanted.resolve():
        raise ConfigurationError(
            f"OPENSSL_CONF is {seen!r} ({Path(seen).resolve()}), but [tls] openssl_conf is "
            f"{wanted} ({wanted.resolve()}): run with OPENSSL_CONF={wanted}, or without "
            "OPENSSL_CONF (this command sets it)"
        )
    # The token store of [hsm] (SoftHSM2's SOFTHSM2_CONF), as the components set it: the
    # module reads it when the provider first opens the token, after this point.
    os.environ.update(sluis.hsm.environment())
    return sluis


def _probe(args: argparse.Namespace) -> int:
    sluis = _require_env(args)
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
    sluis = _require_env(args)
    server = server_context(sluis.tls, sluis.hsm)
    client = client_context(sluis.tls, sluis.hsm)
    leaf = x509.load_pem_x509_certificate(sluis.tls.certificate_chain.read_bytes())
    identity = PeerIdentity.from_der(leaf.public_bytes(Encoding.DER))
    print(f"peer id (OIN):   {identity.peer_id}")
    print(f"organisation:    {identity.organisation}")
    print(f"serial:          {leaf.serial_number:x}")
    print(f"x5t#S256:        {identity.certificate_thumbprint}")
    print(f"expires:         {identity.not_after.isoformat()}")
    print("server and client contexts built with the HSM key: OK")
    try:
        self_handshake(server, client, identity.common_name)
    except ssl.SSLError as exc:
        raise TlsSetupError(
            f"mutual TLS handshake with this appliance's own chain failed: {exc.reason or exc} "
            "(trust anchors, CRLs, key and certificate must agree)"
        ) from None
    print("mutual handshake with itself (chain, CRLs, key in the token verified): OK")
    return 0


def self_handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_name: str) -> None:
    """A complete mutual handshake between two contexts in memory (no sockets)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    done = {"server": False, "client": False}
    for _ in range(50):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        s_in.write(c_out.read())
        if all(done.values()):
            # TLS 1.3: the server verifies the client certificate on its last flight; one read
            # on each side processes what is still in flight.
            for side in (server_side, client_side):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.read(1)
                c_in.write(s_out.read())
                s_in.write(c_out.read())
            return
    raise TlsSetupError("mutual TLS handshake with itself did not complete")

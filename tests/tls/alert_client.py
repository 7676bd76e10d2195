"""What a refused TLS client sees: ``python alert_client.py HOST PORT NAME CA [CONFIG] [--tls12]``.

Connects once (with the appliance's identity from CONFIG, in a fresh interpreter with its
OPENSSL_CONF and SoftHSM environment; without CONFIG, no client certificate), sends a GET and
prints ``{"error": "<exception>"}`` or ``{"answer": "<first bytes>"}``. The exception text is
OpenSSL's, e.g. ``[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required``.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
from pathlib import Path


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    host, port, name, ca = args[0], int(args[1]), args[2], args[3]
    if len(args) > 4:
        from appliance.config import load_config
        from appliance.tls.context import client_context

        config = load_config(Path(args[4]))
        ctx = client_context(config.tls, config.hsm)
    else:
        ctx = ssl.create_default_context(cafile=ca)
    if "--tls12" in sys.argv:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as tls,
        ):
            tls.sendall(f"GET /whoami HTTP/1.1\r\nHost: {name}\r\n\r\n".encode("ascii"))
            data = tls.recv(1000)
        print(json.dumps({"answer": data.decode("latin-1")}))
    except (OSError, ssl.SSLError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))


if __name__ == "__main__":
    main()

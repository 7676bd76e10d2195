"""A mutual-TLS HTTP client with an appliance's identity that keeps its connections open.

``python tlsclient.py CONFIG`` (in a fresh interpreter with the appliance's OPENSSL_CONF and
SoftHSM environment) reads one JSON command per line and answers each with one JSON line:

- ``{"op": "connect", "name": "c1", "host": "127.0.0.1", "port": 8443, "server_name": "b.test"}``
  -> ``{"ok": true, "server_serial": "<hex>"}`` or ``{"ok": false, "error": "..."}``
- ``{"op": "request", "name": "c1", "path": "/x", "method": "GET"}`` on that open connection
  -> ``{"ok": true, "status": 200, "headers": {...}, "body": "..."}`` or ``{"ok": false, ...}``
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from appliance.config import load_config
from appliance.tls.context import client_context


class _Connection(http.client.HTTPSConnection):
    def __init__(self, ctx: Any, host: str, port: int, server_name: str) -> None:
        super().__init__(host, port, context=ctx, timeout=60)
        self._ctx, self._server_name = ctx, server_name

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._server_name)


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    os.environ.update(config.hsm.environment())
    ctx = client_context(config.tls, config.hsm)
    connections: dict[str, _Connection] = {}
    for line in sys.stdin:
        command = json.loads(line)
        answer: dict[str, Any]
        try:
            if command["op"] == "connect":
                conn = _Connection(ctx, command["host"], command["port"], command["server_name"])
                conn.connect()
                connections[command["name"]] = conn
                der = conn.sock.getpeercert(binary_form=True)
                assert der is not None
                serial = x509.load_der_x509_certificate(der).serial_number
                answer = {"ok": True, "server_serial": f"{serial:x}"}
            else:
                conn = connections[command["name"]]
                conn.request(command.get("method", "GET"), command["path"])
                response = conn.getresponse()
                body = response.read().decode("utf-8", "replace")
                answer = {
                    "ok": True,
                    "status": response.status,
                    "headers": {k.lower(): v for k, v in response.getheaders()},
                    "body": body,
                }
        except Exception as exc:  # reported to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

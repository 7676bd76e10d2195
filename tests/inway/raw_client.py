"""Raw bytes to a gateway: exactly what the tests write, no client library in between.

``python raw_client.py [CONFIG]`` reads a plan from stdin::

    {"host": "127.0.0.1", "port": 8443, "server_name": "a.sluis.test",
     "conversations": [{"steps": [{"send": "GET / HTTP/1.1\\r\\n..."}, {"sleep": 0.5}],
                        "timeout": 5, "until": "close"}]}

and prints ``{"answers": [{"received": ..., "closed": true|false}]}``: for each conversation a
new connection (mutual TLS with the appliance's identity when CONFIG is given; run it then in a
fresh interpreter with the appliance's OPENSSL_CONF and SoftHSM environment, plain TCP
otherwise), the steps in order, then everything the server sends until it closes the
connection (``"until": "close"``, the default) or has sent one whole response
(``"until": "response"``: Content-Length or chunked), or ``timeout`` seconds pass. Bytes
travel as latin-1 text in the JSON. ``CONFIG --serve`` reads one plan per line and answers each
with one line, until stdin closes.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any


def whole_response(data: bytes) -> bool:
    """Whether ``data`` holds a complete response (framed by Content-Length or chunked)."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    fields = [line.partition(b":") for line in head.split(b"\r\n")[1:]]
    values = {name.strip().lower(): value.strip().lower() for name, _, value in fields}
    if values.get(b"transfer-encoding") == b"chunked":
        return body.endswith(b"0\r\n\r\n")
    if b"content-length" in values:
        return len(body) >= int(values[b"content-length"])
    return False


def converse(
    plan: dict[str, Any], conversation: dict[str, Any], ctx: ssl.SSLContext | None
) -> dict[str, Any]:
    timeout = float(conversation.get("timeout", 5))
    until_response = conversation.get("until", "close") == "response"
    raw = socket.create_connection((plan["host"], plan["port"]), timeout=timeout)
    sock: socket.socket = raw
    if ctx is not None:
        sock = ctx.wrap_socket(raw, server_hostname=plan["server_name"])
    received = b""
    closed = False
    with sock:
        try:
            for step in conversation["steps"]:
                if "send" in step:
                    sock.sendall(step["send"].encode("latin-1"))
                else:
                    time.sleep(float(step["sleep"]))
        except OSError:
            pass  # the server may close while we still write; what it answered counts
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except (ssl.SSLError, OSError):
                closed = True  # reset, or the TLS connection torn down
                break
            if not data:
                closed = True
                break
            received += data
            if until_response and whole_response(received):
                break
    return {"received": received.decode("latin-1"), "closed": closed}


def main() -> None:
    ctx = None
    if len(sys.argv) > 1:
        from appliance.config import load_config
        from appliance.tls.context import client_context

        config = load_config(Path(sys.argv[1]))
        ctx = client_context(config.tls, config.hsm)
    if "--serve" in sys.argv[2:]:
        for line in sys.stdin:  # one plan per line, one answer per line
            plan = json.loads(line)
            answers = [converse(plan, c, ctx) for c in plan["conversations"]]
            print(json.dumps({"answers": answers}), flush=True)
        return
    plan = json.load(sys.stdin)
    answers = [converse(plan, c, ctx) for c in plan["conversations"]]
    print(json.dumps({"answers": answers}))


if __name__ == "__main__":
    main()

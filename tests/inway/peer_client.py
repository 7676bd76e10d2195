"""An outway stand-in: calls an inway over mutual TLS with this appliance's identity.

Run in a fresh interpreter with the appliance's OPENSSL_CONF and SoftHSM environment:
``python peer_client.py CONFIG`` reads a plan from stdin::

    {"url": "https://127.0.0.1:PORT", "server_name": "a.sluis.test",
     "requests": [{"method": "GET", "path": "/x", "headers": {...}, "upload_mib": 0}]}

and prints one JSON result per request (status, headers, body or its size and SHA-256, and
the seconds until the response head arrived). All requests go over one kept-alive
connection; ``connections`` says how many were opened. With ``--serve`` it reads one plan per
line and answers each with one line, until stdin closes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from appliance.config import load_config
from appliance.tls.context import client_context

BLOCK = bytes(range(256)) * 4096  # 1 MiB


async def _upload(mebibytes: int) -> AsyncIterator[bytes]:
    for _ in range(mebibytes):
        yield BLOCK


@functools.cache
def _context(config_path: Path) -> ssl.SSLContext:
    config = load_config(config_path)
    return client_context(config.tls, config.hsm)


async def run(config_path: Path, plan: dict[str, Any]) -> dict[str, Any]:
    ctx = _context(config_path)
    opened = 0

    async def on_connection(*_: Any) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection)
    results = []
    connector = aiohttp.TCPConnector(limit=1, ssl=ctx)
    async with aiohttp.ClientSession(
        connector=connector, trace_configs=[trace], auto_decompress=False
    ) as session:
        for request in plan["requests"]:
            upload = request.get("upload_mib", 0)
            started = time.monotonic()
            async with session.request(
                request.get("method", "GET"),
                URL(plan["url"] + request["path"], encoded=True),  # the path as written
                headers=request.get("headers", {}),
                data=_upload(upload) if upload else None,
                server_hostname=plan["server_name"],
            ) as response:
                elapsed = time.monotonic() - started
                digest = hashlib.sha256()
                size = 0
                first = b""
                async for chunk in response.content.iter_any():
                    digest.update(chunk)
                    size += len(chunk)
                    if len(first) < 4000:
                        first += chunk[: 4000 - len(first)]
                results.append(
                    {
                        "status": response.status,
                        "headers": [[k, v] for k, v in response.headers.items()],
                        "body": first.decode("utf-8", "replace"),
                        "size": size,
                        "sha256": digest.hexdigest(),
                        "elapsed": elapsed,
                    }
                )
    return {"results": results, "connections": opened}


def main() -> None:
    config = Path(sys.argv[1])
    if "--serve" in sys.argv[2:]:
        # One plan per line, one answer per line, until stdin closes: one interpreter and one
        # HSM login for a whole test module.
        for line in sys.stdin:
            print(json.dumps(asyncio.run(run(config, json.loads(line)))), flush=True)
        return
    print(json.dumps(asyncio.run(run(config, json.load(sys.stdin)))))


if __name__ == "__main__":
    main()

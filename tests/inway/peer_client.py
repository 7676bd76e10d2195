"""An outway stand-in: calls an inway over mutual TLS with this appliance's identity.

Run in a fresh interpreter with the appliance's OPENSSL_CONF and SoftHSM environment:
``python peer_client.py CONFIG`` reads a plan from stdin::

    {"url": "https://127.0.0.1:PORT", "server_name": "a.sluis.test",
     "requests": [{"method": "GET", "path": "/x", "headers": {...}, "upload_mib": 0}]}

and prints one JSON result per request (status, headers, body or its size and SHA-256). All
requests go over one kept-alive connection; ``connections`` says how many were opened.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
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


async def run(config_path: Path, plan: dict[str, Any]) -> dict[str, Any]:
    config = load_config(config_path)
    ctx = client_context(config.tls, config.hsm)
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
            async with session.request(
                request.get("method", "GET"),
                URL(plan["url"] + request["path"], encoded=True),  # the path as written
                headers=request.get("headers", {}),
                data=_upload(upload) if upload else None,
                server_hostname=plan["server_name"],
            ) as response:
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
                    }
                )
    return {"results": results, "connections": opened}


def main() -> None:
    plan = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(Path(sys.argv[1]), plan))))


if __name__ == "__main__":
    main()

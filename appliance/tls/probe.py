"""A mutual-TLS probe: connect to a Sluis listener (or a peer's) with this appliance's identity.

Operators use it to check a connection end to end (``sluis tls probe``); the benchmark and the
tests use it as a load generator with full handshakes. It speaks just enough HTTP/1.1 for a GET.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from appliance.tls.peer import PeerIdentity


@dataclass
class ProbeResult:
    requests: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    server: dict[str, str] | None = None
    first_response: Any = None
    first_status: int | None = None
    # Diagnostic apps (whoami) report which worker answered; shows the load spreads.
    worker_pids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "seconds": round(self.seconds, 3),
            "per_second": round(self.requests / self.seconds, 1) if self.seconds else None,
            "server": self.server,
            "first_status": self.first_status,
            "first_response": self.first_response,
            "worker_pids": sorted(self.worker_pids),
        }


def _handshake_done(ssl_object: ssl.SSLObject) -> bool:
    try:
        ssl_object.getpeercert()
    except ValueError:  # "handshake not done yet"
        return False
    return True


async def _one_request(
    ctx: ssl.SSLContext, host: str, port: int, server_name: str, path: str, result: ProbeResult
) -> None:
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_name), 30
        )
        ssl_object = writer.get_extra_info("ssl_object")
        # A TLS 1.3 server refuses the client's certificate after the client finished: its
        # alert may already have failed the connection (the read below reports it).
        if result.server is None and ssl_object is not None and _handshake_done(ssl_object):
            server = PeerIdentity.from_der(ssl_object.getpeercert(binary_form=True))
            result.server = {
                "peer_id": server.peer_id,
                "organisation": server.organisation,
                "x5t#S256": server.certificate_thumbprint,
                "tls_version": ssl_object.version() or "",
                "cipher": (ssl_object.cipher() or ("",))[0],
            }
        request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        if result.first_status is None:
            result.first_status = status
            try:
                result.first_response = json.loads(body)
            except ValueError:
                result.first_response = body.decode("utf-8", "replace")[:500]
        if status == 200:
            result.ok += 1
            if b'"worker_pid"' in body:
                result.worker_pids.add(int(json.loads(body)["worker_pid"]))
        else:
            result.failures[f"HTTP {status}"] += 1
    except (TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
        result.failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
    finally:
        if writer is not None:
            writer.close()


async def run_probe(
    ctx: ssl.SSLContext,
    host: str,
    port: int,
    server_name: str,
    *,
    path: str = "/whoami",
    count: int = 1,
    concurrency: int = 1,
) -> ProbeResult:
    """Send ``count`` GETs, each on a new connection (a full mutual handshake)."""
    result = ProbeResult(requests=count)
    limit = asyncio.Semaphore(concurrency)

    async def limited() -> None:
        async with limit:
            await _one_request(ctx, host, port, server_name, path, result)

    started = time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(count)))
    result.seconds = time.perf_counter() - started
    return result

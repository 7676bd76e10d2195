"""Health of this appliance's components: is the Manager, the inway, the outway answering?

Each configured address is asked for ``GET /health/ready``, the readiness a load balancer and
keepalived ask too (``appliance.metrics.health``; on the gateways only without ``Fsc-*``
routing headers, which the probe never sends): over mutual TLS with the organisation's
identity for ``https://`` (the Manager and the inway accept nothing else), plain for the
outway's ``http://`` on the internal network. The answer is read as an operator would: 200 is
*up*; 503 is *degraded*, with the checks that failed (a stale CRL, the HSM, the transaction
log, the outway's Manager); another 5xx is *degraded*; another answer means something else (or
a version without the endpoint) listens there. The probes run concurrently with a short
timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from appliance.config import SluisConfig
from appliance.errors import SluisError

PROBE_PATH = "/health/ready"  # appliance.metrics.health.READY_PATH, served by every component
MAX_ANSWER = 1 << 20  # a few hundred bytes of JSON
TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Target:
    name: str
    address: str  # http(s)://host:port


def targets_from(config: SluisConfig) -> list[Target]:
    """The components to probe: ``[controller]`` addresses, else the other sections' own."""
    controller = config.controller
    manager, inway, outway = config.manager, config.inway, config.outway
    found = []
    manager_address = (controller.manager_address if controller else "") or (
        manager.address if manager else ""
    )
    if manager_address:
        found.append(Target("manager", manager_address))
    inway_address = (controller.inway_address if controller else "") or (
        (inway.address if inway else "") or (manager.inway_address if manager and inway else "")
    )
    if inway_address:
        found.append(Target("inway", inway_address))
    outway_address = controller.outway_address if controller else ""
    if not outway_address and outway is not None:
        host, _, port = outway.bind.rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host  # noqa: S104 (a bind, not a listen)
        outway_address = f"http://{host}:{port}"
    if outway_address:
        found.append(Target("outway", outway_address))
    return found


class HealthProber:
    def __init__(
        self,
        targets: list[Target],
        *,
        tls_context: Callable[[], ssl.SSLContext] | None = None,
        resolve: dict[str, tuple[str, int]] | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.targets = targets
        self._tls_factory = tls_context
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._resolve = resolve or {}
        self._timeout = timeout

    def _context(self) -> ssl.SSLContext:
        # Built on first use in the worker (HSM key: never in the gunicorn master).
        with self._lock:
            if self._tls is None:
                if self._tls_factory is None:
                    raise RuntimeError("no TLS client identity configured for probes")
                self._tls = self._tls_factory()
            return self._tls

    async def check(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._probe(t) for t in self.targets)))

    async def _probe(self, target: Target) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": target.name,
            "address": target.address,
            "status": "down",
            "http_status": None,
            "latency_ms": None,
            "error": None,
            "check": f"GET {PROBE_PATH}",
            "meaning": "",
            "certificate_sha256": None,
        }
        started = time.monotonic()
        writer = None
        try:
            parts = urlsplit(target.address)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) address: {target.address!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host, connect_port = self._resolve.get(
                f"{parts.hostname}:{port}", (parts.hostname, port)
            )
            tls = await asyncio.to_thread(self._context) if parts.scheme == "https" else None
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    connect_port,
                    ssl=tls,
                    server_hostname=parts.hostname if tls else None,
                ),
                self._timeout,
            )
            if tls is not None:
                # Which certificate the component presents: after `sluis pki install-cert` a
                # component keeps the chain it loaded until it reloads.
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                result["certificate_sha256"] = hashlib.sha256(der).hexdigest() if der else None
            request = (
                f"GET {PROBE_PATH} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), self._timeout)
            fields = status_line.split(b" ", 2)
            if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
                raise ConnectionError("no HTTP answer")
            code = int(fields[1])
            body = b""
            if code in (200, 503):
                # Connection: close: the answer ends with the connection (the JSON is small
                # and sent whole, with Content-Length).
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
                body = await asyncio.wait_for(_until_closed(reader), self._timeout)
            result["http_status"] = code
            result["status"], result["meaning"] = interpret(code, body)
        except TimeoutError:
            result["error"] = f"no answer within {self._timeout:g} s"
        except (OSError, ValueError, RuntimeError, ssl.SSLError, SluisError) as exc:
            # SluisError: the probes' own TLS identity cannot be built (the HSM token gone): the
            # page says so for each component instead of failing as a whole.
            result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            if writer is not None:
                writer.close()
        if result["error"]:
            result["meaning"] = _down_meaning(target, result["error"])
        return result


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while len(data) < MAX_ANSWER:
        chunk = await reader.read(MAX_ANSWER - len(data))
        if not chunk:
            break
        data += chunk
    return data


def interpret(code: int, body: bytes) -> tuple[str, str]:
    """``(status, what it means)`` for the answer to ``GET /health/ready``."""
    if code in (200, 503):
        try:
            answer = json.loads(body)
            checks = answer["checks"]
            failed = {name: str(c["detail"]) for name, c in checks.items() if not c["ok"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            return ("up" if code == 200 else "degraded"), (
                f"answers HTTP {code}, but not with Sluis's readiness: is another program on "
                "this port?"
            )
        if code == 200 and not failed:
            return "up", f"running and ready ({', '.join(sorted(checks))} pass)"
        return "degraded", "not ready: " + "; ".join(
            f"{name}: {detail}" for name, detail in sorted(failed.items())
        )
    if code >= 500:
        return "degraded", f"answers, but with an error (HTTP {code}): see its log"
    return "up", (
        f"answers, but not to its health check (HTTP {code} for {PROBE_PATH}): an older "
        "version, or another program on this port"
    )


def _down_meaning(target: Target, error: str) -> str:
    if "refused" in error.lower():
        return (
            f"nothing listens at {target.address}: is the {target.name} running, and is this "
            f"its address? ([controller] {target.name}_address, or [{target.name}])"
        )
    if "certificate" in error.lower() or "SSL" in error:
        return "the TLS handshake with our certificate failed: check the CRLs and trust anchors"
    return f"no usable answer from {target.address}"

"""The data path of the demo Group: a sample API at the provider, its inway, the consumer's
outway, and both transaction logs."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.demo.group import Member
from appliance.demo.processes import free_port
from appliance.demo.provision import config_text


class SampleApi(BaseHTTPRequestHandler):
    """The provider's sample service: answers with the path and the FSC headers it received."""

    # Keep-alive, like a production service behind an inway (HTTP/1.0 closed every connection).
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "service": "sample register",
                "path": self.path,
                "transaction_id": self.headers.get("Fsc-Transaction-Id"),
                "authorization": bool(self.headers.get("Fsc-Authorization")),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


class SampleServer(ThreadingHTTPServer):
    # socketserver's backlog is 5: a burst through the gateways then waited 1-30 s in SYN
    # retries at the sample, and the demo measured the sample instead of the gateways.
    request_queue_size = 1024


def start_sample_api() -> ThreadingHTTPServer:
    server = SampleServer(("127.0.0.1", 0), SampleApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rewrite_config(member: Member, extra: str = "", **manager_changes: Any) -> None:
    """Write the member's sluis.toml again with changed [manager] settings and extra sections."""
    config = member.config
    assert config.manager is not None
    manager = dataclasses.replace(config.manager, **manager_changes)
    member.config_path.write_text(config_text(config.hsm, config.tls, manager) + extra)
    member.config = load_config(member.config_path)


@dataclasses.dataclass(frozen=True)
class Gateways:
    inway_port: int
    outway_port: int
    inway_address: str


def configure_gateways(
    members: dict[str, Member],
    *,
    provider: str,
    consumer: str,
    service: str,
    backend_url: str,
    root: Path,
    more_services: Mapping[str, str] | None = None,
) -> Gateways:
    """Give the provider an inway for ``service`` (and ``more_services``: name -> backend URL)
    and the consumer an outway, each with its own transaction log; every Manager learns where
    the inway is (``resolve``)."""
    inway_port, outway_port = free_port(), free_port()
    offered = [f"{name}={url}" for name, url in (more_services or {}).items()]
    provider_member = members[provider]
    inway_address = f"https://{provider_member.fqdn}:{inway_port}"
    first = next(iter(members.values())).config.manager
    assert first is not None
    resolve = (*first.resolve, f"{provider_member.fqdn}:{inway_port}=127.0.0.1:{inway_port}")
    for member in members.values():
        rewrite_config(member, resolve=resolve)
    rewrite_config(
        provider_member,
        f"""
[inway]
services = {json.dumps([f"{service}={backend_url}", *offered])}
address = "{inway_address}"
transaction_log = "appliance.txlog.gateway:inway_writer"

[txlog]
database = "sqlite:///{root / provider / "txlog.db"}"
""",
        inway_address=inway_address,
    )
    rewrite_config(
        members[consumer],
        # The bind the outway is started with: the controller's health page probes it (an
        # empty section meant the default 0.0.0.0:8080, where nothing listens).
        f'\n[outway]\nbind = "127.0.0.1:{outway_port}"\n\n'
        f'[txlog]\ndatabase = "sqlite:///{root / consumer / "txlog.db"}"\n',
    )
    return Gateways(inway_port, outway_port, inway_address)

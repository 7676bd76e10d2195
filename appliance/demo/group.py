"""The demo Group: a demo CA and organisations whose keys live in their own SoftHSM tokens.

``sluis demo`` runs it on one machine: the CA publishes its CRLs over HTTP, every appliance
fetches them, each organisation's listener runs under gunicorn with its key in its token, and
the organisations reach each other over mutual TLS. Later components (manager, outway, inway)
join the same Group.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import SluisConfig
from appliance.demo.processes import Component, free_port, run_with_identity, start_component
from appliance.demo.provision import Organisation, provision_organisation
from appliance.pki.ca import DemoCA
from appliance.pki.crl import refresh_crls
from appliance.pki.identity import OrganisationIdentity
from appliance.pki.publish import serve_public

MEMBERS = (
    Organisation(
        OrganisationIdentity("Demo Directory", "00000001000000000100", ("directory.sluis.test",)),
        "demo-directory",
    ),
    Organisation(
        OrganisationIdentity("Gemeente Sluisdam", "00000001001234567001", ("gemeente.sluis.test",)),
        "demo-gemeente",
    ),
    Organisation(
        OrganisationIdentity("Dienst Registers", "00000001001234567002", ("registers.sluis.test",)),
        "demo-registers",
    ),
)


@dataclass
class DemoGroup:
    root: Path
    ca: DemoCA
    crl_url: str
    members: dict[str, SluisConfig] = field(default_factory=dict)
    listeners: dict[str, Component] = field(default_factory=dict)

    def stop(self) -> None:
        for component in self.listeners.values():
            component.stop()


def bypass_proxy_for_loopback() -> None:
    # The CRL server runs on loopback; never send those fetches through a proxy.
    os.environ["no_proxy"] = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1"]))


def slug(organisation: Organisation) -> str:
    return organisation.token_label.removeprefix("demo-")


def build_group(root: Path, say: Callable[[str], None]) -> DemoGroup:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    bypass_proxy_for_loopback()

    port = free_port()
    crl_url = f"http://127.0.0.1:{port}"
    ca = DemoCA.create(root / "ca", name="Sluis Demo", crl_base_url=crl_url)
    server = serve_public(ca.directory, "127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say(f"demo CA created in {ca.directory}; CRLs published at {crl_url}/")

    group = DemoGroup(root, ca, crl_url)
    for member in MEMBERS:
        config = provision_organisation(ca, member, root / slug(member))
        # Fetch the CRLs the way an appliance does (signature and freshness checked).
        refresh_crls(
            [
                (f"{crl_url}/root.crl", ca.root_certificate),
                (f"{crl_url}/intermediate.crl", ca.intermediate_certificate),
            ],
            config.tls.crls,
        )
        group.members[slug(member)] = config
        say(
            f"{member.identity.name} (OIN {member.identity.oin}): key generated in token "
            f"{member.token_label!r}, CSR signed in the token, certificate issued and imported"
        )
    return group


def run_demo(root: Path, say: Callable[[str], None], *, keep_running: bool) -> int:
    group = build_group(root, say)
    try:
        for name in ("directory", "registers"):
            config = group.members[name]
            assert config.source is not None
            component = start_component(
                f"{name}-whoami", config.source, "whoami", workers=2, log_dir=root / "logs"
            )
            group.listeners[name] = component
            say(f"{name}: listening on https://{component.host}:{component.port} (2 workers)")

        gemeente = group.members["gemeente"]
        assert gemeente.source is not None
        failures = 0
        for name, fqdn in (
            ("registers", "registers.sluis.test"),
            ("directory", "directory.sluis.test"),
        ):
            target = group.listeners[name]
            result = run_with_identity(
                gemeente.source,
                [
                    "tls",
                    "probe",
                    "--connect",
                    f"{target.host}:{target.port}",
                    "--server-name",
                    fqdn,
                    "--count",
                    "50",
                    "--concurrency",
                    "10",
                ],
            )
            try:
                report = json.loads(result.stdout)
            except ValueError:
                say(f"probe of {name} failed:\n{result.stdout}{result.stderr}")
                return 1
            seen = report["first_response"] or {}
            server = report["server"] or {}
            say(
                f"gemeente -> {name}: {report['ok']}/{report['requests']} mutual-TLS requests OK, "
                f"{report['per_second']} handshakes/s; {name} saw peer {seen.get('peer_id')} "
                f"({seen.get('organisation')}); gemeente saw server {server.get('peer_id')} "
                f"({server.get('organisation')}) over {server.get('tls_version')}"
            )
            failures += report["failed"]
            for reason, count in report["failures"].items():
                say(f"  {count} failed: {reason}")

        key_files = private_key_files(root)
        say(
            "private keys stored as files: "
            + (", ".join(str(p.relative_to(root)) for p in key_files) or "none")
            + " (only the demo CA's may be; organisation keys stay in their tokens)"
        )
        if any(not p.is_relative_to(group.ca.directory) for p in key_files):
            say("ERROR: an organisation private key was found on disk")
            return 1
        if keep_running:
            say("listeners keep running; press Ctrl-C to stop")
            threading.Event().wait()
        return 0 if failures == 0 else 1
    finally:
        group.stop()


def private_key_files(root: Path) -> list[Path]:
    """Files under ``root`` that hold a private key in PEM form."""
    found = []
    for path in root.rglob("*"):
        small_file = path.is_file() and not path.is_symlink() and path.stat().st_size < 1_000_000
        if small_file and b"PRIVATE KEY-----" in path.read_bytes():
            found.append(path)
    return sorted(found)

"""Three appliances of one Group, each with its own SoftHSM token and its own Manager process:
a directory and two organisations. Helpers; the fixtures are in conftest.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import ManagerSettings, SluisConfig
from appliance.demo.processes import Component, free_port, run_with_identity
from appliance.demo.provision import Organisation, provision_organisation
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

GROUP_ID = "sluis.test"
OIN_DIRECTORY = "00000001000000000100"
OIN_A = "00000001000000000101"
OIN_B = "00000001000000000102"


@dataclass
class Member:
    name: str
    oin: str
    fqdn: str
    port: int
    config: SluisConfig
    manager: Component | None = None

    @property
    def config_path(self) -> Path:
        assert self.config.source is not None
        return self.config.source

    @property
    def address(self) -> str:
        return f"https://{self.fqdn}:{self.port}"

    def sluis(self, *argv: str, check: bool = True) -> Any:
        """Run ``sluis <argv> --config <this appliance> --json`` and return the parsed output."""
        result = run_with_identity(self.config_path, [*argv, "--json"])
        if check:
            assert result.returncode == 0, f"sluis {' '.join(argv)}: {result.stderr}{result.stdout}"
            return json.loads(result.stdout)
        return result


def plan(ca: DemoCA, root: Path, database: Callable[[str], str]) -> dict[str, Member]:
    """Provision the three appliances; ``database(name)`` gives each Manager's database URL."""
    names = {"directory": OIN_DIRECTORY, "a": OIN_A, "b": OIN_B}
    ports = {name: free_port() for name in names}
    fqdns = {name: f"{name}.sluis.test" for name in names}
    resolve = tuple(f"{fqdns[n]}:{ports[n]}=127.0.0.1:{ports[n]}" for n in names)
    members = {}
    for name, oin in names.items():
        identity = OrganisationIdentity(f"Organisation {name}", oin, (fqdns[name],))
        manager = ManagerSettings(
            peer_name=identity.name,
            group_id=GROUP_ID,
            address=f"https://{fqdns[name]}:{ports[name]}",
            database=database(name),
            inway_address=f"https://{fqdns[name]}:443",
            directory_peer_id=OIN_DIRECTORY,
            directory_address=f"https://{fqdns['directory']}:{ports['directory']}",
            is_directory=name == "directory",
            token_lifetime_seconds=120,
            delivery_interval_seconds=1,
            resolve=resolve,
        )
        config = provision_organisation(
            ca, Organisation(identity, f"mgr-{name}"), root / name, manager
        )
        members[name] = Member(name, oin, fqdns[name], ports[name], config)
    return members


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def state_of(member: Member, content_hash: str) -> str | None:
    result = member.sluis("contract", "show", content_hash, check=False)
    if result.returncode != 0:
        return None
    return str(json.loads(result.stdout)["state"])

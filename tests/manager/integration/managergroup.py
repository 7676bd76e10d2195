"""Three appliances of one Group, each with its own SoftHSM token and its own Manager process:
a directory and two organisations (built like the demo Group). The fixtures are in conftest.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from appliance.demo.group import Member, MemberPlan, provision_group, state_of, wait_for
from appliance.demo.processes import run_with_identity
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

GROUP_ID = "sluis.test"
OIN_DIRECTORY = "00000001000000000100"
OIN_A = "00000001000000000101"
OIN_B = "00000001000000000102"

PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.sluis.test",)))
    for name, oin in (("directory", OIN_DIRECTORY), ("a", OIN_A), ("b", OIN_B))
)

__all__ = ["Member", "plan", "run_failing", "state_of", "wait_for"]


def plan(ca: DemoCA, root: Path, database: Callable[[str], str]) -> dict[str, Member]:
    return provision_group(ca, root, PLANS, group_id=GROUP_ID, database=database)


def run_failing(member: Member, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a ``sluis`` command that is expected to fail; the caller checks the output."""
    return run_with_identity(member.config_path, [*argv, "--json"])

"""What the chain tests share: a Group of three appliances (directory, a, b) and the two
contracts that let a's outway call b's service (b publishes it, a connects to it)."""

from __future__ import annotations

from pathlib import Path

from inway.inwaytest import EchoBackend, EchoState

from appliance.demo.gateways import Gateways, configure_gateways
from appliance.demo.group import Member, MemberPlan, provision_group, state_of, wait_for
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity


def group_plans(oins: tuple[str, str, str], domain: str) -> tuple[MemberPlan, ...]:
    """The directory, a and b, with these OINs, named ``<name>.<domain>``."""
    return tuple(
        MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.{domain}",)))
        for name, oin in zip(("directory", "a", "b"), oins, strict=True)
    )


def publish_and_connect(members: dict[str, Member], service: str) -> str:
    """b publishes ``service`` (the directory accepts), a asks for a connection (b accepts);
    returns the connection contract's hash once it is valid at a. The Managers run."""
    a, b, directory = members["a"], members["b"], members["directory"]
    published = b.sluis("contract", "propose-publication", "--service", service)
    wait_for(lambda: state_of(directory, published["hash"]) == "proposed", "directory")
    directory.sluis("contract", "accept", published["hash"])
    wait_for(lambda: state_of(b, published["hash"]) == "valid", "publication valid at b")
    asked = a.sluis("contract", "propose-connection", "--service-peer", b.oin, "--service", service)
    wait_for(lambda: state_of(b, asked["hash"]) == "proposed", "b to receive the request")
    b.sluis("contract", "accept", asked["hash"])
    wait_for(lambda: state_of(a, asked["hash"]) == "valid", "connection valid at a")
    connection: str = asked["hash"]
    return connection


def echo_group(
    root: Path, plans: tuple[MemberPlan, ...], group_id: str, service: str
) -> tuple[dict[str, Member], EchoBackend, Gateways]:
    """The Group provisioned under ``root`` (demo CA, SoftHSM tokens, SQLite Managers), b's
    inway offering ``service`` from an echo backend in this process, a's outway configured."""
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        plans,
        group_id=group_id,
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    backend = EchoBackend(EchoState())
    backend.release_last.set()
    gateways = configure_gateways(
        members,
        provider="b",
        consumer="a",
        service=service,
        backend_url=f"{backend.url}/api",
        root=root,
    )
    return members, backend, gateways

"""The demo Group: a demo CA, a directory and two organisations, each with its own SoftHSM token.

``sluis demo`` runs it on one machine:
1. the demo CA publishes its CRLs over HTTP and every appliance fetches them;
2. every organisation's key is generated in its token, its CSR signed there, its certificate
   issued and imported;
3. each organisation runs its FSC Manager under gunicorn (mutual TLS, key in the token);
4. Dienst Registers publishes a service in the directory, Gemeente Sluisdam asks for a
   connection, both sides sign, and the Gemeente obtains an access token bound to its
   certificate;
5. a request goes app -> outway -> inway -> sample API, logged at both ends;
6. each organisation's controller starts with a printed admin login;
7. Dienst Registers publishes a second service, Gemeente Sluisdam asks for a connection to
   it, and that request is left pending at Dienst Registers: a person approves it in
   registers' controller and then calls the service through the outway (the demo prints
   where, how, and the request that is refused until then).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ManagerSettings, SluisConfig
from appliance.demo.processes import Component, free_port, run_with_identity, start_component
from appliance.demo.provision import Organisation, provision_organisation
from appliance.errors import SluisError
from appliance.pki.ca import DemoCA
from appliance.pki.crl import refresh_crls
from appliance.pki.identity import OrganisationIdentity
from appliance.pki.publish import serve_public

if TYPE_CHECKING:  # gateways.py imports this module
    from appliance.controller.demo import ControllerAccess
    from appliance.demo.gateways import Gateways

GROUP_ID = "sluis.demo"
SERVICE = "basisregistratie"
# The second service of Dienst Registers: its connection request waits for a person.
PENDING_SERVICE = "adresregister"


@dataclass(frozen=True)
class MemberPlan:
    name: str
    organisation: OrganisationIdentity

    @property
    def fqdn(self) -> str:
        return self.organisation.fqdns[0]


DEMO_MEMBERS = (
    MemberPlan(
        "directory",
        OrganisationIdentity("Demo Directory", "00000001000000000100", ("directory.sluis.test",)),
    ),
    MemberPlan(
        "gemeente",
        OrganisationIdentity("Gemeente Sluisdam", "00000001001234567001", ("gemeente.sluis.test",)),
    ),
    MemberPlan(
        "registers",
        OrganisationIdentity("Dienst Registers", "00000001001234567002", ("registers.sluis.test",)),
    ),
)


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

    def sluis(self, *argv: str) -> Any:
        """``sluis <argv> --config <this appliance> --json``, parsed; a failure raises."""
        result = run_with_identity(self.config_path, [*argv, "--json"])
        if result.returncode != 0:
            raise SluisError(f"sluis {' '.join(argv)} ({self.name}): {result.stderr.strip()}")
        return json.loads(result.stdout)


def provision_group(
    ca: DemoCA,
    root: Path,
    plans: tuple[MemberPlan, ...],
    *,
    group_id: str,
    database: Callable[[str], str],
    directory: str = "directory",
) -> dict[str, Member]:
    """Provision every member with its token, certificate and Manager configuration.

    Managers listen on free loopback ports; ``resolve`` entries let them find each other by
    FQDN (the certificates name FQDNs, and no DNS knows the demo's).
    """
    ports = {p.name: free_port() for p in plans}
    resolve = tuple(f"{p.fqdn}:{ports[p.name]}=127.0.0.1:{ports[p.name]}" for p in plans)
    directory_plan = next(p for p in plans if p.name == directory)
    members = {}
    for plan in plans:
        manager = ManagerSettings(
            peer_name=plan.organisation.name,
            group_id=group_id,
            address=f"https://{plan.fqdn}:{ports[plan.name]}",
            database=database(plan.name),
            inway_address=f"https://{plan.fqdn}:443",
            directory_peer_id=directory_plan.organisation.oin,
            directory_address=f"https://{directory_plan.fqdn}:{ports[directory]}",
            is_directory=plan.name == directory,
            token_lifetime_seconds=300,
            delivery_interval_seconds=1,
            resolve=resolve,
            # Every Manager of the demo Group listens on 127.0.0.1.
            allow_loopback_peer_addresses=True,
        )
        config = provision_organisation(
            ca, Organisation(plan.organisation, f"demo-{plan.name}"), root / plan.name, manager
        )
        members[plan.name] = Member(
            plan.name, plan.organisation.oin, plan.fqdn, ports[plan.name], config
        )
    return members


def start_managers(members: dict[str, Member], log_dir: Path, workers: int = 2) -> None:
    for member in members.values():
        member.manager = start_component(
            f"manager-{member.name}",
            member.config_path,
            "manager",
            port=member.port,
            workers=workers,
            log_dir=log_dir,
        )


def stop_managers(members: dict[str, Member]) -> None:
    for member in members.values():
        if member.manager is not None:
            member.manager.stop()


def state_of(member: Member, content_hash: str) -> str | None:
    try:
        return str(member.sluis("contract", "show", content_hash)["state"])
    except SluisError:
        return None


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise SluisError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class DemoGroup:
    root: Path
    ca: DemoCA
    crl_url: str
    members: dict[str, Member] = field(default_factory=dict)


def bypass_proxy_for_loopback() -> None:
    # The CRL server and the Managers run on loopback; never send that through a proxy.
    os.environ["no_proxy"] = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1"]))


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

    members = provision_group(
        ca,
        root,
        DEMO_MEMBERS,
        group_id=GROUP_ID,
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    for member in members.values():
        # Fetch the CRLs the way an appliance does (signature and freshness checked).
        refresh_crls(
            [
                (f"{crl_url}/root.crl", ca.root_certificate),
                (f"{crl_url}/intermediate.crl", ca.intermediate_certificate),
            ],
            member.config.tls.crls,
        )
        say(
            f"{member.config.manager.peer_name if member.config.manager else member.name} "
            f"(OIN {member.oin}): key generated in its own SoftHSM token, CSR signed in the "
            "token, certificate issued and imported, CRLs fetched"
        )
    return DemoGroup(root, ca, crl_url, members)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def run_demo(root: Path, say: Callable[[str], None], *, keep_running: bool) -> int:
    group = build_group(root, say)
    members = group.members
    directory, gemeente, registers = members["directory"], members["gemeente"], members["registers"]
    try:
        # Configure the data path before the Managers start: the provider's Manager puts its
        # inway's address in every token it issues.
        gateways, backend = prepare_gateways(group)
        start_managers(members, root / "logs")
        for member in members.values():
            assert member.manager is not None
            say(f"{member.name}: FSC Manager listening on https://{member.fqdn}:{member.port}")

        published = registers.sluis("contract", "propose-publication", "--service", SERVICE)
        say(f"registers proposes publishing {SERVICE!r} in the directory: {published['hash']}")
        wait_for(lambda: state_of(directory, published["hash"]) == "proposed", "the directory")
        directory.sluis("contract", "accept", published["hash"])
        wait_for(lambda: state_of(registers, published["hash"]) == "valid", "registers")
        say("directory accepted (signed in its HSM): the publication is valid at both ends")

        asked = gemeente.sluis(
            "contract", "propose-connection", "--service-peer", registers.oin, "--service", SERVICE
        )
        say(f"gemeente asks registers for a connection to {SERVICE!r}: {asked['hash']}")
        wait_for(lambda: state_of(registers, asked["hash"]) == "proposed", "registers")
        registers.sluis("contract", "accept", asked["hash"])
        wait_for(lambda: state_of(gemeente, asked["hash"]) == "valid", "gemeente")
        say("registers accepted: the connection contract is valid at both ends")

        from appliance.manager.contracts.hashing import grant_hashes
        from appliance.manager.contracts.model import Contract

        grant = grant_hashes(Contract.from_json(asked["content"]))[0]
        token = gemeente.sluis(
            "contract", "token", "--grant-hash", grant, "--service-peer", registers.oin
        )
        claims = _claims(token["access_token"])
        say(
            "gemeente obtained an access token from registers' Manager (signed in registers' "
            f"HSM): sub={claims['sub']} iss={claims['iss']} svc={claims['svc']} "
            f"aud={claims['aud']} cnf.x5t#S256={claims['cnf']['x5t#S256']} "
            f"valid {claims['exp'] - claims['nbf']}s"
        )

        pending = propose_pending_connection(group, say)
        components = run_request(group, gateways, backend, say)
        controllers = start_controllers(group, say)
        components += [access.component for access in controllers.values()]

        key_files = private_key_files(root)
        say(
            "private keys stored as files: "
            + (", ".join(str(p.relative_to(root)) for p in key_files) or "none")
            + " (only the demo CA's may be; organisation keys stay in their tokens)"
        )
        if any(not p.is_relative_to(group.ca.directory) for p in key_files):
            say("ERROR: an organisation private key was found on disk")
            return 1
        explain_pending(group, gateways, controllers["registers"], pending, say, keep_running)
        if keep_running:
            say("everything keeps running; press Ctrl-C to stop (it stops every component)")
            threading.Event().wait()
        else:
            say("stopping every component (run with --keep-running to keep them and use the UIs)")
        return 0
    finally:
        for component in locals().get("components", []):
            component.stop()
        stop_managers(members)


def prepare_gateways(group: DemoGroup) -> tuple[Gateways, str]:
    """Start the sample API and write the inway, outway and transaction log configuration
    (the inway offers both services; the sample API answers for each)."""
    from appliance.demo.gateways import configure_gateways, start_sample_api

    api = start_sample_api()
    backend = f"http://127.0.0.1:{api.server_address[1]}/api"
    gateways = configure_gateways(
        group.members,
        provider="registers",
        consumer="gemeente",
        service=SERVICE,
        backend_url=backend,
        root=group.root,
        more_services={PENDING_SERVICE: f"http://127.0.0.1:{api.server_address[1]}/adressen"},
    )
    return gateways, backend


def propose_pending_connection(group: DemoGroup, say: Callable[[str], None]) -> str:
    """Registers publishes its second service (the directory accepts), gemeente asks for a
    connection to it, and the request is left at registers for a person: its content hash."""
    members = group.members
    directory, gemeente, registers = members["directory"], members["gemeente"], members["registers"]
    published = registers.sluis("contract", "propose-publication", "--service", PENDING_SERVICE)
    wait_for(lambda: state_of(directory, published["hash"]) == "proposed", "the directory")
    directory.sluis("contract", "accept", published["hash"])
    wait_for(lambda: state_of(registers, published["hash"]) == "valid", "registers")
    say(f"registers publishes a second service, {PENDING_SERVICE!r}; the directory accepted")
    asked = gemeente.sluis(
        "contract",
        "propose-connection",
        "--service-peer",
        registers.oin,
        "--service",
        PENDING_SERVICE,
    )
    wait_for(lambda: state_of(registers, asked["hash"]) == "proposed", "registers")
    say(
        f"gemeente asks registers for a connection to {PENDING_SERVICE!r}: {asked['hash']} "
        "(signed by gemeente; left pending at registers for a person to approve)"
    )
    return str(asked["hash"])


def explain_pending(
    group: DemoGroup,
    gateways: Gateways,
    controller: ControllerAccess,
    content_hash: str,
    say: Callable[[str], None],
    keep_running: bool,
) -> None:
    """Say what a person does with the pending request, and show that the outway refuses the
    call until then."""
    import http.client

    registers = group.members["registers"]
    path = f"/{registers.oin}/{PENDING_SERVICE}/persons/42"
    conn = http.client.HTTPConnection("127.0.0.1", gateways.outway_port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    code = response.getheader("Fsc-Error-Code") or ""
    say("")
    say(f"PENDING: gemeente's connection request for {PENDING_SERVICE!r} waits at registers")
    say(f"  contract: {content_hash}")
    say(f"  1. open registers' controller: {controller.url}")
    say(f"     log in as: {controller.username} / {controller.password}")
    say("     (the certificate is the demo CA's: the browser warns; accept it for this demo)")
    say(
        f"  2. Contracts -> the request marked 'Needs your approval' (Gemeente Sluisdam, "
        f"{PENDING_SERVICE}) -> Approve"
    )
    say("  3. then call the service as gemeente's application, through gemeente's outway:")
    say(f"     curl -i http://127.0.0.1:{gateways.outway_port}{path}")
    say(f"     (now, before the approval, the outway answers {response.status} {code})")
    say("  4. and find the call in the transaction log: registers' controller -> Transaction log")
    if not keep_running:
        say("  (to do this yourself, run ./scripts/demo.sh --keep-running)")
    say("")


def run_request(
    group: DemoGroup, gateways: Gateways, backend: str, say: Callable[[str], None]
) -> list[Component]:
    """Call the provider's sample API through the consumer's outway and its inway."""
    import http.client

    from appliance.txlog.store import TransactionLog

    members = group.members
    registers, gemeente = members["registers"], members["gemeente"]
    logs = group.root / "logs"
    components = [
        start_component(
            "inway-registers",
            registers.config_path,
            "inway",
            port=gateways.inway_port,
            workers=1,
            log_dir=logs,
        ),
        start_component(
            "outway-gemeente",
            gemeente.config_path,
            "outway",
            port=gateways.outway_port,
            workers=1,
            log_dir=logs,
        ),
    ]
    say(f"registers: sample API at {backend}, inway at {gateways.inway_address}")
    say(f"gemeente: outway at http://127.0.0.1:{gateways.outway_port}/ (internal network)")
    path = f"/{registers.oin}/{SERVICE}/persons/42"
    conn = http.client.HTTPConnection("127.0.0.1", gateways.outway_port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode()
    transaction = response.getheader("Fsc-Transaction-Id") or ""
    say(f"GET http://127.0.0.1:{gateways.outway_port}{path} -> {response.status} {body}")
    say(f"transaction id: {transaction}")
    if response.status != 200:
        raise SluisError(f"the request through the outway failed: {response.status} {body}")
    for member, direction in ((gemeente, "outgoing"), (registers, "incoming")):
        assert member.config.txlog is not None
        with TransactionLog.open(member.config.txlog.database) as log:
            records, _ = log.query(member.oin, transaction_ids=[transaction])
        for record in records:
            say(f"{member.name} log ({direction}): {json.dumps(record.to_api())}")
    return components


def start_controllers(group: DemoGroup, say: Callable[[str], None]) -> dict[str, ControllerAccess]:
    """Each organisation's controller (operators' UI and API), with a printed admin account."""
    from appliance.controller.demo import start_controller

    started = {}
    for member in group.members.values():
        access = start_controller(member.config_path, group.root / "logs", name=member.name)
        started[member.name] = access
        say(f"{member.name}: {access.describe()}")
    return started


def private_key_files(root: Path) -> list[Path]:
    """Files under ``root`` that hold a private key in PEM form."""
    found = []
    for path in root.rglob("*"):
        small_file = path.is_file() and not path.is_symlink() and path.stat().st_size < 1_000_000
        if small_file and b"PRIVATE KEY-----" in path.read_bytes():
            found.append(path)
    return sorted(found)

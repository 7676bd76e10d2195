"""Helpers for the certificate lifecycle tests: a Group with real tokens, processes, clients.

Every organisation has its own SoftHSM2 token store; every command that touches a token runs
in a fresh interpreter with that appliance's OPENSSL_CONF and SOFTHSM2_CONF, as in production.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from appliance.demo.group import Member, MemberPlan, provision_group
from appliance.demo.processes import Component, run_with_identity
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

HERE = Path(__file__).parent
GROUP_ID = "sluis.test"
OIN_DIRECTORY = "00000001000000000200"
OIN_A = "00000001000000000201"
OIN_B = "00000001000000000202"

PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.sluis.test",)))
    for name, oin in (("directory", OIN_DIRECTORY), ("a", OIN_A), ("b", OIN_B))
)


def make_group(root: Path) -> tuple[DemoCA, dict[str, Member]]:
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        PLANS,
        group_id=GROUP_ID,
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    return ca, members


def sluis(member: Member, *argv: str) -> subprocess.CompletedProcess[str]:
    """``sluis <argv> --config <member>`` with the member's identity environment."""
    return run_with_identity(member.config_path, list(argv))


def renew(ca: DemoCA, member: Member, out: Path, *extra: str) -> x509.Certificate:
    """A CSR signed in the member's token (``extra``: e.g. another key label), issued by ``ca``."""
    csr = out.with_suffix(".csr")
    identity = next(p.organisation for p in PLANS if p.name == member.name)
    done = sluis(
        member,
        "hsm",
        "csr",
        "--organisation",
        identity.name,
        "--oin",
        identity.oin,
        "--fqdn",
        identity.fqdns[0],
        "--out",
        str(csr),
        *extra,
    )
    assert done.returncode == 0, done.stderr
    certificate = ca.issue(csr.read_bytes())
    out.write_bytes(ca.chain_pem(certificate))
    return certificate


def publish_crls(ca: DemoCA, member: Member) -> None:
    """Give the member the CA's current CRL bundle, replaced atomically (as fetch-crl does)."""
    dest = member.config.tls.crls
    tmp = dest.with_name(dest.name + ".new")
    shutil.copyfile(ca.crl_bundle_path, tmp)
    os.replace(tmp, dest)


def live_serial(member: Member) -> int:
    chain = x509.load_pem_x509_certificates(member.config.tls.certificate_chain.read_bytes())
    return chain[0].serial_number


class Client:
    """tlsclient.py with a member's identity: connections stay open between commands."""

    def __init__(self, member: Member) -> None:
        from appliance.config import load_config

        sluis_config = load_config(member.config_path)
        env = {
            **os.environ,
            "OPENSSL_CONF": str(sluis_config.tls.openssl_conf),
            **sluis_config.hsm.environment(),
            "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)]),
        }
        self._process = subprocess.Popen(
            [sys.executable, str(HERE / "tlsclient.py"), str(member.config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def send(self, **command: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            assert self._process.stderr is not None
            raise AssertionError(f"tlsclient ended: {self._process.stderr.read()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.receive()

    def connect(self, name: str, target: Component, server_name: str) -> dict[str, Any]:
        return self.call(
            op="connect", name=name, host=target.host, port=target.port, server_name=server_name
        )

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def hup(component: Component) -> None:
    component.process.send_signal(signal.SIGHUP)


def wait_for_log(component: Component, text: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component.log().count(text) >= count:
            return
        time.sleep(0.2)
    log = component.log()
    raise AssertionError(f"{text!r} not {count} times in {component.name}'s log:\n{log}")

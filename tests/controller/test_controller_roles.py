"""Every API endpoint against every role: 403 where the matrix says no, 2xx where it says
yes, 401 without a login; and every refusal is in the audit log.

The matrix is docs/controller.md's (``appliance.controller.roles.MATRIX``). Each state change
gets a fresh target (a new connection request of Peer A, a new service, user or token), so
each allowed role really makes the change and gets 2xx.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from controllertest import SERVICE, Env, unique

from appliance.controller.roles import MATRIX, Permission, Role


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # may name {hash}, {service}, {user}, {token}
    permission: Permission
    action: str
    body: Callable[[], dict[str, Any]] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _new_service() -> dict[str, Any]:
    return {"name": unique("svc"), "reason": "matrix test"}


CASES = (
    Case("GET", "/api/v1/session", Permission.VIEW, "session.read"),
    Case("GET", "/api/v1/overview", Permission.VIEW, "overview.read"),
    Case("GET", "/api/v1/services", Permission.VIEW, "services.read"),
    Case("POST", "/api/v1/services", Permission.SERVICES_MANAGE, "service.publish", _new_service),
    Case(
        "POST",
        "/api/v1/services/{service}/withdraw",
        Permission.SERVICES_MANAGE,
        "service.withdraw",
        lambda: {"reason": "matrix test"},
    ),
    Case("GET", "/api/v1/contracts", Permission.VIEW, "contracts.read"),
    Case(
        "POST",
        "/api/v1/contracts",
        Permission.CONTRACTS_PROPOSE,
        "contract.propose",
        lambda: {"service_peer_id": "00000001000000000001", "service_name": unique("s")},
    ),
    Case("GET", "/api/v1/contracts/{hash}", Permission.VIEW, "contracts.read"),
    *(
        Case(
            "POST",
            f"/api/v1/contracts/{{hash}}/{kind}",
            Permission.CONTRACTS_SIGN,
            f"contract.{kind}",
            lambda: {"reason": "matrix test"},
        )
        for kind in ("accept", "reject", "revoke")
    ),
    Case("GET", "/api/v1/transactions", Permission.VIEW, "transactions.read"),
    Case("GET", "/api/v1/transactions/export", Permission.VIEW, "transactions.export"),
    Case("GET", "/api/v1/audit", Permission.AUDIT_READ, "audit.read"),
    Case("GET", "/api/v1/certificates", Permission.VIEW, "certificates.read"),
    Case("GET", "/api/v1/health", Permission.VIEW, "health.read"),
    Case("GET", "/api/v1/users", Permission.USERS_MANAGE, "users.read"),
    Case(
        "POST",
        "/api/v1/users",
        Permission.USERS_MANAGE,
        "user.create",
        lambda: {"username": unique("user"), "role": "auditor"},
    ),
    Case("POST", "/api/v1/users/{user}/unlock", Permission.USERS_MANAGE, "user.unlock"),
    Case("GET", "/api/v1/tokens", Permission.USERS_MANAGE, "tokens.read"),
    Case(
        "POST",
        "/api/v1/tokens",
        Permission.USERS_MANAGE,
        "token.create",
        lambda: {"name": unique("robot"), "role": "auditor", "days": 1},
    ),
    Case("POST", "/api/v1/tokens/{token}/revoke", Permission.USERS_MANAGE, "token.revoke"),
    Case("DELETE", "/api/v1/session", Permission.VIEW, "logout"),
)


def target_path(case: Case, env: Env) -> str:
    """The case's path with a fresh target for a state change."""
    path = case.path
    if "{hash}" in path:
        path = path.replace("{hash}", quote(env.connection_from_a(), safe=""))
    if "{service}" in path:
        name = unique("withdrawn")
        env.published(name)
        path = path.replace("{service}", name)
    if "{user}" in path:
        path = path.replace("{user}", "auditor")
    if "{token}" in path:
        _, record = env.controller.auth.create_token(unique("doomed"), Role.AUDITOR, "test")
        path = path.replace("{token}", str(record.id))
    return path


def call(env: Env, case: Case, path: str, **kwargs: Any) -> Any:
    body = case.body() if case.body else None
    return env.client.simulate_request(case.method, path, json=body, **kwargs)


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_role_boundary(case: Case, role: Role, env: Env) -> None:
    if case.method == "DELETE":  # logging out ends the session: use one of its own
        cookie, csrf = env.login(role)
        kwargs: dict[str, Any] = {
            "cookies": {"__Host-sluis-session": cookie},
            "headers": {"X-CSRF-Token": csrf},
        }
    else:
        kwargs = env.as_role(role)
    path = target_path(case, env)
    before = env.store.audit_count()
    result = call(env, case, path, **kwargs)
    if case.permission in MATRIX[role]:
        assert 200 <= result.status_code < 300, (case.id, role, result.text)
    else:
        assert result.status_code == 403, (case.id, role, result.text)
        assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_FORBIDDEN"
        assert result.json["domain"] == "ERROR_DOMAIN_CONTROLLER"
        assert env.store.audit_count() == before + 1
        entry = env.last_audit()
        assert entry["outcome"] == "denied", entry
        assert entry["action"] == case.action
        assert entry["actor"] == role.value
        assert entry["role"] == role.value
        assert entry["peer_address"] == "127.0.0.1"
        assert str(case.permission) in entry["detail"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_unauthenticated_is_401_and_audited(case: Case, env: Env) -> None:
    path = case.path.format(hash="x", service=SERVICE, user="auditor", token="1")
    before = env.store.audit_count()
    result = call(env, case, path)
    assert result.status_code == 401, result.text
    assert result.headers["Fsc-Error-Code"] == "ERROR_CODE_UNAUTHENTICATED"
    assert result.headers["WWW-Authenticate"].startswith("Bearer")
    assert env.store.audit_count() == before + 1
    entry = env.last_audit()
    assert (entry["actor"], entry["outcome"], entry["action"]) == ("-", "denied", case.action)


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_api_tokens_carry_their_role(role: Role, env: Env) -> None:
    """A token gets exactly its role's answers, and needs no CSRF token."""
    read = env.client.simulate_get("/api/v1/audit", headers=env.bearer(role))
    assert read.status_code == (200 if Permission.AUDIT_READ in MATRIX[role] else 403)
    path = f"/api/v1/contracts/{quote(env.connection_from_a(), safe='')}/reject"
    change = env.client.simulate_post(path, json={}, headers=env.bearer(role))
    assert change.status_code == (200 if Permission.CONTRACTS_SIGN in MATRIX[role] else 403)
    if change.status_code == 200:
        assert change.json["state"] == "rejected"
        assert env.last_audit()["actor"] == f"token:{role.value} robot"


def test_every_api_operation_is_in_the_matrix_test() -> None:
    """CASES covers every operation of the OpenAPI document that needs a login."""
    import yaml

    from appliance.controller.api import openapi_document

    document = yaml.safe_load(openapi_document())
    operations = {
        f"{method.upper()} /api/v1{path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security", document["security"])
    }
    renamed = {
        "{hash}": "{content_hash}",
        "{service}": "{name}",
        "{user}": "{username}",
        "{token}": "{token_id}",
    }
    covered = set()
    for case in CASES:
        path = case.path
        for ours, theirs in renamed.items():
            path = path.replace(ours, theirs)
        covered.add(f"{case.method} {path}")
    assert operations == covered

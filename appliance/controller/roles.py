"""The controller's roles and what each may do (docs/controller.md has the same matrix).

Every endpoint and page names one :class:`Permission`; a role has it or not. There are no
per-user exceptions: a person who needs more gets another role (and the audit log shows who
gave it).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMINISTRATOR = "administrator"
    SECURITY_OFFICER = "security_officer"
    SERVICE_OWNER = "service_owner"
    AUDITOR = "auditor"


# What a new account or API token gets unless another role is chosen: the one that changes
# nothing (least privilege; an administrator can do everything).
DEFAULT_ROLE = Role.AUDITOR


class Permission(StrEnum):
    VIEW = "view"  # overview, services, contracts, transaction log, certificates, health
    AUDIT_READ = "audit.read"
    SERVICES_MANAGE = "services.manage"  # publish and withdraw our services
    CONTRACTS_PROPOSE = "contracts.propose"  # ask another peer for a connection
    CONTRACTS_SIGN = "contracts.sign"  # accept, reject, revoke (a signature in the HSM)
    USERS_MANAGE = "users.manage"  # local accounts and API tokens


MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMINISTRATOR: frozenset(Permission),
    Role.SECURITY_OFFICER: frozenset(
        {
            Permission.VIEW,
            Permission.AUDIT_READ,
            Permission.CONTRACTS_PROPOSE,
            Permission.CONTRACTS_SIGN,
        }
    ),
    Role.SERVICE_OWNER: frozenset(
        {
            Permission.VIEW,
            Permission.SERVICES_MANAGE,
            Permission.CONTRACTS_PROPOSE,
            Permission.CONTRACTS_SIGN,
        }
    ),
    Role.AUDITOR: frozenset({Permission.VIEW, Permission.AUDIT_READ}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in MATRIX[role]


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(
            f"unknown role {value!r}; one of {', '.join(r.value for r in Role)}"
        ) from None

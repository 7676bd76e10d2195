"""The controller's logins (issue 20): successes, failures by reason, and the locks they trip.

Counted by :class:`appliance.controller.auth.Authenticator`, summed over the controller's
workers like every component's series (``appliance.metrics.registry``), and served only on
the controller's management listener (docs/monitoring.md)::

    sluis_controller_logins_total{method}            password, oidc
    sluis_controller_login_failures_total{reason}    see FAILURE_REASONS
    sluis_controller_lockouts_total{scope}           account: an (account, address) pair locked;
                                                     address: every login from an address refused

No user name, account or address is ever a label: the labels take the few values below, and
who tried what stays in the audit log (docs/controller.md).
"""

from __future__ import annotations

from appliance.metrics.client import Counter
from appliance.metrics.labels import OTHER

LOGIN_METHODS = frozenset({"password", "oidc"})
FAILURE_REASONS = frozenset(
    {
        "unknown_user",  # no such account (costs and answers the same as a wrong password)
        "wrong_password",
        "no_password",  # the account logs in with OpenID Connect
        "disabled",
        "locked",  # refused: the (account, address) pair is locked
        "blocked",  # refused: the address is blocked (a password spray)
        "oidc",  # an OpenID Connect login the controller refused (name taken, disabled)
    }
)
LOCKOUT_SCOPES = frozenset({"account", "address"})

LOGINS = Counter("sluis_controller_logins", "Logins to the controller by method.", ["method"])
FAILURES = Counter(
    "sluis_controller_login_failures",
    "Logins to the controller refused, by reason.",
    ["reason"],
)
LOCKOUTS = Counter(
    "sluis_controller_lockouts",
    "Login limits tripped: an account locked for an address, or an address blocked.",
    ["scope"],
)


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def login(method: str) -> None:
    LOGINS.labels(_bounded(method, LOGIN_METHODS)).inc()


def login_failed(reason: str) -> None:
    FAILURES.labels(_bounded(reason, FAILURE_REASONS)).inc()


def locked_out(scope: str) -> None:
    LOCKOUTS.labels(_bounded(scope, LOCKOUT_SCOPES)).inc()

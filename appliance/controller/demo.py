"""The controller in the demo Group: one per organisation, each with a printed admin account.

``appliance.demo`` calls :func:`start_controller` for a member once its configuration is
complete (after the gateways are configured: ``rewrite_config`` writes the file anew). It
adds a ``[controller]`` section when the file has none (database next to the configuration,
HTTPS on a free loopback port), creates (or resets) the administrator with a generated
password, and starts ``sluis serve controller``. The caller prints the URL and credentials and
stops the component at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.config import ControllerSettings, load_config
from appliance.controller.auth import Authenticator
from appliance.controller.passwords import generate_password
from appliance.controller.roles import Role
from appliance.controller.store import ControllerStore
from appliance.demo.processes import Component, free_port, start_component

ADMIN = "admin"


@dataclass(frozen=True)
class ControllerAccess:
    url: str
    username: str
    password: str
    component: Component

    def describe(self) -> str:
        return (
            f"controller at {self.url} (log in as {self.username} / {self.password}; the "
            "certificate is the demo CA's, so the browser warns)"
        )

    def stop(self) -> None:
        self.component.stop()


def ensure_controller_section(config_path: Path, port: int | None = None) -> ControllerSettings:
    """The member's ``[controller]`` settings, added to its configuration when missing."""
    config = load_config(config_path)
    if config.controller is not None:
        return config.controller
    database = config_path.parent / "controller.db"
    bind = f"127.0.0.1:{port or free_port()}"
    with config_path.open("a", encoding="utf-8") as file:
        file.write(f'\n[controller]\ndatabase = "sqlite:///{database}"\nbind = "{bind}"\n')
    settings = load_config(config_path).controller
    assert settings is not None
    return settings


def create_admin(settings: ControllerSettings, username: str = ADMIN) -> str:
    """Create the administrator (or give it a new password); returns the password."""
    password = generate_password()
    store = ControllerStore.open(settings.database)
    try:
        auth = Authenticator(store, settings)
        if store.get_user(username) is None:
            auth.create_user(username, Role.ADMINISTRATOR, password)
        else:
            auth.set_password(username, password)
            store.unlock_user(username)
        auth.audit(
            "demo",
            None,
            "user.create",
            "success",
            "local",
            target=username,
            detail="demo administrator",
        )
    finally:
        store.close()
    return password


def start_controller(
    config_path: Path,
    log_dir: Path,
    *,
    name: str | None = None,
    port: int | None = None,
    workers: int = 1,
) -> ControllerAccess:
    """Start the member's controller with a fresh admin account; see the module text."""
    settings = ensure_controller_section(config_path, port)
    password = create_admin(settings)
    host, _, bind_port = settings.bind.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (a bind address)
    component = start_component(
        f"controller-{name or config_path.parent.name}",
        config_path,
        "controller",
        host=host,
        port=int(bind_port),
        workers=workers,
        log_dir=log_dir,
    )
    return ControllerAccess(f"https://{host}:{bind_port}/", ADMIN, password, component)

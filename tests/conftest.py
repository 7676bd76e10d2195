"""Fixtures shared by the whole test suite.

SoftHSM2: every test session gets a private SoftHSM2 configuration and token directory
(``SOFTHSM2_CONF`` points there for the whole session), so no test ever touches the system's
tokens. ``make_token`` creates tokens in it.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.hsm.settings import HsmSettings

SOFTHSM_SO_PIN = "sluis-test-so-pin"

# Environment variables the appliance reads; a developer's shell must not leak into tests.
_SLUIS_HSM_ENV = (
    "SLUIS_HSM_PIN",
    "SLUIS_HSM_SO_PIN",
    "SLUIS_HSM_MODULE",
    "SLUIS_HSM_TOKEN",
    "SLUIS_HSM_KEY_LABEL",
    "SLUIS_HSM_PIN_FILE",
)


@dataclass(frozen=True)
class SoftHsmEnv:
    """The session's private SoftHSM2 set-up."""

    root: Path
    conf: Path
    token_dir: Path
    login_lock: Path
    pin_dir: Path


@pytest.fixture(scope="session", autouse=True)
def softhsm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmEnv]:
    """A private ``softhsm2.conf`` + token directory, exported as SOFTHSM2_CONF for the session."""
    root = tmp_path_factory.mktemp("softhsm")
    token_dir = root / "tokens"
    token_dir.mkdir(mode=0o700)
    pin_dir = root / "pins"
    pin_dir.mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        for name in _SLUIS_HSM_ENV:
            mp.delenv(name, raising=False)
        yield SoftHsmEnv(
            root=root,
            conf=conf,
            token_dir=token_dir,
            login_lock=root / "sluis-hsm.lock",
            pin_dir=pin_dir,
        )
        token_module = sys.modules.get("appliance.hsm.token")
        if token_module is not None:
            token_module.logout_all()


MakeToken = Callable[..., HsmSettings]


@pytest.fixture(scope="session")
def make_token(softhsm_env: SoftHsmEnv) -> MakeToken:
    """Factory: ``make_token(label, algorithm="ec-p256", generate=True) -> HsmSettings``.

    Initialises a fresh SoftHSM token ``label`` (random user PIN in a 0600 file, the session's
    login lock) and, unless ``generate=False``, generates the organisation key in it.
    """
    from appliance.hsm.keys import generate_key
    from appliance.hsm.pin import write_pin_file
    from appliance.hsm.softhsm import init_softhsm_token

    made: set[str] = set()

    def make(label: str, algorithm: str = "ec-p256", generate: bool = True) -> HsmSettings:
        if label in made:
            raise ValueError(f"token {label!r} was already made in this session")
        made.add(label)
        user_pin = secrets.token_hex(8)
        pin_file = softhsm_env.pin_dir / f"{label}.pin"
        write_pin_file(pin_file, user_pin)
        init_softhsm_token(label, SOFTHSM_SO_PIN, user_pin, login_lock=softhsm_env.login_lock)
        settings = HsmSettings(
            token_label=label, pin_file=pin_file, login_lock=softhsm_env.login_lock
        )
        if generate:
            generate_key(settings, algorithm)  # type: ignore[arg-type]
        return settings

    return make


def _is_ca_key(path: Path) -> bool:
    """Demo and test CAs keep their keys in ``<something>ca/private/``: the one exception."""
    return path.parent.name == "private" and path.parent.parent.name.endswith("ca")


@pytest.fixture(scope="session", autouse=True)
def no_organisation_key_left_on_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole session, no private key but a CA's may exist as a file."""
    yield
    root = tmp_path_factory.getbasetemp()
    leftovers = [
        path
        for path in root.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and path.stat().st_size < 1_000_000
        and b"PRIVATE KEY-----" in path.read_bytes()
        and not _is_ca_key(path)
    ]
    assert not leftovers, f"private keys left as files: {leftovers}"


# A real PostgreSQL (session cluster, a fresh database per test): see tests/postgres.py.
# tests/ is on sys.path (rootdir-relative conftest, no __init__.py), so "postgres" imports.
pytest_plugins = ["postgres"]

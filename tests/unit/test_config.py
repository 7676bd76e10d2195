"""The appliance configuration file: typed, strict, and clear about mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigurationError

BASE = """
[hsm]
token_label = "t"
pin_file = "/etc/sluis/hsm.pin"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/o.cnf"
"""

MANAGER = """
[manager]
peer_name = "Gemeente"
group_id = "sluis.demo"
address = "https://gemeente.sluis.test:8443"
database = "sqlite:////var/lib/sluis/manager.db"
token_lifetime_seconds = 120
is_directory = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluis.toml"
    path.write_text(text)
    return path


def test_paths_ints_and_booleans_are_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MANAGER))
    assert config.hsm.pin_file == Path("/etc/sluis/hsm.pin")
    assert config.tls.crls == Path("/crl.pem")
    assert config.manager is not None
    assert config.manager.token_lifetime_seconds == 120
    assert config.manager.is_directory is True


def test_manager_section_is_optional(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).manager is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[hsm2]\nx = "1"\n', "unknown section"),
        (
            MANAGER.replace("token_lifetime_seconds = 120", 'token_lifetime_seconds = "120"'),
            "must be of type int",
        ),
        (MANAGER.replace("is_directory = true", 'is_directory = "yes"'), "must be of type bool"),
        (MANAGER + 'colour = "blue"\n', "unknown setting(s) colour"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, BASE + extra))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(write(tmp_path, "[hsm\n"))

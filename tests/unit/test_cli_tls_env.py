"""``sluis tls check`` and ``probe`` and OPENSSL_CONF: set when missing (the command runs itself
again with it), a relative path to the same file accepted, another file refused with both."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.cli import tls as tls_cli
from appliance.errors import ConfigurationError


class Again(Exception):
    pass


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wanted = tmp_path / "openssl.cnf"
    wanted.write_text("")
    sluis = SimpleNamespace(
        tls=SimpleNamespace(openssl_conf=wanted), hsm=SimpleNamespace(environment=dict)
    )
    monkeypatch.setattr(tls_cli, "load_config", lambda path: sluis)
    monkeypatch.chdir(tmp_path)
    return wanted


def _args() -> argparse.Namespace:
    return argparse.Namespace(config=Path("sluis.toml"), argv=["tls", "check", "--config", "x"])


def test_a_relative_path_to_the_same_file_is_fine(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENSSL_CONF", "openssl.cnf")
    assert tls_cli._require_env(_args()).tls.openssl_conf == conf


def test_another_file_is_refused_with_what_was_seen(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENSSL_CONF", "other.cnf")
    with pytest.raises(ConfigurationError) as refused:
        tls_cli._require_env(_args())
    assert "'other.cnf'" in str(refused.value)
    assert str(conf) in str(refused.value)


def test_without_it_the_command_runs_again_with_it(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENSSL_CONF", raising=False)
    calls: list[Any] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((argv, env))
        raise Again

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(Again):
        tls_cli._require_env(_args())
    argv, env = calls[0]
    assert argv[1:] == ["-m", "appliance", "tls", "check", "--config", "x"]
    assert env["OPENSSL_CONF"] == str(conf)

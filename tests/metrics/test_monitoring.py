"""monitoring/: the alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), and the Grafana dashboard is JSON whose every expression names only
series Sluis exposes (or the rules record)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import appliance.metrics.collectors
import appliance.metrics.controller
import appliance.metrics.datapath
import appliance.metrics.peers
import appliance.metrics.upstream  # noqa: F401  (each defines its families)
from appliance.config import TlsSettings
from appliance.metrics import readiness_text, render
from appliance.metrics.collectors import ContractsCollector, HostCollector
from appliance.metrics.registry import exposition

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "sluis-rules.yml"
DASHBOARD = MONITORING / "sluis-dashboard.json"
_SERIES = re.compile(r"\bsluis[_:][a-z0-9_:]*")  # not the job names (sluis-inway)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, check=False)


def exposed() -> set[str]:
    """Every series name Sluis can expose."""
    names = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    nowhere = Path("/nonexistent")
    tls = TlsSettings(nowhere, nowhere, nowhere, nowhere, nowhere)
    checks = {"checks": {"hsm": {"ok": True}}}
    text = (
        render(tls)
        + (
            readiness_text(True, checks)
            + exposition([HostCollector([Path("/")]), ContractsCollector(lambda: {"valid": 1})])
        ).decode()
    )
    names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    return {name for name in names if name.startswith("sluis")}


def recorded() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)", RULES.read_text(), re.M))


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", "sluis-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """Not vacuous: the unit tests see what the rules say."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("< 21", "< 5"))
    (tmp_path / "sluis-rules.test.yml").write_text(
        (MONITORING / "sluis-rules.test.yml").read_text()
    )
    assert promtool("test", "rules", "sluis-rules.test.yml", cwd=tmp_path).returncode != 0


def test_the_rules_name_only_exposed_series() -> None:
    expressions = re.findall(r"^\s*expr: (.*(?:\n\s{10,}.*)*)", RULES.read_text(), re.M)
    used = {name for expr in expressions for name in _SERIES.findall(expr)}
    assert used
    assert used - exposed() - recorded() == set()


def test_the_dashboard_names_only_exposed_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions.append(dashboard["templating"]["list"][1]["query"])
    used = {name for expr in expressions for name in _SERIES.findall(expr)}
    assert len(used) > 20
    assert used - exposed() - recorded() == set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("bogus", ["sluis_gateway_request_total", "sluis_nothing"])
def test_the_check_sees_a_misspelt_series(bogus: str) -> None:
    assert bogus not in exposed()

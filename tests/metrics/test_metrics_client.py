"""appliance.metrics.client: the multiprocess values take the process id from a variable a
fork renews, and every series of the appliance is made through it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import appliance

METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}

CHILD = textwrap.dedent(
    """
    import os, sys
    from appliance.metrics import client
    from appliance.metrics.datapath import TOKEN_LOOKUPS
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    TOKEN_LOOKUPS.inc()
    child = os.fork()
    if child == 0:
        assert client.process_id() == os.getpid()
        TOKEN_LOOKUPS.inc(2)
        os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    TOKEN_LOOKUPS.inc(4)
    files = sorted(f for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if "counter" in f)
    assert files == sorted(f"counter_{pid}.db" for pid in (os.getpid(), child)), files
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    print(registry.get_sample_value("sluis_outway_token_lookups_total"))
    """
)


def test_a_forked_child_counts_in_a_file_of_its_own_and_the_sum_is_whole(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7.0"


def test_every_series_is_made_with_the_clients_classes() -> None:
    """A value of prometheus-client's default class would open the process's file a second
    time (appliance.metrics.client): no module imports the metric classes from it directly."""
    root = Path(appliance.__file__).parent
    direct = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "metrics" / "client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "prometheus_client"
            ):
                named = {alias.name for alias in node.names} & METRIC_CLASSES
                if named or node.module in ("prometheus_client.metrics",):
                    direct.append(f"{path.relative_to(root)}: {sorted(named)}")
    assert direct == []

"""The fault suite's table, printed in pytest's terminal summary (after capture has ended)."""

from __future__ import annotations

import pytest
from faultgroup import QUICK, REPORTED, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTED:
        return
    terminalreporter.section("fault injection (issue 16), quick")
    terminalreporter.write_line(
        f"{QUICK.rate:g} req/s through the outway, {QUICK.before:g} s + {QUICK.fault:g} s "
        f"fault + {QUICK.after:g} s per fault"
    )
    for line in table(REPORTED).splitlines():
        terminalreporter.write_line(line)

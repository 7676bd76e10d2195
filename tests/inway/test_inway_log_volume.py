"""The inway's log does not grow with the failure rate (issue 16): 200 refused requests, with
the service's backend down or the transaction log unwritable, cost a few lines that say what,
since when and how many, not one or two lines per request.

The real inway of ``test_inway_process.py`` (gunicorn, one worker, mutual TLS, SQLite log).
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from inwaytest import log_unwritable
from test_inway_process import UNREACHABLE, Setup, _fsc_error, _txid, setup

__all__ = ["setup"]  # the module's fixture, one inway for this module

pytestmark = pytest.mark.slow

REFUSED = 200


def _request(credential: str) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": "/items/1",
        "headers": {"Fsc-Authorization": credential, "Fsc-Transaction-Id": _txid()},
    }


def _lines(setup: Setup, offset: int) -> list[str]:
    return setup.inway.log()[offset:].splitlines()


@contextmanager
def _backend_at(port: int) -> Iterator[None]:
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_a_dead_backend_is_logged_as_a_state_not_per_request(setup: Setup) -> None:
    assert setup.a.source is not None
    match = re.search(rf'"{UNREACHABLE}=http://127\.0\.0\.1:(\d+)"', setup.a.source.read_text())
    assert match is not None
    offset = len(setup.inway.log())
    results = setup.call([_request(setup.tokens[UNREACHABLE]) for _ in range(REFUSED)])
    assert [_fsc_error(r) for r in results] == [(502, "ERROR_CODE_SERVICE_UNREACHABLE")] * REFUSED
    during = _lines(setup, offset)
    print(f"{len(during)} log lines for {REFUSED} refused requests:", *during, sep="\n")
    assert 1 <= len(during) <= 3, during
    assert f"service {UNREACHABLE} unreachable" in during[0]

    # The backend is back: one line says so, with the count.
    with _backend_at(int(match.group(1))):
        (result,) = setup.call([_request(setup.tokens[UNREACHABLE])])
    assert result["status"] == 200, result
    after = _lines(setup, offset)[len(during) :]
    print(*after, sep="\n")
    assert len(after) == 1, after
    assert f"{REFUSED} requests refused in all" in after[0]


def test_an_unwritable_log_is_logged_as_a_state_not_per_request(setup: Setup) -> None:
    (first,) = setup.call([_request(setup.tokens["valid"])])  # the write-ahead file exists
    assert first["status"] == 200
    offset = len(setup.inway.log())
    with log_unwritable(setup.txlog_dir):
        results = setup.call([_request(setup.tokens["valid"]) for _ in range(REFUSED)])
    assert [_fsc_error(r) for r in results] == [(500, "TRANSACTION_LOG_WRITE_ERROR")] * REFUSED
    during = _lines(setup, offset)
    print(f"{len(during)} log lines for {REFUSED} refused requests:", *during, sep="\n")
    # One line from the store (commits), one from the inway (requests refused).
    assert 1 <= len(during) <= 3, during
    assert any("was not committed" in line for line in during), during

    (again,) = setup.call([_request(setup.tokens["valid"])])
    assert again["status"] == 200, again
    after = _lines(setup, offset)[len(during) :]
    print(*after, sep="\n")
    assert 1 <= len(after) <= 2, after
    assert any(f"{REFUSED} requests refused in all" in line for line in after), after


def test_a_peer_whose_requests_are_refused_is_logged_as_a_state(setup: Setup) -> None:
    offset = len(setup.inway.log())
    results = setup.call([_request(setup.tokens["expired"]) for _ in range(REFUSED)])
    assert [_fsc_error(r) for r in results] == [(401, "ERROR_CODE_ACCESS_TOKEN_EXPIRED")] * REFUSED
    during = _lines(setup, offset)
    print(f"{len(during)} log lines for {REFUSED} refused requests:", *during, sep="\n")
    assert 1 <= len(during) <= 3, during
    assert "ERROR_CODE_ACCESS_TOKEN_EXPIRED" in during[0]

    (again,) = setup.call([_request(setup.tokens["valid"])])
    assert again["status"] == 200, again
    after = _lines(setup, offset)[len(during) :]
    print(*after, sep="\n")
    assert len(after) == 1, after
    assert f"{REFUSED} requests refused in all" in after[0]

"""The demo's sample API is shaped like a production service, so that a burst through the demo
measures the gateways and not the sample (a backlog of 5 put 1-30 s on bursts)."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from hosttools import require

from appliance.demo.gateways import start_sample_api


@pytest.fixture
def sample() -> Iterator[ThreadingHTTPServer]:
    server = start_sample_api()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_listen_backlog_takes_a_burst(sample: ThreadingHTTPServer) -> None:
    """The kernel's own figure: for a listening socket `ss` shows the backlog as Send-Q."""
    require("ss")
    port = sample.server_address[1]
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    _state, _recv_q, send_q, *_ = listing
    assert int(send_q) >= 1024


def test_connections_are_kept_alive(sample: ThreadingHTTPServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sample.server_address[1], timeout=10)
    try:
        for path in ("/api/one", "/api/two"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["path"] == path
            assert response.getheader("Connection") != "close"
            assert not response.will_close
    finally:
        connection.close()

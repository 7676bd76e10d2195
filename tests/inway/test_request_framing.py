"""Which request heads the gateways' HTTP server refuses before any app sees them.

llhttp refuses most framing errors itself; ``appliance.serving.protocol.framing_problem`` adds
what RFC 9112 forbids and llhttp lets through. The real server is tested over real
connections in tests/inway/test_inway_process.py and tests/gateway/test_chain_errors.py.
"""

from __future__ import annotations

import pytest

from appliance.serving.protocol import framing_problem

HOST = (b"host", b"inway.example")


@pytest.mark.parametrize(
    ("headers", "version", "problem"),
    [
        ([HOST, (b"transfer-encoding", b"gzip, chunked")], "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b"chunked, gzip")], "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b"identity")], "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b"chunked")] * 2, "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b"chunked")], "1.0", "not HTTP/1.1"),
        ([], "1.1", "exactly one Host"),
        ([HOST, HOST], "1.1", "exactly one Host"),
        ([], "0.9", "HTTP version 0.9"),  # "GET /": a request line without a version
        ([HOST], "2.0", "HTTP version 2.0"),
    ],
)
def test_refused(headers: list[tuple[bytes, bytes]], version: str, problem: str) -> None:
    found = framing_problem(headers, version)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        ([HOST], "1.1"),
        ([HOST, (b"transfer-encoding", b"chunked")], "1.1"),
        ([HOST, (b"transfer-encoding", b" Chunked ")], "1.1"),
        ([HOST, (b"content-length", b"5")], "1.1"),
        ([], "1.0"),  # HTTP/1.0 has no Host requirement
        ([HOST, (b"content-length", b"5")], "1.0"),
    ],
)
def test_accepted(headers: list[tuple[bytes, bytes]], version: str) -> None:
    assert framing_problem(headers, version) is None

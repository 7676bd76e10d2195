"""The pure pieces of bench/chain.py: reading wrk's output and the nginx configurations.

The benchmark itself is run by hand (speed is never asserted here); these tests keep its
building blocks honest: figures read from real ``wrk --latency`` output, and nginx
configurations that say what the benchmark claims (mutual TLS, CRLs, keep-alive) and that
nginx itself accepts.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hosttools import require


def _load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "chain.py"
    spec = importlib.util.spec_from_file_location("bench_chain", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# Real output of wrk 4.1.0 (Debian 12) against nginx and against the Sluis chain.
KEEP_ALIVE = """\
Running 3s test @ http://127.0.0.1:18080/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.75ms    4.22ms  44.51ms   91.89%
    Req/Sec    16.06k    11.78k   44.30k    81.36%
  Latency Distribution
     50%    1.30ms
     75%    3.28ms
     90%    6.15ms
     99%   23.64ms
  95768 requests in 3.04s, 15.07MB read
Requests/sec:  31490.97
Transfer/sec:      4.96MB
"""

ONE_CONNECTION = """\
Running 2s test @ http://127.0.0.1:18080/x
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   319.41us    1.89ms  28.29ms   97.19%
    Req/Sec    24.09k     5.60k   33.54k    65.00%
  Latency Distribution
     50%   33.00us
     75%   38.00us
     90%  135.00us
     99%    6.76ms
  47814 requests in 2.00s, 7.52MB read
Requests/sec:  23900.73
Transfer/sec:      3.76MB
"""

SECONDS = """\
Running 8s test @ http://127.0.0.1:45889/items/42
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   208.12ms  230.61ms   1.67s    88.20%
    Req/Sec   203.08    113.41   475.00     62.04%
  Latency Distribution
     50%  154.54ms
     75%  256.95ms
     90%  467.03ms
     99%    1.39s\x20
  2827 requests in 8.05s, 651.54KB read
Requests/sec:    351.27
Transfer/sec:     80.94KB
"""

NON_2XX = """\
Running 1s test @ http://127.0.0.1:18080/missing
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.85ms    2.97ms  33.56ms   95.30%
    Req/Sec    15.88k     8.78k   30.10k    50.00%
  Latency Distribution
     50%   79.00us
     75%  256.00us
     90%    1.80ms
     99%   17.95ms
  31656 requests in 1.03s, 11.29MB read
  Non-2xx or 3xx responses: 31656
Requests/sec:  30663.81
Transfer/sec:     10.94MB
"""

SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:18080/close
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 1.10s, 0.00B read
  Socket errors: connect 0, read 8166, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
"""


def test_keep_alive_figures() -> None:
    result = bench.parse_wrk(KEEP_ALIVE)
    assert result.requests == 95768
    assert result.seconds == pytest.approx(3.04)
    assert result.rate == pytest.approx(31490.97)
    assert result.percentiles_ms == pytest.approx({50: 1.30, 75: 3.28, 90: 6.15, 99: 23.64})
    assert (result.p50, result.p99) == (pytest.approx(1.30), pytest.approx(23.64))
    assert result.errors == 0


def test_microseconds_and_seconds_become_milliseconds() -> None:
    assert bench.parse_wrk(ONE_CONNECTION).p50 == pytest.approx(0.033)
    slow = bench.parse_wrk(SECONDS)
    assert slow.p50 == pytest.approx(154.54)
    assert slow.p99 == pytest.approx(1390.0)  # "1.39s " with wrk's trailing space
    assert bench.duration_ms("2", "m") == 120_000


def test_non_2xx_answers_are_errors() -> None:
    result = bench.parse_wrk(NON_2XX)
    assert result.non_2xx == 31656
    assert result.socket_errors == 0
    assert result.errors == 31656


def test_socket_errors_are_summed() -> None:
    result = bench.parse_wrk(SOCKET_ERRORS)
    assert result.requests == 0
    assert result.socket_errors == 8166
    assert result.socket_detail == "connect 0, read 8166, write 0, timeout 0"
    assert result.errors == 8166


def test_a_failed_wrk_is_not_a_result() -> None:
    with pytest.raises(ValueError, match="not the output of wrk"):
        bench.parse_wrk("unable to connect to 127.0.0.1:18099 Connection refused\n")


def test_wrk_argv() -> None:
    argv = bench.wrk_argv(
        "http://127.0.0.1:8080/x", threads=2, connections=64, seconds=10, headers=["A: b"]
    )
    assert argv == [
        "wrk",
        "-t2",
        "-c64",
        "-d10s",
        "--timeout",
        "30s",
        "--latency",
        "-H",
        "A: b",
        "http://127.0.0.1:8080/x",
    ]


def test_cpu_counts_what_was_spent_between_snapshots() -> None:
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 12.5, 2: 5.0, 4: 0.5}  # 3 exited (lost), 4 was born (counts whole)
    assert bench.cpu_used(before, after) == pytest.approx(3.0)


def _tls_files(directory: Path) -> Any:
    """A self-signed CA, a leaf key and chain, and an empty CRL: enough for nginx -t."""
    directory.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    files = bench.TlsFiles(
        directory / "chain.pem", directory / "key.pem", directory / "ca.pem", directory / "crl.pem"
    )
    files.chain.write_bytes(pem)
    files.trust_anchors.write_bytes(pem)
    files.crls.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def test_inway_config_requires_client_certificates(tmp_path: Path) -> None:
    tls = bench.TlsFiles(*(tmp_path / n for n in ("chain.pem", "key.pem", "ca.pem", "crl.pem")))
    text = bench.inway_http(9443, 8081, tls)
    for line in (
        "listen 127.0.0.1:9443 ssl",
        f"ssl_certificate {tmp_path / 'chain.pem'};",
        f"ssl_certificate_key {tmp_path / 'key.pem'};",
        f"ssl_client_certificate {tmp_path / 'ca.pem'};",
        "ssl_verify_client on;",
        f"ssl_crl {tmp_path / 'crl.pem'};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "server 127.0.0.1:8081;",
        "keepalive 128;",
        "proxy_pass http://backend;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ):
        assert line in text


def test_outway_config_verifies_the_inway_over_kept_connections(tmp_path: Path) -> None:
    tls = bench.TlsFiles(*(tmp_path / n for n in ("chain.pem", "key.pem", "ca.pem", "crl.pem")))
    text = bench.outway_http(8080, 9443, "b.bench.test", tls)
    assert "listen 127.0.0.1:8080 backlog" in text  # plain HTTP for the app
    assert " ssl" not in text.split("listen", 1)[1].split(";", 1)[0]
    for line in (
        "server 127.0.0.1:9443;",
        "keepalive 128;",
        "proxy_pass https://inway;",
        f"proxy_ssl_certificate {tmp_path / 'chain.pem'};",
        f"proxy_ssl_certificate_key {tmp_path / 'key.pem'};",
        f"proxy_ssl_trusted_certificate {tmp_path / 'ca.pem'};",
        "proxy_ssl_verify on;",
        "proxy_ssl_name b.bench.test;",
        "proxy_ssl_session_reuse on;",
        "proxy_ssl_protocols TLSv1.2 TLSv1.3;",
    ):
        assert line in text


def test_every_file_of_an_instance_is_under_its_prefix(tmp_path: Path) -> None:
    text = bench.nginx_config(tmp_path, bench.backend_http(8081))
    for line in ("worker_processes auto;", "daemon off;", "master_process on;"):
        assert line in text
    for directive in (
        "pid",
        "lock_file",
        "error_log",
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ):
        assert f"{directive} {tmp_path}/" in text, directive
    assert "access_log off;" in text
    assert "return 200 " in text


def test_nginx_accepts_the_configurations(tmp_path: Path) -> None:
    require("nginx")
    tls = _tls_files(tmp_path / "tls")
    try:
        for name, body in (
            ("backend", bench.backend_http(8081)),
            ("inway", bench.inway_http(9443, 8081, tls)),
            ("outway", bench.outway_http(8080, 9443, "b.bench.test", tls)),
        ):
            prefix = tmp_path / name
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(bench.nginx_config(prefix, body))
            argv = ["nginx", "-t", "-q", "-e", str(prefix / "error.log"), "-p", str(prefix)]
            checked = subprocess.run(
                [*argv, "-c", str(conf)], capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, f"{name}: {checked.stderr}"
    finally:
        tls.key.unlink()  # the suite allows no private key file but a CA's to remain

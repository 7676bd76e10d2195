"""Normal requests while 1,000 clients send their request heads a byte a second (slowloris).

Starts a real Sluis listener: organisation B (``benchorgs.py``) under gunicorn with Sluis'
master, worker and protocol, as the outway listens (plain HTTP), serving the whoami app (its
answer to a request without a client certificate is an FSC error written by the app, so every
request runs the app). Then measures, one request at a time on a new connection each, the
latency of normal clients: first alone, then while a separate process keeps 1,000 slow clients
connected, each sending ``GET / HTTP/1.1`` and header fields a byte a second and opening a new
connection when the listener closes one (after the head timeout, with 408). Prints p50/p99 and
what the slow clients were answered. Bounded: about 45 s in all.

    .venv/bin/python bench/slow_clients.py [--slow 1000] [--seconds 15] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchorgs import two_organisations

from appliance.demo.processes import Component, free_port, wait_listening
from appliance.serving.launch import ServeOptions, gunicorn_command

REQUEST = b"GET /whoami HTTP/1.1\r\nHost: b.bench.test\r\nConnection: close\r\n\r\n"
SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: b.bench.test\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"


def start_listener(config: Path, workers: int, log_dir: Path) -> Component:
    port = free_port()
    argv, env = gunicorn_command(
        ServeOptions(
            config=config,
            app="appliance.serving.whoami:create_app()",
            bind=f"127.0.0.1:{port}",
            workers=workers,
            plain_http=True,
        ),
        os.environ,
    )
    log_path = log_dir / "listener.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    component = Component("listener", process, "127.0.0.1", port, log_path)
    wait_listening(component)
    return component


def one_request(port: int) -> float:
    started = time.perf_counter()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(REQUEST)
        while data := sock.recv(65536):
            answer += data
    took = time.perf_counter() - started
    # The app's answer: no client certificate on this listener, so its FSC error.
    if not answer.startswith(b"HTTP/1.1 400") or b"PEER_CERTIFICATE" not in answer:
        raise RuntimeError(f"unexpected answer: {answer[:200]!r}")
    return took


def latencies(port: int, seconds: float) -> list[float]:
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found.append(one_request(port))
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def slow_client(port: int, stop: float, answers: Counter[str]) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            answers["connect failed"] += 1
            await asyncio.sleep(1)
            continue
        answers["connections"] += 1
        try:
            for index in range(len(SLOW_HEAD)):
                if time.monotonic() >= stop:
                    return
                writer.write(SLOW_HEAD[index : index + 1])
                try:
                    # A byte a second; whatever the listener answers ends this connection.
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    continue
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "close"
                answers[status] += 1
                break
        except OSError:
            answers["reset"] += 1
        finally:
            writer.close()


async def slow_clients(port: int, count: int, seconds: float) -> Counter[str]:
    answers: Counter[str] = Counter()
    stop = time.monotonic() + seconds
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(slow_client(port, stop, answers)))
        await asyncio.sleep(0.001)  # a ramp of about a second
    await asyncio.gather(*tasks)
    return answers


def run_slow_clients(port: int, count: int, seconds: float) -> None:
    print(json.dumps(asyncio.run(slow_clients(port, count, seconds))), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow clients (default 1000)")
    parser.add_argument("--seconds", type=float, default=15, help="each phase's length")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--slow-clients-only", type=int, help=argparse.SUPPRESS)  # port
    args = parser.parse_args()
    if args.slow_clients_only:
        run_slow_clients(args.slow_clients_only, args.slow, args.seconds + 3)
        return 0
    root = Path(tempfile.mkdtemp(prefix="sluis-slow-clients-"))
    listener = None
    try:
        _, orgs = two_organisations(root)
        config = orgs["b"].source
        assert config is not None
        listener = start_listener(config, args.workers, root)
        latencies(listener.port, 1)  # warm-up
        alone = summary(latencies(listener.port, args.seconds))
        print(f"normal clients alone:         {alone}", flush=True)
        slow = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--slow",
                str(args.slow),
                "--seconds",
                str(args.seconds),
                "--slow-clients-only",
                str(listener.port),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)  # all slow clients connected
        loaded = summary(latencies(listener.port, args.seconds))
        print(f"with {args.slow} slow clients: {loaded}", flush=True)
        out, _ = slow.communicate(timeout=60)
        print(f"slow clients' connections and answers: {out.strip()}")
        refused = listener.log().count("request refused (408)")
        print(f"listener log: {refused} heads refused with 408")
    finally:
        if listener is not None:
            listener.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

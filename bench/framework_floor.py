"""What the server stack alone costs per request, before a gateway does any work.

Runs, one after another on the same machine, three minimal HTTP servers in one process each and
drives each with wrk (keep-alive): uvicorn (httptools, uvloop) with a bare ASGI callable that
answers 200; the same with a Falcon ASGI app whose sink answers 200 (the gateways' stack);
and nginx ``return 200`` as the reference. Prints requests per second and the CPU time per
request of the server process, and the floor this sets for a chain of two such hops.

Why: bench/chain.py compares the Sluis chain with an nginx chain. Part of the gap is not the
gateways' work (tokens, the log, the proxying) but the price of every request in the server
stack itself; this shows that price on the machine at hand.

    .venv/bin/python bench/framework_floor.py [--duration 5] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain import (  # bench/ is not a package
    backend_http,
    bypass_proxy_for_loopback,
    free_port,
    parse_wrk,
    running_nginx,
    wait_port,
)

APPS = textwrap.dedent(
    """
    import falcon
    import falcon.asgi

    BODY = b'{"id": 42}'


    class Answer:
        async def __call__(self, req, resp, **params):
            resp.data = BODY


    falcon_app = falcon.asgi.App()
    falcon_app.add_sink(Answer(), prefix="")


    async def bare_app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-length", b"%d" % len(BODY))]}
        )
        await send({"type": "http.response.body", "body": BODY})
    """
)


def measure(port: int, pid: int, seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, CPU ms per request of the server process ``pid``)."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    done = subprocess.run(
        [
            "wrk",
            "--latency",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            f"http://127.0.0.1:{port}/x",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after = process.cpu_times()
    result = parse_wrk(done.stdout + done.stderr)
    cpu = (after.user - before.user) + (after.system - before.system)
    rate = result.requests / seconds
    return rate, (cpu / result.requests * 1000 if result.requests else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/setup.sh")
            return 2
    bypass_proxy_for_loopback()
    root = Path(tempfile.mkdtemp(prefix="sluis-bench-floor-"))
    (root / "floorapps.py").write_text(APPS)
    servers: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    try:
        for name, target in (
            ("uvicorn, bare ASGI", "bare_app"),
            ("uvicorn + Falcon", "falcon_app"),
        ):
            port = free_port()
            servers[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"floorapps:{target}",
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--no-proxy-headers",
                ],
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(root)},
            )
            ports[name] = port
        nginx_port = free_port()
        with running_nginx(root / "nginx", backend_http(nginx_port), nginx_port) as nginx:
            for name, port in ports.items():
                wait_port(port, lambda s=servers[name]: s.poll() is None, name)
            pids = {**{n: s.pid for n, s in servers.items()}, "nginx return 200": nginx.pid}
            ports["nginx return 200"] = nginx_port
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ports}
            for name in ports:  # warm-up
                measure(ports[name], pids[name], 1, args.connections)
            for _ in range(args.rounds):
                for name in ports:
                    samples[name].append(
                        measure(ports[name], pids[name], args.duration, args.connections)
                    )
                    time.sleep(0.2)
            # nginx runs its workers as children: its master's CPU is near zero.
            print(
                f"# {os.cpu_count()} cores; wrk -t1 -c{args.connections}, keep-alive, "
                f"{args.rounds} x {args.duration:g} s, medians; one server process each "
                "(nginx: CPU of the master only, so '-')"
            )
            print(f"{'server':22} {'req/s':>9} {'CPU ms/req':>11}")
            rates: dict[str, float] = {}
            for name, runs in samples.items():
                rate = statistics.median(r for r, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                rates[name] = rate
                shown = "-" if name.startswith("nginx") else f"{cpu:.3f}"
                print(f"{name:22} {rate:9,.0f} {shown:>11}")
            falcon_rate = rates["uvicorn + Falcon"]
            bare_rate = rates["uvicorn, bare ASGI"]
            print(
                f"Falcon adds {1000 / falcon_rate - 1000 / bare_rate:.3f} ms per request over "
                f"bare ASGI at saturation; a chain of two such hops doing nothing else "
                f"tops out near {falcon_rate / 2:,.0f} req/s on this machine"
            )
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

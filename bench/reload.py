"""What a reload costs the clients: Sluis' side-by-side reload versus gunicorn's own, side by side.

Provisions one organisation (demo CA, its key in SoftHSM) and runs its mutual-TLS whoami
listener under gunicorn, once with Sluis' master (``appliance.serving.gunicorn_main``, what
``sluis serve`` runs) and once with gunicorn's own (``-m gunicorn``), everything else equal. A
client process with a second organisation's HSM key opens a new mutual-TLS connection every
``--interval`` seconds, whatever happened to the ones before, and times each request to its
answer; meanwhile the master gets ``--reloads`` HUPs. New workers log in to the token and build
their TLS context before they accept: with gunicorn's reload nobody accepts meanwhile, and the
requests of that moment wait. Printed per master: requests, failures, the longest wait and how
many waited over 0.5 s.

    .venv/bin/python bench/reload.py [--reloads 5] [--every 4] [--interval 0.02] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchorgs import SERVER_NAME, two_organisations

from appliance.config import load_config
from appliance.demo.processes import Component, free_port, wait_listening
from appliance.serving.gunicorn_main import MODULE as SLUIS_MASTER
from appliance.serving.launch import ServeOptions, gunicorn_command

WHOAMI = "appliance.serving.whoami:create_app()"
SLOW = 0.5  # seconds: a request that waited longer saw the reload


def start_listener(config: Path, master: str, workers: int, log_dir: Path) -> Component:
    """``sluis serve whoami`` as the unit runs it, with ``master`` as the gunicorn runner."""
    port = free_port()
    argv, env = gunicorn_command(
        ServeOptions(config=config, app=WHOAMI, bind=f"127.0.0.1:{port}", workers=workers),
        os.environ,
    )
    argv[argv.index(SLUIS_MASTER)] = master
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"listener-{master}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    listener = Component(master, process, "127.0.0.1", port, log_path)
    wait_listening(listener)
    time.sleep(2)  # every worker up, not only the first
    return listener


def measure(
    client: Path, server: Path, master: str, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    listener = start_listener(server, master, args.workers, logs)
    try:
        sluis = load_config(client)
        duration = args.reloads * args.every + 3
        traffic = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                str(client),
                "--port",
                str(listener.port),
                "--duration",
                str(duration),
                "--interval",
                str(args.interval),
            ],
            env={
                **os.environ,
                "OPENSSL_CONF": str(sluis.tls.openssl_conf),
                **sluis.hsm.environment(),
            },
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)  # the client's own HSM login and first requests
        for _ in range(args.reloads):
            listener.process.send_signal(signal.SIGHUP)
            time.sleep(args.every)
        out, _ = traffic.communicate(timeout=duration + 60)
        return json.loads(out)  # type: ignore[no-any-return]
    finally:
        listener.stop()


async def traffic(port: int, duration: float, interval: float, client: Path) -> dict[str, Any]:
    from appliance.tls.context import client_context  # after OPENSSL_CONF is set

    sluis = load_config(client)
    ctx = client_context(sluis.tls, sluis.hsm)
    waits: list[float] = []
    failures: dict[str, int] = {}

    async def one() -> None:
        began = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME),
                30,
            )
            writer.write(
                f"GET /whoami HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode()
            )
            data = await asyncio.wait_for(reader.read(), 30)
            if not data.startswith(b"HTTP/1.1 200 "):
                raise ValueError(f"answer {data[:40]!r}")
            waits.append(time.monotonic() - began)
        except Exception as exc:  # every kind of failure is counted, none ends the run
            key = f"{type(exc).__name__}: {exc}"[:120]
            failures[key] = failures.get(key, 0) + 1
        finally:
            if writer is not None:
                writer.close()

    tasks = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(interval)
    await asyncio.gather(*tasks)
    waits.sort()
    return {
        "requests": len(tasks),
        "ok": len(waits),
        "failed": sum(failures.values()),
        "failures": failures,
        "longest": waits[-1] if waits else None,
        "p99": waits[int(len(waits) * 0.99) - 1] if waits else None,
        "slow": sum(1 for w in waits if w > SLOW),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between two reloads")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between requests")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:  # the traffic process (started by main below)
        report = asyncio.run(traffic(args.port, args.duration, args.interval, args.client))
        print(json.dumps(report))
        return 0

    root = Path(tempfile.mkdtemp(prefix="sluis-bench-"))
    try:
        _, orgs = two_organisations(root)
        client, server = orgs["a"].source, orgs["b"].source
        assert client is not None
        assert server is not None
        print(
            f"# {args.reloads} reloads, one every {args.every:g} s; a new mutual-TLS connection "
            f"every {args.interval * 1000:g} ms; {args.workers} workers, keys in SoftHSM; "
            f"{os.cpu_count()} cores shared by all"
        )
        rows = {}
        for label, master in (("Sluis (side by side)", SLUIS_MASTER), ("gunicorn", "gunicorn")):
            report = measure(client, server, master, args, root / "logs")
            rows[label] = report
            print(
                f"{label:22s} requests {report['requests']:5d}  failed {report['failed']:3d}  "
                f"longest wait {report['longest']:.3f} s  p99 {report['p99']:.3f} s  "
                f"over {SLOW:g} s: {report['slow']}"
                + (f"  failures {report['failures']}" if report["failures"] else "")
            )
        sluis, plain = rows["Sluis (side by side)"], rows["gunicorn"]
        print(f"longest wait, gunicorn / Sluis: {plain['longest'] / sluis['longest']:.1f}x")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

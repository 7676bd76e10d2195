"""Continuous load for the rotate scenario: GET requests through the outway, counted.

Every request is a new connection (an application that keeps none open), paced to --rate
requests per second over --concurrency threads. A request counts as ok only when the answer
is 200 with the expected body; anything else (status, body, connection error, timeout) is a
failure, kept with its time and what went wrong. The counts are written to --state (JSON,
replaced atomically) every second and once more at SIGTERM. With --txids, the
Fsc-Transaction-Id of every right answer is appended to that file, one a line, so that a
test can look for each of them in the transaction logs afterwards (records lost: 0).
"longest_gap" is the longest time between two right answers (how long the service was
away for a client that kept asking), from the first right answer on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import threading
import time
import urllib.parse
from typing import Any

stop = threading.Event()
lock = threading.Lock()
counts: dict[str, Any] = {
    "ok": 0,
    "failed": 0,
    "failures": [],
    "slowest": 0.0,  # seconds, of any request
    "over_1s": 0,  # requests that took longer than a second (a stall short of a failure)
    "longest_gap": 0.0,  # seconds between two right answers
    "started": time.time(),
}
last_ok: list[float] = []  # the monotonic time of the last right answer (empty: none yet)
txids: list[str] = []  # the right answers' transaction ids not written yet


def one(url: urllib.parse.SplitResult, expect: bytes, timeout: float) -> str | None:
    """None when the answer is right, else what was wrong. A right answer's transaction id
    goes to txids."""
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout)
    try:
        conn.request("GET", url.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or body != expect:
            code = resp.getheader("Fsc-Error-Code", "")
            return f"status {resp.status} {code} {body[:200]!r}"
        txid = resp.getheader("Fsc-Transaction-Id", "")
        with lock:
            txids.append(txid)
        return None
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def worker(url: urllib.parse.SplitResult, expect: bytes, interval: float, timeout: float) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        began = time.monotonic()
        problem = one(url, expect, timeout)
        took = time.monotonic() - began
        with lock:
            counts["slowest"] = max(counts["slowest"], took)
            counts["over_1s"] += took > 1.0
            if problem is None:
                counts["ok"] += 1
                now = time.monotonic()
                if last_ok:
                    counts["longest_gap"] = max(counts["longest_gap"], now - last_ok[0])
                    last_ok[0] = now
                else:
                    last_ok.append(now)
            else:
                counts["failed"] += 1
                if len(counts["failures"]) < 200:
                    counts["failures"].append({"at": time.time(), "problem": problem})
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def write_state(path: str, txids_path: str | None) -> None:
    with lock:
        data = json.dumps({**counts, "written": time.time()})
        done = txids[:]
        txids.clear()
    if txids_path:
        # before the counts: a count never covers an id that is not in the file yet
        with open(txids_path, "a", encoding="utf-8") as out:
            out.writelines(f"{txid}\n" for txid in done)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(data)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--expect", required=True, help="the exact body of a right answer")
    parser.add_argument("--state", required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second, in all")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--txids", help="append each right answer's transaction id here")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    expect = args.expect.encode()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [
        threading.Thread(
            target=worker,
            args=(url, expect, args.concurrency / args.rate, args.timeout),
            daemon=True,
        )
        for _ in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(1.0):
        write_state(args.state, args.txids)
    for thread in threads:
        thread.join(args.timeout + 5)
    write_state(args.state, args.txids)


if __name__ == "__main__":
    main()

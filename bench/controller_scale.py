"""How the controller's pages and API listings scale with the contracts in the store.

Peer B's controller (the test suite's in-process controller on a real Manager service and
SQLite stores, ``tests/controller/controllertest.py``) with its service published and one
connection of Peer A made valid the normal way (signed, received, accepted). That contract is
then copied into the Manager's tables in bulk, each copy with its own iv, creation time and
content hash and the same (stored, verified) signatures, up to 10, 1,000, 10,000 and 100,000
contracts; a sixth of them wait for B's approval (only A's signature). Each listing is asked
``--repeat`` times in a row; the median is printed.

    python bench/controller_scale.py                # 10, 1,000, 10,000, 100,000
    python bench/controller_scale.py --sizes 10 1000 --repeat 3

A listing whose first answer takes longer than ``--give-up`` seconds is not asked again at
that size or any larger one (the figures before keyset paging: 18 s at 10,000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in ("tests/controller", "tests/manager/contracts", "tests/manager/api"):
    sys.path.insert(0, str(ROOT / folder))

from bulk import add_copies  # noqa: E402
from contracttest import OIN_A, make_group  # noqa: E402
from controllertest import SERVICE, Env, controller_env  # noqa: E402

from appliance.controller.roles import Role  # noqa: E402
from appliance.manager.contracts.signatures import SignatureType  # noqa: E402

LISTINGS = (
    ("overview page", "/"),
    ("contracts page", "/contracts"),
    ("services page", "/services"),
    ("API overview", "/api/v1/overview"),
    ("API contracts", "/api/v1/contracts"),
    ("API contracts ?state=proposed", "/api/v1/contracts?state=proposed"),
    ("API contracts ?pending=true", "/api/v1/contracts?pending=true"),
    ("API contracts ?peer_id=A", f"/api/v1/contracts?peer_id={OIN_A}"),
    ("API services", "/api/v1/services"),
)


def timed(env: Env, path: str, repeat: int, give_up: float) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``repeat`` sequential requests (one only if it was
    slow). The CPU time is this process's (the controller runs in it): on a busy machine the
    wall time says more about the neighbours than about the controller."""
    auth = env.as_role(Role.AUDITOR, csrf=False)
    wall, cpu = [], []
    for _ in range(repeat):
        begun, begun_cpu = time.perf_counter(), time.process_time()
        result = env.client.simulate_get(path, **auth)
        elapsed = time.perf_counter() - begun
        cpu.append((time.process_time() - begun_cpu) * 1000)
        assert result.status_code == 200, (path, result.status_code, result.text[:300])
        wall.append(elapsed * 1000)
        if elapsed > give_up:
            break
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5, help="requests per listing and size")
    parser.add_argument(
        "--give-up", type=float, default=10.0, help="seconds; slower listings stop there"
    )
    args = parser.parse_args()
    group = make_group()
    with (
        tempfile.TemporaryDirectory() as tmp,
        controller_env(group, group.ca.crls(), Path(tmp)) as env,
    ):
        env.published(SERVICE)
        template = env.connection_from_a()
        env.controller.manager.sign(template, SignatureType.ACCEPT)
        assert env.service.get(template).state == "valid"
        have = 2  # the publication and the template
        given_up: set[str] = set()
        figures: dict[str, dict[int, tuple[float, float] | None]] = {n: {} for n, _ in LISTINGS}
        for size in sorted(args.sizes):
            begun = time.perf_counter()
            add_copies(env, template, have - 2, size - have)
            have = size
            print(f"# {size:,} contracts (added in {time.perf_counter() - begun:.1f} s)")
            for name, path in LISTINGS:
                if name in given_up:
                    figures[name][size] = None
                    continue
                wall, cpu = timed(env, path, args.repeat, args.give_up)
                figures[name][size] = (wall, cpu)
                print(f"  {name:32} {wall:10.1f} ms  (CPU {cpu:.1f} ms)", flush=True)
                if wall > args.give_up * 1000:
                    given_up.add(name)
        sizes = sorted(args.sizes)
        load = os.getloadavg()[0]
        print(f"\nmedian ms, wall (CPU), sequential requests, in-process; load average {load:.1f}")
        print(f"{'listing':32}" + "".join(f"{size:>18,}" for size in sizes))
        for name, by_size in figures.items():
            cells = (by_size.get(size) for size in sizes)
            print(
                f"{name:32}"
                + "".join(f"{'-' if v is None else f'{v[0]:.1f} ({v[1]:.1f})':>18}" for v in cells)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How the controller's pages and API listings scale with the contracts in the store.

Peer B's controller (the test suite's in-process controller on a real Manager service,
``tests/controller/controllertest.py``) with its service published and one connection of
Peer A made valid the normal way (signed, received, accepted). That contract is then copied
into the Manager's tables in bulk, each copy with its own iv, creation time and content hash
and the same (stored, verified) signatures, up to 10, 1,000, 10,000 and 100,000 contracts; a
sixth of them wait for B's approval (only A's signature). Each listing is asked ``--repeat``
times in a row; the median is printed, with the load average at that moment (a figure taken
on a busy machine says more about the neighbours than about the controller).

The Manager store is SQLite, then PostgreSQL (``--backends``): for PostgreSQL the two
contracts are copied into a private cluster (``tests/postgres.py``; or the server of
``SLUIS_TEST_POSTGRES_URL``), the controller is pointed at it and the copies are added there,
with ANALYZE after each batch (what autovacuum does on a running server).

    python bench/controller_scale.py                # 10, 1,000, 10,000, 100,000; both
    python bench/controller_scale.py --sizes 10 1000 --repeat 3 --backends sqlite
    python bench/controller_scale.py --explain      # and each listing's query plans

A listing whose first answer takes longer than ``--give-up`` seconds is not asked again at
that size or any larger one (the figures before keyset paging: 18 s at 10,000).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
for folder in ("tests", "tests/controller", "tests/manager/contracts", "tests/manager/api"):
    sys.path.insert(0, str(ROOT / folder))

from bulk import add_copies, copy_tables  # noqa: E402
from contracttest import OIN_A, Group, make_group  # noqa: E402
from controllertest import SERVICE, Env, controller_env  # noqa: E402
from postgres import POSTGRES_ENV, _private_cluster  # noqa: E402
from queryplans import plan_rows, statements_of  # noqa: E402

from appliance.controller.listing import ContractListing  # noqa: E402
from appliance.controller.roles import Role  # noqa: E402
from appliance.manager.contracts.signatures import SignatureType  # noqa: E402
from appliance.manager.storage import ManagerStore  # noqa: E402

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


# The listings whose statements are explained with --explain.
EXPLAINED = (
    "overview page",
    "contracts page",
    "API contracts ?state=proposed",
    "API contracts ?pending=true",
    "API contracts ?peer_id=A",
)


def load() -> float:
    return os.getloadavg()[0]


def print_plans(engine: sa.Engine, statements: list[tuple[str, Any]]) -> None:
    """Each statement's query plan on ``engine`` (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's
    EXPLAIN)."""
    for statement, parameters in statements:
        plan = [" | ".join(str(v) for v in row) for row in plan_rows(engine, statement, parameters)]
        print("      " + statement.split("FROM", 1)[0][:60].replace("\n", " ") + "...")
        for line in plan:
            print("        " + (line if len(line) < 150 else line[:147] + "..."))


def explain(env: Env, path: str) -> None:
    """The plans of the statements one request of ``path`` runs on the Manager's store."""
    auth = env.as_role(Role.AUDITOR, csrf=False)
    engine = env.service.store.engine
    print_plans(engine, statements_of(engine, lambda: env.client.simulate_get(path, **auth)))


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    given = os.environ.get(POSTGRES_ENV)
    if given:
        yield given
        return
    with _private_cluster() as url:
        yield url


@contextlib.contextmanager
def scale_env(group: Group, backend: str) -> Iterator[tuple[Env, str]]:
    """Peer B's controller on ``backend`` with its service published and one connection of
    Peer A valid (the template for :func:`bulk.add_copies`): the environment and the
    template's content hash. Also used by bench/growth.py."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        env = stack.enter_context(controller_env(group, group.ca.crls(), Path(tmp)))
        env.published(SERVICE)
        template = env.connection_from_a()
        env.controller.manager.sign(template, SignatureType.ACCEPT)
        assert env.service.get(template).state == "valid"
        if backend == "postgresql":
            target = stack.enter_context(ManagerStore.open(stack.enter_context(postgres())))
            copy_tables(env.service.store.engine, target.engine)
            env.service.store = target
            manager = env.controller.manager
            manager.listing = ContractListing(target.engine, manager.peer_id)
        yield env, template


def run(
    env: Env,
    backend: str,
    template: str,
    args: argparse.Namespace,
    figures: dict[str, dict[int, tuple[float, float, float] | None]],
) -> None:
    have = 2  # the publication and the template
    given_up: set[str] = set()
    for size in sorted(args.sizes):
        begun = time.perf_counter()
        add_copies(env, template, have - 2, size - have)
        if backend == "postgresql":
            with env.service.store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
        have = size
        print(f"# {backend}: {size:,} contracts (added in {time.perf_counter() - begun:.1f} s)")
        for name, path in LISTINGS:
            if name in given_up:
                figures[name][size] = None
                continue
            wall, cpu = timed(env, path, args.repeat, args.give_up)
            figures[name][size] = (wall, cpu, load())
            print(f"  {name:32} {wall:10.1f} ms  (CPU {cpu:.1f} ms, load {load():.2f})", flush=True)
            if args.explain and size == max(args.sizes) and name in EXPLAINED:
                explain(env, path)
            if wall > args.give_up * 1000:
                given_up.add(name)


def table(backend: str, sizes: list[int], figures: dict[str, Any]) -> None:
    print(f"\n{backend}: median ms, wall (CPU) [load average], sequential requests, in-process")
    print(f"{'listing':32}" + "".join(f"{size:>24,}" for size in sizes))
    for name, by_size in figures.items():
        cells = (by_size.get(size) for size in sizes)
        print(
            f"{name:32}"
            + "".join(
                f"{'-' if v is None else f'{v[0]:.1f} ({v[1]:.1f}) [{v[2]:.1f}]':>24}"
                for v in cells
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5, help="requests per listing and size")
    parser.add_argument(
        "--give-up", type=float, default=10.0, help="seconds; slower listings stop there"
    )
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--explain", action="store_true", help="query plans at the largest size")
    args = parser.parse_args()
    group = make_group()
    sizes = sorted(args.sizes)
    for backend in args.backends:
        figures: dict[str, dict[int, Any]] = {n: {} for n, _ in LISTINGS}
        with scale_env(group, backend) as (env, template):
            run(env, backend, template, args, figures)
        table(backend, sizes, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

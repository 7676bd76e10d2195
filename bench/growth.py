"""Cost growth: what each lookup, page and write costs as the Group and its log grow.

Two parts, each on SQLite and on PostgreSQL (``--backends``), through the real code (the
Falcon apps in-process, the real stores and queries), the way ``bench/controller_scale.py``
does; its environment (``scale_env``: Peer B's controller and Manager, Peer A's valid
connection as template) and its helpers are used here, not copied.

Contracts, at 10, 1,000, 10,000 and 100,000 (``--sizes``): copies of the template written
straight into the Manager's tables (``tests/controller/bulk.py``), with peers and directory
listings to match (one peer and one published service per ten contracts, at least a page).
Pages are asked with ``limit=10`` where the API takes one, so that a page is full at every
size and the figures compare (a page of 100 costs more than a page of 9 at any size).
Measured:

- the outway's grant refresh (``StoreGrants.table``, what a worker does every 5 s) when
  nothing changed and after one contract's state changed (an accept or a revocation stored,
  not timed), a worker's first whole read, and its lookup of one grant hash in what it read
  (``by_grant_hash``, once per request);
- the Manager's ``GET /v1/contracts`` first page and ``POST /v1/token`` (as Peer A);
- the directory's ``GET /v1/services`` first page;
- the controller's contracts and overview pages.

Transaction log records, at 0 and 1,000,000 (``--records``; 10,000,000 takes about ten
times as long to load): rows bulk-loaded in one transaction (executemany on SQLite, COPY on
PostgreSQL), not through the writer; one in ten names Peer A as outway. Measured:

- write latency under load (``--writers`` concurrent writers through ``TransactionLog.write``
  for ``--write-seconds``): median and 99th percentile, and records a second;
- ``GET /v1/logs`` as Peer A: the first page, and a deep page (the cursor of the record
  halfway through the log);
- the controller's transaction log page (first page, and deep: the same cursor);
- the export (``appliance.txlog.export``): records a second over the last 100,000 records.

And the process's resident memory (VmRSS) after each size: the apps run in this process,
so it is what a worker holding them would hold (an upper bound: the bench holds more).

Each figure is the median of ``--repeat`` sequential runs, with the load average at that
moment. The last column is the figure at the largest size over the smallest; ``FAIL`` marks
one above 2 (the target), ``-`` one not measured (slower than ``--give-up`` seconds at a
smaller size).

    python bench/growth.py                                   # everything, both backends
    python bench/growth.py --sizes 10 1000 --records 0 100000 --backends sqlite
    python bench/growth.py --parts log --records 0 1000000 --explain
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon.testing
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import controller_scale as scale  # first: it puts the tests' helpers on sys.path
from apitest import PeerInjector, address_of, build_app, peer_headers
from bulk import add_copies
from contracttest import GROUP_ID, OIN_A, OIN_B, Group, make_group
from controllertest import SERVICE, Env, identity

from appliance.controller.roles import Role
from appliance.controller.transactions import TransactionFilter, TransactionReader
from appliance.manager.service import ManagerService
from appliance.manager.storage import schema as t
from appliance.manager.storage import states
from appliance.outway.grants import CachedGrants, Route, StoreGrants, by_grant_hash
from appliance.outway.tokens import TokenCache
from appliance.serving.app import create_base_app
from appliance.serving.fsc_errors import ErrorDomain
from appliance.tls.peer import PeerIdentity
from appliance.txlog import schema as txs
from appliance.txlog.api import add_log_routes
from appliance.txlog.export import export_engine, write_cursor
from appliance.txlog.record import (
    Destination,
    Direction,
    LogRecord,
    Source,
    new_transaction_id,
)
from appliance.txlog.store import TransactionLog

Figure = tuple[float, float | None, float] | None  # value, CPU ms, load; None: not measured
Table = dict[str, dict[int, Figure]]
PEERS_PER_CONTRACT = 0.1  # one peer and one published service per ten contracts
PUBLICATION = "GRANT_TYPE_SERVICE_PUBLICATION"
OTHER_PEERS = 10  # the log's outways: Peer A and nine others
EXPORT_TAIL = 100_000
LOAD_BATCH = 50_000
PAGE = 10  # a page that is full at every size, so that its figures compare
LOG_START = datetime(2025, 1, 1, tzinfo=UTC)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_ms(
    action: Callable[[], object],
    repeat: int,
    give_up: float,
    setup: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``repeat`` runs of ``action`` (one if it was slow),
    each after ``setup`` (not timed). The CPU time is this process's, where the apps run: on
    a busy machine it says more about the code than the wall time, which also holds the
    neighbours' share of the cores."""
    wall, cpu = [], []
    for _ in range(repeat):
        if setup is not None:
            setup()
        begun, begun_cpu = time.perf_counter(), time.process_time()
        action()
        cpu.append((time.process_time() - begun_cpu) * 1000)
        wall.append((time.perf_counter() - begun) * 1000)
        if wall[-1] > give_up * 1000:
            break
    return statistics.median(wall), statistics.median(cpu)


class Measures:
    """One table of figures: each measure at each size, and the ones given up on."""

    def __init__(self, title: str, unit: str, args: argparse.Namespace, *, cpu: bool) -> None:
        self.title, self.unit, self.args = title, unit, args
        # The CPU time holds the database's work only where it runs in this process (SQLite);
        # a PostgreSQL server's share shows in the wall time alone.
        self.cpu_ratio = cpu
        self.figures: Table = {}
        self.given_up: set[str] = set()

    def take(
        self,
        name: str,
        size: int,
        action: Callable[[], object],
        setup: Callable[[], object] | None = None,
    ) -> None:
        if name in self.given_up:
            self.figures.setdefault(name, {})[size] = None
            print(f"  {name:40} given up", flush=True)
            return
        wall, cpu = median_ms(action, self.args.repeat, self.args.give_up, setup)
        self.put(name, size, wall, cpu=cpu)
        if wall > self.args.give_up * 1000:
            self.given_up.add(name)

    def put(
        self, name: str, size: int, value: float, unit: str | None = None, cpu: float | None = None
    ) -> None:
        self.figures.setdefault(name, {})[size] = (value, cpu, scale.load())
        spent = "" if cpu is None else f", CPU {cpu:.2f} ms"
        print(
            f"  {name:40} {value:12.2f} {unit or self.unit}  (load {scale.load():.2f}{spent})",
            flush=True,
        )

    def print(self, sizes: list[int], higher_is_better: frozenset[str] = frozenset()) -> None:
        print(
            f"\n{self.title}: median {self.unit}, wall (CPU) [load average]; the ratio is the "
            f"largest size's over the smallest's, of the {'CPU' if self.cpu_ratio else 'wall'} "
            "time"
        )
        print(f"{'measure':40}" + "".join(f"{size:>28,}" for size in sizes) + f"{'ratio':>12}")
        for name, by_size in self.figures.items():
            cells = [by_size.get(size) for size in sizes]
            line = f"{name:40}" + "".join(f"{_cell(v):>28}" for v in cells)
            first, last = cells[0], cells[-1]
            if first is None or last is None:
                verdict = "-"
            else:
                use_cpu = self.cpu_ratio and first[1] and last[1]
                a, b = (first[1], last[1]) if use_cpu else (first[0], last[0])
                if a <= 0 or b <= 0:
                    verdict = "n/a"
                else:
                    ratio = a / b if name in higher_is_better else b / a
                    verdict = f"{ratio:.2f}" + (" FAIL" if ratio > 2 else "")
            print(line + f"{verdict:>12}")


def _cell(figure: Figure) -> str:
    if figure is None:
        return "-"
    value, cpu, at = figure
    return f"{value:.2f}" + ("" if cpu is None else f" ({cpu:.2f})") + f" [{at:.1f}]"


# --- contracts -----------------------------------------------------------------------------------


def outway_of_a(env: Env) -> ManagerService:
    """Peer A's view of the same store: what A's outway workers build (its chain, its key)."""
    group, service = env.group, env.service
    settings = replace(service.settings, peer_name="Organisatie 01", address=address_of(OIN_A))
    return ManagerService(
        settings=settings,
        store=service.store,
        own_chain=list(group[OIN_A].chain),
        trust_anchors=service.trust_anchors,
        crls=service.crls,
        signer=group[OIN_A].signer,
        clock=service.clock,
    )


class InProcessManager:
    """The outway's token fetcher, with the provider's Manager called in this process (the
    real ``issue_token``) instead of over mutual TLS."""

    def __init__(self, manager: ManagerService, client: PeerIdentity) -> None:
        self._manager, self._client = manager, client

    async def fetch(self, route: Route) -> str:
        return self._manager.issue_token(route.grant_hash, self._client.peer_id, self._client)


def add_listings(env: Env, template: str, start: int, count: int) -> None:
    """``count`` more peers, each with one published service in the directory's listing."""
    now = datetime.now(UTC)
    peers = [f"{900_000_000 + n:020d}" for n in range(start, start + count)]
    with env.service.store.engine.begin() as conn:
        for first in range(0, len(peers), LOAD_BATCH):
            chunk = peers[first : first + LOAD_BATCH]
            conn.execute(
                t.peers.insert(),
                [
                    {
                        "peer_id": p,
                        "name": f"Organisatie {p[-6:]}",
                        "manager_address": f"https://manager-{p[-6:]}.test.example:8443",
                        "updated_at": now,
                    }
                    for p in chunk
                ],
            )
            conn.execute(
                t.services.insert(),
                [
                    {
                        "peer_id": p,
                        "service_name": f"dienst-{p[-6:]}",
                        "contract_hash": template,
                        "protocol": "PROTOCOL_TCP_HTTP_1.1",
                        "created_at": now,
                    }
                    for p in chunk
                ],
            )


def unique_grant_hashes(env: Env, template: str) -> None:
    """Copies keep the template's grant hash column (``bulk.add_copies`` copies the grant
    rows); in a real Group every contract's grants have their own hash (the iv is in it).
    Give each copy's grants a hash of their own, so that ``grant_hash`` lookups find the one
    contract they would find in a real store."""
    g = t.grants.c
    with env.service.store.engine.begin() as conn:
        own = list(
            conn.execute(sa.select(g.grant_hash).where(g.contract_hash == template)).scalars()
        )
        conn.execute(
            t.grants.update()
            .where(g.contract_hash != template, g.grant_hash.in_(own))
            .values(grant_hash=g.grant_hash + "~" + sa.func.substr(g.contract_hash, 7, 16))
        )


def analyze(engine: sa.Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))


def contracts_part(group: Group, backend: str, args: argparse.Namespace) -> None:
    table = Measures(f"{backend}: contracts", "ms", args, cpu=backend == "sqlite")
    with scale.scale_env(group, backend) as (env, template):
        store = env.service.store
        if not store.list_services(peer_id=OIN_B):  # bulk.copy_tables copies no services
            (publication,) = store.list_contracts(grant_type=PUBLICATION, limit=1)
            store.put_service(OIN_B, SERVICE, publication.content_hash, "PROTOCOL_TCP_HTTP_1.1")
        manager = falcon.testing.TestClient(build_app(env.service))
        as_a = peer_headers(group[OIN_A])
        grant = env.service.get(template).grant_hashes[0]
        token_form = f"grant_type=client_credentials&scope={grant}&client_id={OIN_A}"
        token_headers = as_a | {"Content-Type": "application/x-www-form-urlencoded"}
        cached = CachedGrants(StoreGrants(outway_of_a(env)), max_age=float("inf"))
        route = Route(grant, OIN_B, SERVICE)
        tokens = TokenCache(
            InProcessManager(env.service, identity(group, OIN_A)),
            group_id=GROUP_ID,
            clock=lambda: env.service.clock().timestamp(),  # the Manager's fixed test time
        )
        auditor = env.as_role(Role.AUDITOR, csrf=False)
        have, listed = 2, 0
        for size in sorted(args.sizes):
            begun = time.perf_counter()
            add_copies(env, template, have - 2, size - have)
            wanted = max(PAGE, int(size * PEERS_PER_CONTRACT))
            add_listings(env, template, listed, wanted - listed)
            unique_grant_hashes(env, template)
            analyze(env.service.store.engine)
            have, listed = size, wanted
            print(
                f"# {backend}: {size:,} contracts, {listed:,} peers and services "
                f"(added in {time.perf_counter() - begun:.1f} s)",
                flush=True,
            )

            def get(client: falcon.testing.TestClient, path: str, **kw: Any) -> None:
                result = client.simulate_get(path, **kw)
                assert result.status_code == 200, (path, result.status_code, result.text[:300])

            def token() -> None:
                result = manager.simulate_post("/v1/token", body=token_form, headers=token_headers)
                assert result.status_code == 200, result.text[:300]

            def refresh() -> None:
                cached._read_at = None  # read again, as a worker does every ROUTES_MAX_AGE
                cached.table()

            def change_one() -> None:
                # What an accept, reject or revocation does to the store: the state columns
                # of one contract recomputed, with the next change number (the worker takes
                # that contract's routes out of its table and puts them back).
                with store.engine.begin() as conn:
                    states.refresh(conn, [template])

            def fetch() -> None:
                tokens.forget(grant)
                asyncio.run(tokens.token(route))

            refresh()  # the copies just added, read once (a worker follows every change)
            table.take("outway grant refresh (no change)", size, refresh)
            table.take("outway grant refresh (one changed)", size, refresh, setup=change_one)
            table.take(
                "outway first read (a worker starts)",
                size,
                lambda: StoreGrants(outway_of_a(env)).table(),
            )
            if table.figures["outway grant refresh (no change)"][size] is not None:
                last = cached.table().routes[-1].grant_hash  # the last one read
                table.take(
                    "outway grant lookup (by_grant_hash)",
                    size,
                    lambda last=last: by_grant_hash(cached, last),
                )
            table.take("outway token fetch (miss)", size, fetch)
            table.take("outway token (cached)", size, lambda: asyncio.run(tokens.token(route)))
            table.take(
                f"Manager GET /v1/contracts?limit={PAGE}",
                size,
                lambda: get(manager, "/v1/contracts", headers=as_a, params={"limit": PAGE}),
            )
            table.take("Manager POST /v1/token", size, token)
            table.take(
                f"directory GET /v1/services?limit={PAGE}",
                size,
                lambda: get(manager, "/v1/services", headers=as_a, params={"limit": PAGE}),
            )
            table.take(
                "controller contracts page", size, lambda: get(env.client, "/contracts", **auditor)
            )
            table.take("controller overview page", size, lambda: get(env.client, "/", **auditor))
            table.put("memory (VmRSS)", size, rss_mib(), "MiB")
    table.print(sorted(args.sizes))


# --- the transaction log -------------------------------------------------------------------------


def outway(n: int) -> str:
    return OIN_A if n % OTHER_PEERS == 0 else f"{800_000_000 + n % OTHER_PEERS:020d}"


def log_rows(start: int, count: int) -> Iterator[tuple[Any, ...]]:
    """Incoming records to B, one a millisecond from :data:`LOG_START`, in table order."""
    for n in range(start, start + count):
        yield (
            str(uuid.UUID(int=n + 1, version=4)),
            "DIRECTION_INCOMING",
            "$1$4$grant-" + str(n % 97),
            "basisregistratie",
            outway(n),
            None,
            OIN_B,
            None,
            LOG_START + timedelta(milliseconds=n),
            "verwerking-1",
            None,
            None,
        )


# The columns bulk_load fills, in log_rows' order (no chain: as before the chain began).
LOG_COLUMNS = (*txs.FSC_FIELDS, "created_at", *txs.PURPOSE_FIELDS)


def bulk_load(engine: sa.Engine, start: int, count: int) -> None:
    """``count`` records in one transaction, without the chain (as records stored before the
    chain began), straight into the table."""
    if count <= 0:
        return
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        if engine.dialect.name == "sqlite":
            columns = ", ".join(LOG_COLUMNS)
            marks = ", ".join("?" for _ in LOG_COLUMNS)
            cursor = raw.cursor()
            cursor.executemany(
                f"INSERT INTO txlog_records ({columns}) VALUES ({marks})",  # noqa: S608  constants
                (
                    (*row[:8], row[8].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[9:])
                    for row in log_rows(start, count)
                ),
            )
        else:
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY txlog_records ({', '.join(LOG_COLUMNS)}) FROM STDIN") as copy,
            ):
                for row in log_rows(start, count):
                    copy.write_row(row)


def write_under_load(
    log: TransactionLog, writers: int, seconds: float
) -> tuple[float, float, float]:
    """Median and 99th percentile latency (ms) of ``writers`` concurrent writers for
    ``seconds``, records a second, and the process's CPU microseconds per record (the
    writers, the writer thread and, on SQLite, the database's own work)."""
    latencies: list[float] = []

    async def writer(number: int, until: float) -> None:
        sequence = 0
        while time.perf_counter() < until:
            sequence += 1
            record = LogRecord(
                transaction_id=new_transaction_id(),  # UUIDv7, as the gateways write
                direction=Direction.OUTGOING,
                grant_hash="$1$4$grant-load",
                service_name="kadaster",
                source=Source(OIN_B),
                # One writer in ten calls Peer A: its /v1/logs pages are full at every size.
                destination=Destination(outway(number)),
                created_at=datetime.now(UTC),
            )
            begun = time.perf_counter()
            await log.write(record)
            latencies.append((time.perf_counter() - begun) * 1000)

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(writer(n, until) for n in range(writers)))

    begun, begun_cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    elapsed, cpu = time.perf_counter() - begun, time.process_time() - begun_cpu
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, len(latencies) / elapsed, cpu / len(latencies) * 1e6


def halfway_cursor(engine: sa.Engine) -> str | None:
    """The cursor (``/v1/logs``'s and the controller's form) of the record halfway through
    the log."""
    c = txs.records.c
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.max(c.id))).scalar() or 0
        row = conn.execute(
            sa.select(c.id, c.created_at).where(c.id >= total // 2).order_by(c.id).limit(1)
        ).first()
    if row is None:
        return None
    micros = (row.created_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"{micros}-{row.id}"


def export_rate(engine: sa.Engine, root: Path) -> tuple[float, float, int]:
    """Records a second of the export over the last :data:`EXPORT_TAIL` records, the CPU
    microseconds per record, and how many it exported."""
    c = txs.records.c
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(c.id))).scalar() or 0
    output, state = root / "export.jsonl", root / "export.state"
    output.unlink(missing_ok=True)
    write_cursor(state, max(0, last - EXPORT_TAIL))
    begun, begun_cpu = time.perf_counter(), time.process_time()
    result = export_engine(engine, output, state, settle_seconds=0)
    cpu = (time.process_time() - begun_cpu) / max(1, result.exported) * 1e6
    return result.exported / (time.perf_counter() - begun), cpu, result.exported


def logs_app(log: TransactionLog) -> falcon.testing.TestClient:
    app = create_base_app(ErrorDomain.MANAGER, require_peer=False)
    app.add_middleware(PeerInjector())
    add_log_routes(app, log)
    return falcon.testing.TestClient(app)


@contextlib.contextmanager
def log_url(backend: str, root: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{root / 'txlog-growth.db'}"
    else:
        with scale.postgres() as url:
            yield url


def log_part(group: Group, backend: str, args: argparse.Namespace) -> None:
    table = Measures(f"{backend}: transaction log", "ms", args, cpu=backend == "sqlite")
    with contextlib.ExitStack() as stack:
        env, _ = stack.enter_context(scale.scale_env(group, "sqlite"))
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log = TransactionLog.open(stack.enter_context(log_url(backend, root)))
        stack.callback(log.close)
        env.controller.transactions = TransactionReader(log.engine)
        api = logs_app(log)
        as_a = peer_headers(group[OIN_A])
        auditor = env.as_role(Role.AUDITOR, csrf=False)
        have = 0
        for size in sorted(args.records):
            begun = time.perf_counter()
            for first in range(have, size, 1_000_000):
                bulk_load(log.engine, first, min(1_000_000, size - first))
            analyze(log.engine)
            have = size
            print(
                f"# {backend}: {size:,} log records (loaded in "
                f"{time.perf_counter() - begun:.1f} s)",
                flush=True,
            )
            p50, p99, rate, per_record = write_under_load(log, args.writers, args.write_seconds)
            table.put(f"write p50 ({args.writers} writers)", size, p50)
            table.put(f"write p99 ({args.writers} writers)", size, p99)
            table.put("write records/s", size, rate, "/s")
            table.put("write CPU us/record", size, per_record, "us")
            analyze(log.engine)
            deep = halfway_cursor(log.engine)

            def get(client: falcon.testing.TestClient, path: str, **kw: Any) -> None:
                result = client.simulate_get(path, **kw)
                assert result.status_code == 200, (path, result.status_code, result.text[:300])

            table.take("GET /v1/logs first page", size, lambda: get(api, "/v1/logs", headers=as_a))
            if deep:
                table.take(
                    "GET /v1/logs deep page",
                    size,
                    lambda deep=deep: get(api, "/v1/logs", headers=as_a, params={"cursor": deep}),
                )
            table.take(
                "controller transactions page",
                size,
                lambda: get(env.client, "/transactions", **auditor),
            )
            if deep:
                table.take(
                    "controller transactions deep page",
                    size,
                    lambda deep=deep: get(
                        env.client, "/transactions", params={"cursor": deep}, **auditor
                    ),
                )
            rate, per_record, exported = export_rate(log.engine, root)
            table.put("export records/s", size, rate, f"/s ({exported:,} records)")
            table.put("export CPU us/record", size, per_record, "us")
            table.put("memory (VmRSS)", size, rss_mib(), "MiB")
            if args.explain:
                explain_log(log, env.controller.transactions, deep)
    rates = frozenset(n for n in table.figures if "/s" in n)
    table.print(sorted(args.records), rates)


def explain_log(log: TransactionLog, reader: TransactionReader, cursor: str | None) -> None:
    """The plans of the log's reads (``GET /v1/logs``, the controller's page), first and deep."""
    for name, action in (
        ("GET /v1/logs", lambda: log.query(OIN_A)),
        ("GET /v1/logs deep", lambda: log.query(OIN_A, cursor=cursor)),
        ("controller page", lambda: reader.query(TransactionFilter())),
        ("controller deep", lambda: reader.query(TransactionFilter(), cursor=cursor)),
    ):
        print(f"    {name}:")
        scale.print_plans(log.engine, scale.statements_of(log.engine, action))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000, 100_000])
    parser.add_argument("--records", type=int, nargs="+", default=[0, 1_000_000])
    parser.add_argument(
        "--parts", nargs="+", choices=("contracts", "log"), default=["contracts", "log"]
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure and size")
    parser.add_argument(
        "--give-up", type=float, default=10.0, help="seconds; a slower measure stops there"
    )
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--write-seconds", type=float, default=3.0)
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--explain", action="store_true", help="the log's query plans")
    args = parser.parse_args()
    group = make_group()
    for backend in args.backends:
        if "contracts" in args.parts:
            contracts_part(group, backend, args)
        if "log" in args.parts:
            log_part(group, backend, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

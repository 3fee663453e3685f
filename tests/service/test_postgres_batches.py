"""Batches on PostgreSQL, where they run as two statements on the driver's connection
(``stardag_nb/service/batch_pg.py``), and the planner statistics the service keeps fresh
(``stardag_nb/service/db/statistics.py``). Real server, real PostgreSQL.

- The database dropping every connection of the service (as a restart does): at most
  one batch fails (503, sent again by the client), and each is applied once.
- Builds racing to register the same new tasks: every batch finds every task (the one
  that did not create a task finds it after the creator committed), exactly one creates it.
- A growing registry's busy tables are analyzed within seconds, so that a lookup of
  tasks by id probes the unique index; with the keeper off they are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from stardag_nb.registry.wire import BatchRequest
from stardag_nb.service.auth import SdkScope
from stardag_nb.service.batch import apply_batch
from stardag_nb.service.db.models import Environment, Workspace
from stardag_nb.service.db.session import Database
from tests.service.conftest import ServiceServer, hold_task

WS = "default"


@pytest.fixture(scope="module")
def pg() -> Any:
    pg_server = pytest.importorskip(
        "tests.pg_server", reason="tests/pg_server.py (the PostgreSQL test server) is missing"
    )
    return pg_server.require_postgres_server()


def _start(pg: Any, workdir: Path, env: dict[str, str] | None = None) -> tuple[ServiceServer, str]:
    database = pg.new_database("pgbatch")
    server = ServiceServer(pg.sqlalchemy_url(database), workdir, env)
    server.start()
    return server, database


@pytest.fixture(scope="module")
def served(
    pg: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceServer, str]]:
    server, database = _start(pg, tmp_path_factory.mktemp("pgbatch"))
    try:
        yield server, database
    finally:
        server.stop()


def _task(name: str = "T", task_id: str | None = None) -> dict[str, Any]:
    task_id = task_id or str(uuid.uuid4())
    return {"task_id": task_id, "task_name": name, "task_data": {"id": task_id}}


def _build(client: httpx.Client) -> str:
    response = client.post("/api/v1/builds", json={"root_task_ids": []})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _new_build(server: ServiceServer) -> uuid.UUID:
    """A new build of ``default/main``, started over HTTP."""
    with server.client(api_key=server.api_key(WS, "main")) as sdk:
        return uuid.UUID(_build(sdk))


def _send(
    client: httpx.Client, build: str, ops: list[dict[str, Any]], batch_id: str
) -> httpx.Response:
    payload = {"batch_id": batch_id, "ops": ops}
    return client.post(f"/api/v1/ext/batch/builds/{build}", json=payload)


def _run_ops(task_id: str) -> list[dict[str, Any]]:
    return [
        {"op": "register", "task": _task("Run", task_id)},
        {"op": "start", "task_id": task_id},
        {"op": "complete", "task_id": task_id},
    ]


def _events(client: httpx.Client, build: str) -> list[tuple[str, str | None]]:
    response = client.get(f"/api/v1/builds/{build}/events")
    assert response.status_code == 200, response.text
    return [(e["event_type"], e.get("stardag_task_id")) for e in response.json()]


def test_batches_after_the_database_dropped_every_connection_are_applied_once(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    server, database = served
    key = server.api_key(WS, "main")
    with server.client(api_key=key) as sdk:
        build = _build(sdk)
        before = str(uuid.uuid4())
        assert _send(sdk, build, _run_ops(before), str(uuid.uuid4())).status_code == 200
        # many pooled connections, all in use a moment ago
        clients = [server.client(api_key=key) for _ in range(12)]
        barrier = threading.Barrier(len(clients))

        def read(client: httpx.Client) -> None:
            barrier.wait()
            assert client.get(f"/api/v1/builds/{build}/events").status_code == 200

        threads = [threading.Thread(target=read, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for client in clients:
            client.close()

        dropped = pg.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
            database,
        )
        assert int(dropped.strip()) >= 2

        # each batch as our client sends it: a 503 is sent again with its batch_id; at
        # most one fails (the pool is renewed at the first lost connection), none twice
        after = [str(uuid.uuid4()) for _ in range(8)]
        unavailable = 0
        for task_id in after:
            batch_id = str(uuid.uuid4())
            for _ in range(3):
                response = _send(sdk, build, _run_ops(task_id), batch_id)
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.text
                unavailable += 1
            assert response.status_code == 200, response.text
        assert unavailable <= 1

        events = Counter(_events(sdk, build))
        for task_id in (before, *after):
            for kind in ("task_pending", "task_started", "task_completed"):
                assert events[(kind, task_id)] == 1, (kind, task_id, events)


def test_builds_racing_to_register_the_same_new_tasks_each_find_every_task(
    served: tuple[ServiceServer, str],
) -> None:
    server, _ = served
    key = server.api_key(WS, "main")
    racers, rounds = 6, 4
    failures: list[str] = []
    created: Counter[str] = Counter()
    lock = threading.Lock()
    clients = [server.client(api_key=key) for _ in range(racers)]
    try:
        for _ in range(rounds):
            shared = [str(uuid.uuid4()) for _ in range(20)]
            builds = [_build(client) for client in clients]
            barrier = threading.Barrier(racers)

            def race(
                n: int,
                shared: list[str] = shared,
                builds: list[str] = builds,
                barrier: threading.Barrier = barrier,
            ) -> None:
                ops = [op for task_id in shared for op in _run_ops(task_id)]
                barrier.wait()
                response = _send(clients[n], builds[n], ops, str(uuid.uuid4()))
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                        return
                    for op, result in zip(ops, response.json()["results"], strict=True):
                        if not result["ok"]:
                            failures.append(f"{op['op']}: {result['detail']}")
                        elif result["status"] == "created":
                            created[op["task"]["task_id"]] += 1

            threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not failures, failures[:5]
            assert [created[task_id] for task_id in shared] == [1] * len(shared)
            for client, build in zip(clients, builds, strict=True):
                completed = {t for kind, t in _events(client, build) if kind == "task_completed"}
                assert completed == set(shared)
    finally:
        for client in clients:
            client.close()


def _analyzed(pg: Any, database: str, table: str) -> int:
    out = pg.psql(
        f"SELECT analyze_count FROM pg_stat_user_tables WHERE relname = '{table}'", database
    )
    return int(out.strip())


def _without_autovacuum(pg: Any, database: str) -> None:
    """Only the keeper analyzes ``tasks`` (autovacuum may visit a new database within
    seconds: it would reset the change count the keeper looks at)."""
    pg.psql("ALTER TABLE tasks SET (autovacuum_enabled = false)", database)


def _register_many(server: ServiceServer, count: int) -> None:
    with server.client(api_key=server.api_key(WS, "main")) as sdk:
        build = _build(sdk)
        ops = [{"op": "register", "task": _task("Many")} for _ in range(count)]
        assert _send(sdk, build, ops, str(uuid.uuid4())).status_code == 200


def test_a_growing_registry_is_analyzed_within_seconds_and_lookups_probe_the_unique_index(
    pg: Any, tmp_path: Path
) -> None:
    server, database = _start(pg, tmp_path / "on")
    try:
        _without_autovacuum(pg, database)
        _register_many(server, 1500)
        deadline = time.monotonic() + 15
        while _analyzed(pg, database, "tasks") == 0:
            assert time.monotonic() < deadline, "tasks was not analyzed within 15 s"
            time.sleep(0.2)
        plan = pg.psql(
            "EXPLAIN SELECT task_id, id FROM tasks WHERE environment_id = "
            "(SELECT id FROM environments LIMIT 1) AND task_id = ANY(ARRAY['a', 'b'])",
            database,
        )
        assert "uq_tasks_environment_id_task_id" in plan, plan
        # from a small sample (statistics target 10: a histogram of at most 11 bounds,
        # where PostgreSQL's default target gives up to 101)
        bounds = pg.psql(
            "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats "
            "WHERE tablename = 'tasks' AND attname = 'task_id'",
            database,
        )
        assert 2 <= int(bounds.strip()) <= 11, bounds
    finally:
        server.stop()


def test_with_the_keeper_off_the_tables_are_left_to_autovacuum(pg: Any, tmp_path: Path) -> None:
    server, database = _start(pg, tmp_path / "off", {"STARDAG_SERVICE_ANALYZE_SECONDS": "0"})
    try:
        _without_autovacuum(pg, database)
        _register_many(server, 1500)
        time.sleep(3)
        assert _analyzed(pg, database, "tasks") == 0
    finally:
        server.stop()


def test_a_batch_cancelled_mid_transaction_leaves_no_transaction_open_on_its_connection(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """A batch whose request is cancelled while the database makes it wait (a shutdown, a
    timeout) must not hand its connection back to the pool inside the transaction: the
    next batch on it would only add a savepoint to that open transaction, answer 200,
    and be lost when the connection closes."""
    server, database = served
    build = _new_build(server)
    contested, later = str(uuid.uuid4()), str(uuid.uuid4())
    dsn = pg.dsn_for(database)

    async def run() -> int:
        db = Database(pg.sqlalchemy_url(database))
        blocker = await asyncpg.connect(dsn)
        try:
            scope = await _main_scope(db)
            # another transaction inserts the contested task and holds it uncommitted
            blocking = await hold_task(blocker, scope.env_id, contested)

            def batch(task_id: str) -> BatchRequest:
                return _request(_run_ops(task_id))

            async def waits() -> None:
                async with db.engine.connect() as conn:
                    await apply_batch(conn, scope, build, batch(contested))

            waiting = asyncio.create_task(waits())
            await asyncio.sleep(0.5)  # blocked on the uncommitted row
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await blocking.rollback()

            async with db.engine.connect() as conn:  # the pool's one connection again
                outcome = await apply_batch(conn, scope, build, batch(later))
            assert [result[1] for result in outcome.results] == [None, None, None]
            await db.dispose()  # closes the connection: an open transaction would roll back
            return int(
                await blocker.fetchval(
                    "SELECT count(*) FROM events e JOIN tasks t ON t.id = e.task_pk "
                    "WHERE t.task_id = $1",
                    later,
                )
            )
        finally:
            await blocker.close()

    assert asyncio.run(run()) == 3


async def _main_scope(db: Database) -> SdkScope:
    """The scope of an SDK call in ``default/main`` (what the API key's would be)."""
    async with db.session() as session:
        environment, slug = (
            await session.execute(
                select(Environment, Workspace.slug)
                .join(Workspace, Workspace.id == Environment.workspace_id)
                .where(Environment.slug == "main", Workspace.slug == WS)
            )
        ).one()
    return SdkScope(environment=environment, workspace_slug=slug)


def _request(ops: list[dict[str, Any]]) -> BatchRequest:
    return BatchRequest.model_validate({"batch_id": str(uuid.uuid4()), "ops": ops})


def test_batches_registering_the_same_new_tasks_in_opposite_orders_do_not_deadlock(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """Each batch's rows are written in the order of their keys: two batches registering
    the same new tasks, one in the opposite order, never wait for each other in a
    circle (PostgreSQL would abort one with a deadlock: a 500 without the hot route's
    second try)."""
    server, database = served
    builds = [_new_build(server) for _ in range(2)]

    async def run() -> None:
        db = Database(pg.sqlalchemy_url(database))
        try:
            scope = await _main_scope(db)
            for _ in range(5):  # large batches: long enough to overlap
                shared = [str(uuid.uuid4()) for _ in range(400)]
                forward = [{"op": "register", "task": _task("Shared", t)} for t in shared]
                backward = forward[::-1]

                async def one(build: uuid.UUID, ops: list[dict[str, Any]]) -> None:
                    async with db.engine.connect() as conn:
                        outcome = await apply_batch(conn, scope, build, _request(ops))
                    assert all(detail is None for _, detail in outcome.results)

                await asyncio.gather(one(builds[0], forward), one(builds[1], backward))
        finally:
            await db.dispose()

    asyncio.run(run())


def test_batches_cancelled_at_any_await_leave_their_connection_clean(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """Cancelled after 0, 1, 2, ... turns of the loop (while BEGIN, a statement or the
    COMMIT is under way), a batch's connection must not go back to the pool inside a
    transaction: every batch answered afterwards on the pool must be durable."""
    server, database = served
    build = _new_build(server)
    answered: list[str] = []

    async def run() -> int:
        db = Database(pg.sqlalchemy_url(database))
        try:
            scope = await _main_scope(db)

            async def apply(task_id: str) -> None:
                async with db.engine.connect() as conn:
                    await apply_batch(conn, scope, build, _request(_run_ops(task_id)))

            for turns in range(12):
                cancelled = asyncio.create_task(apply(str(uuid.uuid4())))
                for _ in range(turns):
                    await asyncio.sleep(0)
                cancelled.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cancelled
                task_id = str(uuid.uuid4())
                await apply(task_id)  # answered: it must be durable
                answered.append(task_id)
        finally:
            await db.dispose()  # an open transaction would roll back here
        check = await asyncpg.connect(pg.dsn_for(database))
        try:
            return int(
                await check.fetchval(
                    "SELECT count(*) FROM events e JOIN tasks t ON t.id = e.task_pk "
                    "WHERE t.task_id = ANY($1::text[])",
                    answered,
                )
            )
        finally:
            await check.close()

    assert asyncio.run(run()) == 3 * 12


def test_the_keeper_leaves_alone_tables_its_role_may_not_analyze(pg: Any, tmp_path: Path) -> None:
    """A role that may write the tables but does not own them cannot analyze them
    (PostgreSQL skips them with a warning): the keeper must not pick them again every
    second, nor report them analyzed."""
    from stardag_nb.service.db.statistics import StatisticsKeeper

    server, database = _start(pg, tmp_path / "perm", {"STARDAG_SERVICE_ANALYZE_SECONDS": "0"})
    try:
        _without_autovacuum(pg, database)
        _register_many(server, 1500)
    finally:
        server.stop()
    role = f"writer_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {role} LOGIN", database)
    pg.psql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}", database)
    url = pg.sqlalchemy_url(database).replace(f"//{pg.user}@", f"//{role}@")

    async def run() -> tuple[list[str], list[str]]:
        owner_db, writer_db = Database(pg.sqlalchemy_url(database)), Database(url)
        try:
            as_writer = await StatisticsKeeper(writer_db.engine, 1.0).analyze_stale()
            as_owner = await StatisticsKeeper(owner_db.engine, 1.0).analyze_stale()
            return as_writer, as_owner
        finally:
            await writer_db.dispose()
            await owner_db.dispose()

    as_writer, as_owner = asyncio.run(run())
    assert as_writer == []
    assert "tasks" in as_owner
    assert _analyzed(pg, database, "tasks") == 1


def test_a_batch_cancelled_twice_never_hands_a_half_closed_connection_to_the_next_request(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """A second cancellation landing while a batch discards its connection (a timeout
    around a cancelled request) must not return the connection to the pool while it is
    still being closed: the request waiting for it would fail (a 500 over HTTP)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    server, database = served
    build = _new_build(server)
    failures: list[str] = []

    async def run() -> None:
        db = Database(pg.sqlalchemy_url(database))
        scope = await _main_scope(db)
        await db.dispose()
        engine = create_async_engine(pg.sqlalchemy_url(database), pool_size=1, max_overflow=0)
        try:
            for first in range(4):
                for second in range(8):

                    async def batch() -> None:
                        async with engine.connect() as conn:
                            ops = _run_ops(str(uuid.uuid4()))
                            await apply_batch(conn, scope, build, _request(ops))

                    async def waiting() -> Any:  # for the pool's only connection
                        await asyncio.sleep(0)
                        async with engine.connect() as conn:
                            return await conn.scalar(text("SELECT 1"))

                    cancelled, waiter = asyncio.create_task(batch()), asyncio.create_task(waiting())
                    for turns in (first, second):
                        for _ in range(turns):
                            await asyncio.sleep(0)
                        cancelled.cancel()
                    with contextlib.suppress(BaseException):
                        await cancelled
                    try:
                        assert await asyncio.wait_for(waiter, 10) == 1
                    except Exception as exc:
                        failures.append(f"{first}/{second}: {type(exc).__name__}: {exc}"[:200])
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert not failures, failures[:3]


def test_a_task_registered_by_another_transaction_after_the_look_up_is_referenced_once(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """A batch looks up the tasks it names, then writes in one statement the ones it did
    not find. When another transaction registers one of them in between, that statement
    must write nothing (its events would name a key no task has); the batch is then
    applied in a transaction that sees the task: referenced, not created, every event
    recorded once, nothing refused."""
    server, database = served
    build = _new_build(server)
    contested, other = str(uuid.uuid4()), str(uuid.uuid4())
    dsn = pg.dsn_for(database)

    async def run() -> tuple[list[tuple[str, str | None]], int, list[tuple[str, str]]]:
        db = Database(pg.sqlalchemy_url(database))
        blocker = await asyncpg.connect(dsn)
        try:
            scope = await _main_scope(db)
            registering = await hold_task(blocker, scope.env_id, contested)
            request = _request(_run_ops(contested) + _run_ops(other))

            async def apply() -> Any:
                async with db.engine.connect() as conn:
                    return await apply_batch(conn, scope, build, request)

            applying = asyncio.create_task(apply())
            await asyncio.sleep(0.5)  # past the look-up: waiting on the uncommitted task
            assert not applying.done()
            await registering.commit()
            outcome = await asyncio.wait_for(applying, 30)
            tasks = await blocker.fetchval(
                "SELECT count(*) FROM tasks WHERE task_id = $1", contested
            )
            events = await blocker.fetch(
                "SELECT t.task_id, e.event_type FROM events e JOIN tasks t ON t.id = e.task_pk "
                "WHERE e.build_id = $1 ORDER BY e.created_at, e.id",
                build,
            )
            return outcome.results, int(tasks), [(r[0], r[1]) for r in events]
        finally:
            await blocker.close()
            await db.dispose()

    results, tasks, events = asyncio.run(run())
    assert results == [
        ("referenced", None), ("running", None), ("completed", None),
        ("created", None), ("running", None), ("completed", None),
    ]  # fmt: skip
    assert tasks == 1
    assert events == [
        (contested, "task_referenced"), (contested, "task_started"),
        (contested, "task_completed"), (other, "task_pending"), (other, "task_started"),
        (other, "task_completed"),
    ]  # fmt: skip


def _register_op(task_id: str) -> dict[str, Any]:
    return {"op": "register", "task": _task("T", task_id)}


def test_a_batch_in_one_statement_and_one_in_a_transaction_do_not_deadlock(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """The one-statement way and the transactional way (a batch within a session's
    transaction, or after a race) take their row locks in the same order: receipt, new
    tasks, then the rest. Here the transactional one has registered a new task (not yet
    committed) that the other registers too, and both write the same asset and edge of
    tasks that exist: each waits at most for the other to commit, never in a circle
    (PostgreSQL would abort one: 40P01)."""
    from stardag_nb.service import batch_pg
    from stardag_nb.service.db.ids import utcnow

    server, database = served
    fast_build, other_build = _new_build(server), _new_build(server)
    up, down, shared = (str(uuid.uuid4()) for _ in range(3))
    asset = {"type": "markdown", "name": "out", "body": {"v": 1}}

    async def run() -> tuple[Any, Any]:
        db = Database(pg.sqlalchemy_url(database))
        other = await asyncpg.connect(pg.dsn_for(database))
        try:
            scope = await _main_scope(db)
            async with db.engine.connect() as conn:
                await apply_batch(
                    conn, scope, fast_build, _request([_register_op(up), _register_op(down)])
                )
            # the transactional way, step by step: claim (registers `shared`), then write
            held = other.transaction()
            await held.start()
            claim = _request([_register_op(shared)])
            now = utcnow()
            row = {"id": uuid.uuid4(), "task_id": shared, "task_namespace": "", "task_name": "T",
                   "task_data": {}, "version": None, "output_uri": None}  # fmt: skip
            claimed = await batch_pg.claim_and_register(
                other, scope.env_id, other_build, claim, now, [row], [shared, up, down]
            )
            assert claimed is not None
            pks = claimed[1]
            fast = _request([
                _register_op(shared),
                {"op": "dependencies", "task_id": down, "dependency_task_ids": [up]},
                {"op": "assets", "task_id": up, "assets": [asset]},
            ])  # fmt: skip

            async def apply() -> Any:
                async with db.engine.connect() as conn:
                    return await apply_batch(conn, scope, fast_build, fast)

            applying = asyncio.create_task(apply())
            await asyncio.sleep(0.5)  # waiting for `shared`, or past it
            written: Any = None
            try:
                await batch_pg.write_rows(
                    other, scope.env_id, other_build, claim.batch_id, now, [],
                    [(pks[up], pks[down], False)],
                    [{"id": uuid.uuid4(), "task_pk": pks[up], "asset_type": "markdown",
                      "name": "out", "body": {"v": 2}}],
                    None,
                )  # fmt: skip
                await held.commit()
            except Exception as exc:  # a deadlock: this one aborted
                written = exc
                await held.rollback()
            try:
                applied: Any = await asyncio.wait_for(applying, 30)
            except Exception as exc:  # ... or that one
                applied = exc
            return written, applied
        finally:
            await other.close()
            await db.dispose()

    written, applied = asyncio.run(run())
    assert written is None
    assert not isinstance(applied, Exception), repr(applied)
    assert [detail for _, detail in applied.results] == [None, None, None]


def test_a_batch_whose_receipt_another_request_holds_writes_no_task(
    pg: Any, served: tuple[ServiceServer, str]
) -> None:
    """A batch id in flight in another request (its receipt not yet committed): this one
    waits, then is answered from that receipt (409 here: other operations), and writes
    nothing, not even the tasks it would have registered (rows no event would name)."""
    from fastapi import HTTPException

    server, database = served
    build = _new_build(server)
    orphan = str(uuid.uuid4())

    async def run() -> tuple[Any, int]:
        db = Database(pg.sqlalchemy_url(database))
        other = await asyncpg.connect(pg.dsn_for(database))
        try:
            scope = await _main_scope(db)
            request = _request([_register_op(orphan), _register_op(str(uuid.uuid4()))])
            held = other.transaction()
            await held.start()
            await other.execute(
                "INSERT INTO batch_receipts (environment_id, batch_id, build_id, op_count, "
                "created_at) VALUES ($1, $2, $3, 1, now())",
                scope.env_id, request.batch_id, build,
            )  # fmt: skip

            async def apply() -> Any:
                async with db.engine.connect() as conn:
                    return await apply_batch(conn, scope, build, request)

            applying = asyncio.create_task(apply())
            await asyncio.sleep(0.5)
            await held.commit()
            try:
                answer: Any = await asyncio.wait_for(applying, 30)
            except HTTPException as exc:
                answer = exc.status_code
            tasks = await other.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1", orphan)
            return answer, int(tasks)
        finally:
            await other.close()
            await db.dispose()

    assert asyncio.run(run()) == (409, 0)

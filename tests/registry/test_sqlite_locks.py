"""Global locks in the SQLite registry file, within one process and across processes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build._locks import (
    GlobalConcurrencyLockManager,
    LockAcquisitionStatus,
    LockHandle,
)
from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry

S = LockAcquisitionStatus


class RegLockLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "locks.sqlite3"


def _lock_row(db: Path, name: str) -> tuple[str, float, int] | None:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT owner_id, expires_at, version FROM locks WHERE name = ?", (name,)
        ).fetchone()


def test_implements_the_lock_protocols(db: Path) -> None:
    manager = SQLiteGlobalLockManager(db)
    assert isinstance(manager, GlobalConcurrencyLockManager)
    assert isinstance(manager.lock("t"), LockHandle)


def test_acquire_is_exclusive_and_reentrant_for_the_owner_in_the_file(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a")
    a_again = SQLiteGlobalLockManager(db, owner_id="a")  # the same owner, another manager
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        first = await a.acquire("t1")
        assert (first.status, first.acquired) == (S.ACQUIRED, True)
        assert _lock_row(db, "t1")[::2] == ("a", 1)  # type: ignore[index]
        again = await a_again.acquire("t1")
        assert again.status is S.ACQUIRED
        assert _lock_row(db, "t1")[::2] == ("a", 2)  # type: ignore[index]
        other = await b.acquire("t1")
        assert (other.status, other.acquired) == (S.HELD_BY_OTHER, False)
        assert (await b.acquire("t2")).status is S.ACQUIRED  # other names are independent
        assert await a.release("t1")
        assert (await b.acquire("t1")).status is S.ACQUIRED

    asyncio.run(scenario())


def test_a_manager_hands_a_lease_to_one_holder_at_a_time(db: Path) -> None:
    """Two builds sharing a manager share its owner id: the second acquire of a lease the
    manager holds is refused until the first holder releases it."""
    manager = SQLiteGlobalLockManager(db, owner_id="shared")

    async def scenario() -> None:
        assert (await manager.acquire("t")).acquired
        second = await manager.acquire("t")
        assert (second.status, second.acquired) == (S.HELD_BY_OTHER, False)
        assert second.error_message and "this lock manager" in second.error_message
        assert _lock_row(db, "t")[::2] == ("shared", 1)  # type: ignore[index]
        assert (await manager.acquire("other")).acquired  # other names are independent
        assert await manager.release("t")
        assert (await manager.acquire("t")).acquired  # released: the next holder takes it
        assert await manager.release("t", task_completed=True)
        assert (await manager.acquire("t")).status is S.ALREADY_COMPLETED

    asyncio.run(scenario())


def test_a_refused_or_failed_acquire_holds_nothing(tmp_path: Path, db: Path) -> None:
    """Only an acquired lease is held by the manager: after HELD_BY_OTHER (another owner)
    or an error, the same manager can acquire once the lease is free."""
    a = SQLiteGlobalLockManager(db, owner_id="a")
    b = SQLiteGlobalLockManager(db, owner_id="b")
    broken = tmp_path / "later.sqlite3"
    broken.mkdir()  # a directory where the file should be: an error result
    late = SQLiteGlobalLockManager(broken)

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        assert (await b.acquire("t")).status is S.HELD_BY_OTHER
        assert await a.release("t")
        assert (await b.acquire("t")).acquired
        assert (await late.acquire("t")).status is S.ERROR
        broken.rmdir()
        assert (await late.acquire("t")).acquired

    asyncio.run(scenario())


def test_clear_completion_lets_the_task_be_acquired_again(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a")
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        assert await a.release("t", task_completed=True)
        assert (await b.acquire("t")).status is S.ALREADY_COMPLETED
        assert await b.clear_completion("t")
        assert not await a.check_task_completed("t")
        assert (await b.acquire("t")).acquired  # another owner rebuilds it
        assert await b.release("t", task_completed=True)
        assert (await a.acquire("t")).status is S.ALREADY_COMPLETED
        assert await a.clear_completion("never-completed")  # nothing to clear: True

    asyncio.run(scenario())


def test_clear_completion_stays_in_its_environment(db: Path) -> None:
    local = SQLiteGlobalLockManager(db, owner_id="a")
    prod = SQLiteGlobalLockManager(db, owner_id="a", environment="prod")
    other_ws = SQLiteGlobalLockManager(db, owner_id="a", workspace="team")

    async def scenario() -> None:
        for manager in (local, prod, other_ws):
            assert (await manager.acquire("t")).acquired
            assert await manager.release("t", task_completed=True)
        assert await local.clear_completion("t")
        assert (await local.acquire("t")).acquired
        assert (await prod.acquire("t")).status is S.ALREADY_COMPLETED
        assert (await other_ws.acquire("t")).status is S.ALREADY_COMPLETED

    asyncio.run(scenario())


def test_clear_completion_leaves_held_leases_alone(db: Path) -> None:
    holder = SQLiteGlobalLockManager(db, owner_id="holder")
    other = SQLiteGlobalLockManager(db, owner_id="other")

    async def scenario() -> None:
        assert (await holder.acquire("t")).acquired
        before = _lock_row(db, "t")
        assert await other.clear_completion("t")
        assert await holder.clear_completion("t")
        assert _lock_row(db, "t") == before
        assert (await other.acquire("t")).status is S.HELD_BY_OTHER
        assert (await holder.acquire("t")).status is S.HELD_BY_OTHER  # still held here
        assert await holder.renew("t")
        assert await holder.release("t", task_completed=True)
        assert await other.check_task_completed("t")

    asyncio.run(scenario())


def test_expired_lease_is_taken_over(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a", ttl_seconds=0.3)
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        assert (await b.acquire("t")).status is S.HELD_BY_OTHER
        await asyncio.sleep(0.35)
        assert (await b.acquire("t")).status is S.ACQUIRED
        owner, _, version = _lock_row(db, "t")  # type: ignore[misc]
        assert (owner, version) == ("b", 2)
        assert not await a.renew("t")  # lost to b
        assert not await a.release("t", task_completed=True)
        assert not await b.check_task_completed("t")  # a's completion was not recorded

    asyncio.run(scenario())


def test_renew_extends_only_the_owners_lease(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a", ttl_seconds=0.2)
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        _, before, _ = _lock_row(db, "t")  # type: ignore[misc]
        assert await a.renew("t", ttl_seconds=60)
        _, after, _ = _lock_row(db, "t")  # type: ignore[misc]
        assert after - before > 50
        await asyncio.sleep(0.25)  # past the original ttl
        assert (await b.acquire("t")).status is S.HELD_BY_OTHER
        assert not await b.renew("t")
        assert not await a.renew("missing")

    asyncio.run(scenario())


def test_concurrency_limit_counts_other_owners_active_leases(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a", ttl_seconds=0.5)
    b = SQLiteGlobalLockManager(db, owner_id="b", max_concurrent_locks=1)

    async def scenario() -> None:
        assert (await a.acquire("t1")).acquired
        limited = await b.acquire("t2")
        assert (limited.status, limited.acquired) == (S.CONCURRENCY_LIMIT_REACHED, False)
        assert (await b.acquire("t1")).status is S.HELD_BY_OTHER
        assert await a.release("t1")
        assert (await b.acquire("t2")).status is S.ACQUIRED
        b_again = SQLiteGlobalLockManager(db, owner_id="b", max_concurrent_locks=1)
        assert (await b_again.acquire("t2")).status is S.ACQUIRED  # own lease: not limited
        assert (await a.acquire("t3")).status is S.ACQUIRED  # a has no limit
        assert (await b.acquire("t4")).status is S.CONCURRENCY_LIMIT_REACHED
        await asyncio.sleep(0.55)  # a's lease on t3 expires: no longer counted
        assert (await b.acquire("t4")).status is S.ACQUIRED

    asyncio.run(scenario())


def test_release_by_non_owner_is_refused(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a")
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        assert not await b.release("t", task_completed=True)
        assert _lock_row(db, "t")[0] == "a"  # type: ignore[index]
        assert not await b.check_task_completed("t")
        assert not await b.release("never-locked")

    asyncio.run(scenario())


def test_release_completed_records_completion_atomically(db: Path) -> None:
    a = SQLiteGlobalLockManager(db, owner_id="a")
    b = SQLiteGlobalLockManager(db, owner_id="b")

    async def scenario() -> None:
        assert (await a.acquire("t")).acquired
        assert not await a.check_task_completed("t")
        assert await a.release("t", task_completed=True)
        assert _lock_row(db, "t") is None
        assert await b.check_task_completed("t")
        done = await b.acquire("t")
        assert (done.status, done.acquired) == (S.ALREADY_COMPLETED, False)
        assert (await a.acquire("t")).status is S.ALREADY_COMPLETED

    asyncio.run(scenario())


def test_locks_and_registry_share_completions(db: Path) -> None:
    registry = SQLiteRegistry(db)
    manager = SQLiteGlobalLockManager(registry, owner_id="a")
    built, locked = RegLockLeaf(n=1), RegLockLeaf(n=2)
    build_id = registry.build_start()
    for task in (built, locked):
        registry.task_register(build_id, task)
    registry.task_start(build_id, built)
    registry.task_complete(build_id, built)
    registry.build_complete(build_id)

    async def scenario() -> None:
        assert (await manager.acquire(built.id)).status is S.ALREADY_COMPLETED
        assert (await manager.acquire(str(locked.id))).acquired
        assert await manager.release(locked.id, task_completed=True)

    asyncio.run(scenario())
    # A completion recorded through the lock counts for the global status.
    assert registry.task_get_metadata(locked.id).status == "completed"
    registry.close()
    manager.close()


def test_environments_have_separate_locks(db: Path) -> None:
    local = SQLiteGlobalLockManager(db, owner_id="a")
    prod = SQLiteGlobalLockManager(db, owner_id="b", environment="prod")

    async def scenario() -> None:
        assert (await local.acquire("t")).acquired
        assert (await prod.acquire("t")).acquired

    asyncio.run(scenario())


def test_sqlite_errors_become_error_results(tmp_path: Path) -> None:
    unusable = tmp_path / "a-directory"
    unusable.mkdir()
    manager = SQLiteGlobalLockManager(unusable)

    async def scenario() -> None:
        result = await manager.acquire("t")
        assert (result.status, result.acquired) == (S.ERROR, False)
        assert result.error_message
        assert not await manager.release("t")
        assert not await manager.check_task_completed("t")
        assert not await manager.clear_completion("t")

    asyncio.run(scenario())


def test_lock_handle_renews_and_releases(db: Path) -> None:
    holder = SQLiteGlobalLockManager(db, owner_id="holder", ttl_seconds=0.45)
    other = SQLiteGlobalLockManager(db, owner_id="other")

    async def scenario() -> None:
        async with holder.lock("t") as handle:
            assert handle.acquired and handle.result.status is S.ACQUIRED
            await asyncio.sleep(0.9)  # twice the ttl: only renewals keep it
            assert (await other.acquire("t")).status is S.HELD_BY_OTHER
            assert not handle.lost
        assert _lock_row(db, "t") is None  # released, not completed
        assert not await other.check_task_completed("t")

        async with holder.lock("t") as handle:
            handle.mark_completed()
        assert await other.check_task_completed("t")

        async with holder.lock("t") as handle:
            assert not handle.acquired
            assert handle.result.status is S.ALREADY_COMPLETED

    asyncio.run(scenario())


def test_lock_handle_not_acquired_leaves_the_other_lease(db: Path) -> None:
    holder = SQLiteGlobalLockManager(db, owner_id="holder")
    other = SQLiteGlobalLockManager(db, owner_id="other")

    async def scenario() -> None:
        assert (await holder.acquire("t")).acquired
        async with other.lock("t") as handle:
            assert handle.result.status is S.HELD_BY_OTHER
            handle.mark_completed()
        assert _lock_row(db, "t")[0] == "holder"  # type: ignore[index]
        assert not await holder.check_task_completed("t")

    with pytest.raises(RuntimeError, match="async with"):
        _ = other.lock("x").result
    asyncio.run(scenario())


_WORKER = r"""
import asyncio, os, sys, time
from stardag_nb.build._locks import LockAcquisitionStatus as S
from stardag_nb.registry import SQLiteGlobalLockManager

path, out, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

async def main():
    manager = SQLiteGlobalLockManager(path, ttl_seconds=30)
    time.sleep(max(0.0, start_at - time.time()))  # start together
    for i in range(count):
        tid = f"task-{i}"
        while True:
            result = await manager.acquire(tid)
            if result.status is S.ACQUIRED:
                with open(out, "a") as f:  # the side effect that must happen once
                    f.write(f"{os.getpid()} {tid}\n")
                await asyncio.sleep(0.005)  # hold the lease a while: others must wait
                assert await manager.release(tid, task_completed=True)
                break
            if result.status is S.ALREADY_COMPLETED:
                break
            if result.status is not S.HELD_BY_OTHER:
                raise SystemExit(f"unexpected {result}")
            await asyncio.sleep(0.001)

asyncio.run(main())
"""


def test_processes_run_each_task_exactly_once(db: Path, tmp_path: Path) -> None:
    side_effects = tmp_path / "side-effects.txt"
    side_effects.touch()
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db), str(side_effects), "50", str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    lines = side_effects.read_text().splitlines()
    counts = Counter(line.split()[1] for line in lines)
    assert counts == Counter({f"task-{i}": 1 for i in range(50)})
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM task_completions").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM locks").fetchone()[0] == 0

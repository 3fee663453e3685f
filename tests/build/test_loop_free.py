"""Builds leave the caller's event loop free: sync task bodies run on worker threads,
concurrently; the engine's own bookkeeping yields; cancelling stops the work."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.build import BuildExitStatus
from stardag_nb.registry import NoOpRegistry, SQLiteRegistry

_running = 0
_most = 0
_lock = threading.Lock()
_threads: set[str] = set()

sd.namespace("loop_free", __name__)  # task names unique across the suite


class Sleeper(sd.AutoTask[int]):
    i: int
    seconds: float = 0.01

    def run(self) -> None:
        global _running, _most
        with _lock:
            _running += 1
            _most = max(_most, _running)
            _threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        with _lock:
            _running -= 1
        self.output().save(self.i)


class Fan(sd.AutoTask[int]):
    n: int
    seconds: float = 0.01

    def requires(self):  # type: ignore[no-untyped-def]
        return [Sleeper(i=i, seconds=self.seconds) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


class Trivial(sd.AutoTask[int]):
    i: int

    def run(self) -> None:
        self.output().save(self.i)


class Wide(sd.AutoTask[int]):
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [Trivial(i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


async def _build_with_ticker(
    root: sd.BaseTask, **kwargs: object
) -> tuple[sd.build.BuildSummary, float, int]:  # type: ignore[name-defined]
    """Build ``root`` while a ticker on the same loop records its longest gap."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    # The objects the test process piled up before (hundreds of tests) are set aside
    # from the collector: a full collection over them is the test run's pause, not the
    # build's (in a fresh process the longest gap is ~50 ms).
    gc.collect()
    gc.freeze()
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        summary = await sd.build_aio(root, **kwargs)  # type: ignore[arg-type]
    finally:
        stop.set()
        await tick
        gc.unfreeze()
    return summary, max(gaps), len(gaps)


def test_sync_tasks_overlap_and_the_loop_keeps_ticking() -> None:
    global _most
    _most = 0
    _threads.clear()
    start = time.perf_counter()
    summary, longest_gap, ticks = asyncio.run(_build_with_ticker(Fan(n=100)))
    elapsed = time.perf_counter() - start
    print(
        f"100 x 10 ms sync tasks: {elapsed:.3f} s, longest loop gap {longest_gap * 1e3:.1f} ms, {ticks} ticks"
    )
    assert summary.status is BuildExitStatus.SUCCESS
    assert _most >= 4, f"sync tasks did not overlap (at most {_most} at once)"
    assert threading.main_thread().name not in _threads
    assert elapsed < 1.0, f"100 x 10 ms took {elapsed:.2f} s: not concurrent"
    assert longest_gap < 0.25, f"the loop stalled for {longest_gap:.3f} s"
    assert ticks > 20


class SlowRequires(sd.AutoTask[int]):
    """A chain whose every requires() holds the loop ~3 ms: discovery takes many slices."""

    i: int

    def requires(self):  # type: ignore[no-untyped-def]
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        return SlowRequires(i=self.i - 1) if self.i else None

    def run(self) -> None:
        self.output().save(self.i)


def test_a_coroutine_woken_meanwhile_runs_at_every_yield_of_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whenever the engine yields between two slices of its work, a coroutine whose timer
    came due meanwhile (a ticker, a kernel's message handler) runs before the next slice,
    not after it (which would double the longest stall of the loop)."""
    from stardag_nb.build._engine import BuildEngine

    yields: list[tuple[float, float]] = []
    original = BuildEngine._yield_slice

    async def recorded(self: BuildEngine) -> None:
        start = time.perf_counter()
        await original(self)
        yields.append((start, time.perf_counter()))

    monkeypatch.setattr(BuildEngine, "_yield_slice", recorded)
    ticks: list[float] = []

    async def scenario() -> None:
        done = False

        async def ticker() -> None:
            while not done:
                await asyncio.sleep(0.001)
                ticks.append(time.perf_counter())

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.005)
        summary = await sd.build_aio(SlowRequires(i=60), registry=NoOpRegistry())
        done = True
        await tick
        assert summary.status == "success"

    asyncio.run(scenario())
    # yields that began with the ticker's timer due: its last run 2 ms or more before
    due = [(s, e) for s, e in yields if any(t <= s - 0.002 for t in ticks)
           and not any(s - 0.002 < t <= s for t in ticks)]  # fmt: skip
    assert len(due) >= 5, (len(yields), len(due))  # discovery took many slices
    missed = [(s, e) for s, e in due if not any(s <= t <= e for t in ticks)]
    assert not missed, f"{len(missed)} of {len(due)} yields let the next slice run first"


def test_a_2000_task_build_with_the_registry_never_stalls_the_loop(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    try:
        summary, longest_gap, _ = asyncio.run(_build_with_ticker(Wide(n=2000), registry=registry))
        print(f"2000-task build: longest loop gap {longest_gap * 1e3:.1f} ms")
        assert summary.status is BuildExitStatus.SUCCESS
        assert summary.task_count.succeeded == 2001
        assert longest_gap < 0.3, f"the loop stalled for {longest_gap:.3f} s"
        # a no-op rebuild (2001 completion checks) yields too
        summary, longest_gap, _ = asyncio.run(_build_with_ticker(Wide(n=2000), registry=registry))
        print(f"2000-task no-op rebuild: longest loop gap {longest_gap * 1e3:.1f} ms")
        assert summary.task_count.previously_completed == 1
        assert longest_gap < 0.3
    finally:
        registry.close()


class SlowOutput(sd.AutoTask[int]):
    """A task whose output takes a while to make the first time (a client of a remote
    store, say): the engine asks every new dependency for its output in discovery."""

    i: int

    def output(self):  # type: ignore[no-untyped-def]
        made = self.__dict__.get("_test_output")
        if made is None:
            time.sleep(0.0002)
            made = self.__dict__["_test_output"] = super().output()
        return made

    def run(self) -> None:
        self.output().save(self.i)


class SlowFan(sd.AutoTask[int]):
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [SlowOutput(i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


def test_discovery_yields_while_it_looks_at_many_new_dependencies() -> None:
    """Looking at the outputs of 2,000 new dependencies of one task (0.2 ms each here:
    0.4 s in all) goes in slices: the loop keeps ticking."""
    summary, longest_gap, _ = asyncio.run(_build_with_ticker(SlowFan(n=2000)))
    print(f"2,000 slow outputs: longest loop gap {longest_gap * 1e3:.1f} ms")
    assert summary.status is BuildExitStatus.SUCCESS
    assert longest_gap < 0.3, f"the loop stalled for {longest_gap:.3f} s"


class Inline(sd.AutoTask[int]):
    __execution_mode__ = "inline"

    def run(self) -> None:
        self.output().save(threading.get_ident())


def test_inline_mode_is_an_explicit_opt_in() -> None:
    task = Inline()
    assert sd.build(task).status is BuildExitStatus.SUCCESS
    # sd.build runs its loop on this thread when no loop is running
    assert task.output().load() == threading.get_ident()


class Cooperative(sd.AutoTask[int]):
    """Polls sd.cancelled() and gives up when its build was cancelled."""

    marker: str

    def run(self) -> None:
        Path(self.marker).write_text("started")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sd.cancelled():
                Path(self.marker).write_text("saw cancel")
                return
            time.sleep(0.01)
        self.output().save(1)


_test_over = threading.Event()


class Stubborn(sd.AutoTask[int]):
    """Ignores cancellation: the build must not wait for it beyond the grace period.
    (It stops, without writing, once the test that started it is over.)"""

    seconds: float

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if _test_over.is_set():
                return
            time.sleep(0.01)
        self.output().save(1)


class Both(sd.AutoTask[int]):
    marker: str

    def requires(self):  # type: ignore[no-untyped-def]
        return [
            Cooperative(marker=self.marker),
            Stubborn(seconds=20),
            *[Sleeper(i=1000 + i, seconds=0.5) for i in range(30)],
        ]

    def run(self) -> None:
        self.output().save(0)


def test_cancel_stops_the_build_and_the_registry_shows_it(tmp_path: Path) -> None:
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    marker = tmp_path / "marker.txt"

    async def main() -> float:
        build = asyncio.create_task(sd.build_aio(Both(marker=str(marker)), registry=registry))
        while not marker.exists():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        build.cancel()
        try:
            await build
        except asyncio.CancelledError:
            pass
        return time.perf_counter() - start

    _test_over.clear()
    try:
        took = asyncio.run(main())
        print(f"cancel took {took:.2f} s")
        assert took < 5, f"the cancelled build waited {took:.1f} s for its threads"
        assert marker.read_text() == "saw cancel"
        (build,) = registry.list_builds(limit=1)
        assert build.status == "cancelled"
        statuses = {t.status for t in registry.list_build_tasks(build.id)}
        assert not statuses & {"running", "pending", "suspended"}, statuses
    finally:
        _test_over.set()
        registry.close()


class FailsSoon(sd.AutoTask[int]):
    def run(self) -> None:
        time.sleep(0.2)
        raise RuntimeError("fails on purpose")


class FailFastRoot(sd.AutoTask[int]):
    marker: str

    def requires(self):  # type: ignore[no-untyped-def]
        return [FailsSoon(), Cooperative(marker=self.marker), Stubborn(seconds=20)]

    def run(self) -> None:
        self.output().save(0)


def test_a_second_cancel_while_the_build_winds_down_still_records_it(tmp_path: Path) -> None:
    """Cancel twice (Cancel clicked twice, a second interrupt): the build still ends
    recorded as cancelled, and its worker threads end."""
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    marker = tmp_path / "marker.txt"

    async def main() -> None:
        build = asyncio.create_task(sd.build_aio(Both(marker=str(marker)), registry=registry))
        while not marker.exists():
            await asyncio.sleep(0.01)
        build.cancel()
        await asyncio.sleep(0.3)  # now waiting its grace period for Stubborn
        build.cancel()
        try:
            await build
        except asyncio.CancelledError:
            pass

    _test_over.clear()
    try:
        before = {t.name for t in threading.enumerate()}
        asyncio.run(main())
        (build,) = registry.list_builds(limit=1)
        assert build.status == "cancelled"
        statuses = {t.status for t in registry.list_build_tasks(build.id)}
        assert not statuses & {"running", "pending", "suspended"}, statuses
        time.sleep(0.3)
        idle_workers = [
            t
            for t in threading.enumerate()
            if t.name.startswith("stardag-nb-task") and t.name not in before and t.is_alive()
        ]
        # only the stubborn body's thread may still run (it ignores cancellation)
        assert len(idle_workers) <= 1, idle_workers
    finally:
        _test_over.set()
        registry.close()


def test_fail_fast_tells_running_bodies_to_stop(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    _test_over.clear()
    try:
        start = time.perf_counter()
        summary = sd.build(FailFastRoot(marker=str(marker)), progress=False)
        took = time.perf_counter() - start
        assert summary.status is BuildExitStatus.FAILURE
        assert "fails on purpose" in str(summary.error)
        assert marker.read_text() == "saw cancel"
        assert took < 10, f"fail-fast waited {took:.1f} s for a body that ignores it"
    finally:
        _test_over.set()


class Exits(sd.AutoTask[int]):
    how: str

    def run(self) -> None:
        if self.how == "exit":
            raise SystemExit(3)
        raise KeyboardInterrupt


def test_system_exit_in_a_task_body_fails_the_task_not_the_loop() -> None:
    async def main() -> list[object]:
        ticks: list[object] = []
        for how in ("exit", "keyboard"):
            summary = await sd.build_aio(Exits(how=how))
            ticks.append(summary.status)
            ticks.append(str(summary.error))
        return ticks

    results = asyncio.run(main())  # the loop survives both
    assert results[0] is BuildExitStatus.FAILURE and "SystemExit(3)" in str(results[1])
    assert results[2] is BuildExitStatus.FAILURE and "KeyboardInterrupt" in str(results[3])


_checking = 0
_most_checking = 0


class SlowToCheck(sd.AutoTask[int]):
    """Its completion check takes 0.1 s of I/O (as a remote store's would)."""

    i: int

    async def complete_aio(self) -> bool:
        global _checking, _most_checking
        _checking += 1
        _most_checking = max(_most_checking, _checking)
        await asyncio.sleep(0.1)
        _checking -= 1
        return True

    def run(self) -> None:  # never runs: it is complete
        self.output().save(self.i)


class ChecksMany(sd.AutoTask[int]):
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [SlowToCheck(i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


def test_discovery_checks_remote_targets_concurrently_within_the_limit() -> None:
    global _most_checking
    for limit in (5, 50):
        _most_checking = 0
        start = time.perf_counter()
        summary = sd.build(ChecksMany(n=2 * limit), max_concurrent_discover=limit, progress=False)
        took = time.perf_counter() - start
        assert summary.status is BuildExitStatus.SUCCESS
        assert summary.task_count.previously_completed == 2 * limit
        assert _most_checking == limit, (limit, _most_checking)
        assert took < 2 * limit * 0.1 / 2, f"{took:.2f} s: the checks did not overlap"


_hashing: list[tuple[float, float]] = []


class Hasher(sd.AutoTask[str]):
    """Computes outside the GIL (hashlib releases it for large buffers)."""

    i: int

    def run(self) -> None:
        import hashlib

        data = bytes(64 * 1024 * 1024)
        start = time.monotonic()
        digest = hashlib.sha256(data).hexdigest()
        _hashing.append((start, time.monotonic()))
        self.output().save(digest)


class Hashers(sd.AutoTask[int]):
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [Hasher(i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


def test_bodies_that_compute_outside_the_gil_still_run_side_by_side() -> None:
    """The pool does not grow for short Python bodies (they would only take turns at the
    GIL), but bodies that compute in C without it (hashing, numpy) get more threads."""
    _hashing.clear()
    summary = sd.build(Hashers(n=4), registry=sd.registry.NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    spans = sorted(_hashing)
    overlapping = any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    assert overlapping, f"hashing bodies ran one after another: {spans}"


_trivial_threads: list[str] = []


class Noted(sd.AutoTask[int]):
    """A trivial body that notes the worker thread it ran on."""

    i: int
    after: sd.BaseTask | None = None

    def requires(self):  # type: ignore[no-untyped-def]
        return self.after

    def run(self) -> None:
        _trivial_threads.append(threading.current_thread().name)
        self.output().save(self.i)


class NotedMany(sd.AutoTask[int]):
    n: int
    after: sd.BaseTask | None = None

    def requires(self):  # type: ignore[no-untyped-def]
        return [Noted(i=i, after=self.after) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


def test_the_pool_shrinks_when_bodies_are_short_again() -> None:
    """Sleeping bodies grow the pool; the short bodies after them run on one or two
    threads again (more would only take turns at the GIL and slow the build)."""
    _trivial_threads.clear()
    root = NotedMany(n=600, after=Fan(n=8, seconds=0.05))
    summary = sd.build(root, registry=sd.registry.NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    assert len(_trivial_threads) == 600
    late = set(_trivial_threads[-300:])
    assert len(late) <= 2, f"short bodies still spread over {len(late)} threads: {sorted(late)}"


def test_a_blocked_body_does_not_hold_back_short_ones() -> None:
    """While one body sleeps, the short ones keep running on another worker, which does
    not leave the pool while the sleeper holds the first."""
    _trivial_threads.clear()

    start = time.monotonic()
    summary = sd.build(SleeperBeside(seconds=1.0, n=300), registry=sd.registry.NoOpRegistry())
    elapsed = time.monotonic() - start
    assert summary.status is BuildExitStatus.SUCCESS
    assert len(_trivial_threads) == 300
    assert elapsed < 3.0, f"300 short bodies beside a 1 s sleeper took {elapsed:.2f} s"
    # ... on one worker that stays, not a new thread every few bodies
    used = set(_trivial_threads)
    assert len(used) <= 2, f"short bodies ran on {len(used)} threads"


class SleeperBeside(sd.AutoTask[int]):
    seconds: float
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [Sleeper(i=10_000, seconds=self.seconds), NotedMany(n=self.n)]

    def run(self) -> None:
        self.output().save(self.n)


_napping_threads: set[str] = set()


class Spinner(sd.AutoTask[int]):
    """Pure Python for a while: holds the GIL, keeps the process busy."""

    seconds: float

    def run(self) -> None:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        self.output().save(1)


class Napper(sd.AutoTask[int]):
    i: int

    def run(self) -> None:
        _napping_threads.add(threading.current_thread().name)
        time.sleep(0.03)
        self.output().save(self.i)


class SpinAndNaps(sd.AutoTask[int]):
    def requires(self):  # type: ignore[no-untyped-def]
        return [Spinner(seconds=0.8), *(Napper(i=i) for i in range(60))]

    def run(self) -> None:
        self.output().save(0)


def test_sleeping_bodies_beside_a_busy_one_keep_their_workers() -> None:
    """A body that sleeps while the process is busy (another body computing in Python)
    is not mistaken for a short one slowed by the GIL: its worker stays in the pool
    rather than leaving and being replaced (each sleeper's worker is one of at most
    max_thread_workers threads)."""
    _napping_threads.clear()
    summary = sd.build(SpinAndNaps(), registry=NoOpRegistry())
    assert summary.status is BuildExitStatus.SUCCESS
    assert len(_napping_threads) <= 10, sorted(_napping_threads)

"""Worker threads for sync task bodies, handing results back to the loop in batches.

``run_in_executor`` costs a thread-safe wake-up of the event loop per call. Here workers
take jobs from one queue and append what they finish to a shared list; only the first
result of a batch wakes the loop, which then resolves every future in the batch in one
callback. Trivial tasks so cost little more than the call, and the loop stays free.

While a job runs, :func:`cancelled` in that thread tells whether its build was asked to
stop: sync code cannot be interrupted, so long task bodies poll it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CancelFlag", "ThreadWorkers", "cancelled"]


class CancelFlag:
    """Set once when a build is asked to stop; read by the task bodies of that build."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


_local = threading.local()


def cancelled() -> bool:
    """True if the build running the calling task body was cancelled.

    Long sync ``run()`` bodies call it now and then and return (or raise) early when it
    is True: a thread cannot be stopped from outside, and a cancelled build waits for
    running task bodies only a short grace period. False outside a build.
    """
    flag = getattr(_local, "flag", None)
    return flag is not None and flag.is_set()


class _Job:
    """``fn(arg)`` for each of ``args``, one after another on one worker: each later one
    only if ``proceed`` accepts the result of the one before and nobody cancelled it.
    ``futures`` get the results; ``started`` (None for the first) whether each later
    one started."""

    __slots__ = ("args", "fn", "futures", "proceed", "started")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        args: list[Any],
        futures: list[asyncio.Future[Any]],
        started: list[asyncio.Future[bool] | None],
        proceed: Callable[[Any], bool] | None = None,
    ) -> None:
        self.fn, self.args, self.futures, self.started, self.proceed = (
            fn,
            args,
            futures,
            started,
            proceed,
        )


_STOP = None
_LONG, _SHORT, _CROWDED = 0, 1, 2  # how short a job was (see ThreadWorkers._run)
# Results are held while more jobs wait, and handed back together: each wake-up of the
# loop lets it run its bookkeeping beside the workers, and on a multi-core machine every
# such stretch of two threads taking turns at the GIL costs both of them (1,000 trivial
# tasks: 154 ms with batches of 32, 131-135 ms with 256, 2 cores).
_BATCH = 256  # results held before the loop is woken anyway
_HOLD_SECONDS = 0.02  # ... or after this long (what a progress display shows lags by)
# How often the loop looks for results held behind a long job and for stuck workers
# (to add one); while every job is short and none has run for long, less often (results
# are still handed back within _HOLD_SECONDS).
_TICK_SECONDS = 0.002
_QUIET_TICK_SECONDS = 0.01
_LONG_JOB_SECONDS = 0.003  # a job running this long no longer holds back results
_GROW_AFTER_SECONDS = 0.002  # a worker busy this long with one job may be blocked
# ... unless the jobs before it were short (their running mean below _SHORT_JOB_SECONDS):
# then a job busy for a few milliseconds is more likely waiting for the GIL than blocked
# (another thread's long Python stretch: a lock switch takes up to 5 ms), and a second
# worker would only fight the first for it. Such a job must be busy this long.
_SHORT_JOB_SECONDS = 0.0005
# A short job slowed down by other workers' turns at the GIL: its own CPU time grows too
# (0.3-0.9 ms for a 0.1 ms body among 8 workers), and it ends within a few switch
# intervals; longer, it more likely waited for something else (a sleep, I/O).
_CROWDED_JOB_SECONDS = 0.002
_CROWDED_JOB_WALL_SECONDS = 0.01
_GROW_AFTER_SHORT_JOBS_SECONDS = 0.025
_MEAN_WEIGHT = 0.2  # of the latest job in the running mean of job durations
_BLOCKED_SHARE = 0.3  # ... if it used less CPU than this share of that time
_SATURATED = 0.7  # cores of process CPU above which a waiting worker waits for the GIL


def _thread_clock() -> Callable[[], float] | None:
    """A reader of the calling thread's CPU time usable from other threads, if the
    platform has one (Linux, most Unixes)."""
    try:
        clock_id = time.pthread_getcpuclockid(threading.get_ident())
        time.clock_gettime(clock_id)
    except (AttributeError, OSError):
        return None
    return lambda: time.clock_gettime(clock_id)


_Running = tuple[float, Callable[[], float] | None]  # (job start, the thread's CPU clock)


def _computing(
    key: tuple[int, float],
    clock: Callable[[], float] | None,
    now: float,
    seen: dict[tuple[int, float], tuple[float, float]],
) -> bool | None:
    """Whether a running job's thread has mostly been on a CPU since it was last looked
    at (computing, possibly outside the GIL) rather than waiting; None the first time a
    job is looked at. Its clock is read only here (a system call), not once per job."""
    if clock is None:
        return True  # no per-thread clock here: grow as if it were
    cpu = clock()
    last = seen.get(key)
    seen[key] = (now, cpu)
    if last is None:
        return None
    return cpu - last[1] >= _BLOCKED_SHARE * (now - last[0])


class ThreadWorkers:
    """Up to ``max_workers`` daemon threads running ``fn(arg)`` jobs for one loop.

    The first thread starts with the first job; more start while jobs wait and every
    worker has been busy with one job for a while. :meth:`submit` returns an asyncio
    future resolved on the loop; cancelling it skips the job if no worker has taken it yet.
    """

    def __init__(self, max_workers: int, flag: CancelFlag, name: str = "stardag-nb-task") -> None:
        if max_workers < 1:
            raise ValueError(f"max_thread_workers must be at least 1; got {max_workers}")
        self.max_workers = max_workers
        self.flag = flag
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._started = 0  # threads started so far (names them)
        self._lock = threading.Lock()
        self._finished: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._idle = 0
        self._busy = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_idle: asyncio.Event | None = None
        self._closed = False
        self._reporting = False  # a _deliver is scheduled on the loop
        self._tick_armed = False
        self._running_since: dict[int, _Running] = {}
        self._cpu_seen: dict[tuple[int, float], tuple[float, float]] = {}
        self._held_since = 0.0
        self._sample = (0.0, 0.0)  # (monotonic, process CPU) when growth was last judged
        self._mean_job = _GROW_AFTER_SECONDS  # running mean of job durations (seconds)

    @property
    def busy(self) -> int:
        """Jobs being run right now."""
        return self._busy

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
        """Queue ``fn(arg)``; the future gives its result or raises its exception."""
        future = self._loop_now().create_future()
        self._put(_Job(fn, [arg], [future], [None]))
        return future

    def submit_chain(
        self, fn: Callable[[Any], Any], args: list[Any], proceed: Callable[[Any], bool]
    ) -> list[tuple[asyncio.Future[bool] | None, asyncio.Future[Any]]]:
        """Queue ``fn(arg)`` for each of ``args`` in turn on one worker, each after the one
        before returned a result that ``proceed`` accepts (a chain of tasks each waiting
        only for the one before: no hand-back to the loop between them).

        For each arg: a future that tells whether it started (True) or never will
        (False; None for the first, which always starts), and the future of its result.
        Cancelling a started-future stops the chain before that arg."""
        loop = self._loop_now()
        futures = [loop.create_future() for _ in args]
        started: list[asyncio.Future[bool] | None] = [None] + [
            loop.create_future() for _ in args[1:]
        ]
        self._put(_Job(fn, list(args), futures, started, proceed))
        return list(zip(started, futures, strict=True))

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _put(self, job: _Job) -> None:
        self._jobs.put(job)
        if not self._threads:
            self._maybe_start_worker()
        self._arm()

    def _arm(self) -> None:
        """Schedule the next :meth:`_tick`, unless one is scheduled."""
        if self._tick_armed:
            return
        self._tick_armed = True
        # Each tick wakes the loop, which then takes the GIL from the workers: while
        # every job is short and none runs long enough to look stuck soon, less often.
        quiet = self._mean_job < _SHORT_JOB_SECONDS
        if quiet:
            now = time.monotonic()
            with self._lock:
                quiet = all(
                    now - since < _GROW_AFTER_SHORT_JOBS_SECONDS - _QUIET_TICK_SECONDS
                    for since, _ in self._running_since.values()
                )
        self._loop.call_later(  # type: ignore[union-attr]
            _QUIET_TICK_SECONDS if quiet else _TICK_SECONDS, self._tick
        )

    def _tick(self) -> None:
        """(On the loop, every few ms while workers are busy or jobs wait) take the
        results held when a worker moved on to a long job (it must not keep the short
        ones before it) or when they are due; add a worker if every one looks stuck."""
        self._tick_armed = False
        if self._finished and not self._reporting and self._held_too_long():
            self._deliver()
        if not self._jobs.empty() and not self._closed and len(self._threads) < self.max_workers:
            self._grow()
        # (while results are held, too: a worker may have taken a job without being
        # counted busy yet, and no one else would hand them back before it ends)
        if self._busy or self._finished or not self._jobs.empty():
            self._arm()

    def _held_too_long(self) -> bool:
        """Whether results held should go to the loop now, though workers are busy:
        they are due, or a running job has run long enough to look long."""
        now = time.monotonic()
        with self._lock:
            if self._due():
                return True
            return any(
                now - since >= _LONG_JOB_SECONDS for since, _ in self._running_since.values()
            )

    def _grow(self) -> None:
        """(From :meth:`_tick`, while jobs wait) Add a worker if every worker is blocked
        in its job (sleeping, waiting on I/O) or computing outside the GIL. Workers that
        only wait for the GIL (short Python bodies, while the loop does its bookkeeping)
        are not blocked: more threads would only take turns at it."""
        now, cpu = time.monotonic(), time.process_time()
        last_now, last_cpu = self._sample
        self._sample = (now, cpu)
        with self._lock:
            running = list(self._running_since.items())
            stuck = self._idle == 0 and bool(running)
        after = (
            _GROW_AFTER_SHORT_JOBS_SECONDS
            if self._mean_job < _SHORT_JOB_SECONDS
            else _GROW_AFTER_SECONDS
        )
        stuck = stuck and all(now - since >= after for _, (since, _) in running)
        if not stuck:
            self._cpu_seen.clear()
        elif now - last_now < 2 * _QUIET_TICK_SECONDS:  # a fresh sample (the last tick's)
            utilisation = (cpu - last_cpu) / max(now - last_now, 1e-6)
            if utilisation < _SATURATED or self._all_computing(running, now):
                self._maybe_start_worker()

    def _all_computing(self, running: list[tuple[int, _Running]], now: float) -> bool:
        """Whether every running job is computing (judged from the second look on)."""
        seen = self._cpu_seen
        verdicts = [_computing((me, since), clock, now, seen) for me, (since, clock) in running]
        current = {(me, since) for me, (since, _) in running}
        for key in [key for key in seen if key not in current]:
            del seen[key]
        return all(verdict is True for verdict in verdicts)

    def _maybe_start_worker(self) -> None:
        """Start one more worker if every worker is busy and the pool is not full."""
        with self._lock:
            start = not self._closed and self._idle == 0 and len(self._threads) < self.max_workers
            if start:
                self._idle += 1  # counted idle until it takes its first job
                self._started += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{self._started - 1}", daemon=True
                )
                self._threads.append(thread)
        if start:
            thread.start()

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        me = threading.get_ident()
        clock = _thread_clock()
        _local.flag = self.flag
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                self._report()  # nothing more to run now: hand back what is held
                job = jobs.get()
            if job is _STOP:
                with lock:
                    self._idle -= 1
                self._report()
                return
            with lock:
                self._idle -= 1
                self._busy += 1
            short = _LONG
            try:
                short = self._run(job, me, clock)
            finally:
                with lock:
                    self._busy -= 1
                    self._idle += 1
                    due = self._due()
                    retire = self._surplus(short)
                if due or retire:
                    self._report()
            if retire:
                return

    def _surplus(self, short: int) -> bool:
        """(self._lock held, by a worker between jobs) Whether this worker should leave
        the pool: its last job was short (see :meth:`_run`), so it was at most waiting
        for the GIL, and more workers would only take turns at it. Not while another
        worker's job looks blocked (this one is then needed), unless this job was
        ``_CROWDED`` (the others then most likely wait for the GIL too). It is no longer
        counted; growth may start another later."""
        if short == _LONG or self._closed or len(self._threads) < 2:
            return False
        now = time.monotonic()
        if short == _SHORT and any(
            now - since >= _GROW_AFTER_SECONDS for since, _ in self._running_since.values()
        ):
            return False
        me = threading.current_thread()
        if me not in self._threads:
            return False
        self._threads.remove(me)
        self._idle -= 1
        return True

    def _run(self, job: _Job, me: int, clock: Callable[[], float] | None) -> int:
        """Run a job's calls in turn, handing back each result (and each start).
        How short the last call was: _SHORT (little CPU, done within a GIL switch
        interval), _CROWDED (little CPU, slow only while the process was busy) or _LONG.

        CPU clocks (system calls) are read only while jobs have not all been short of
        late: a call shorter than _SHORT_JOB_SECONDS of wall time is short whatever its
        CPU time; a longer one among short ones counts as long (its worker stays)."""
        short = _LONG
        lock = self._lock
        for i, arg in enumerate(job.args):
            started = job.started[i]
            # A cancelled future is final, so reading its state here is safe: the job
            # (its build) was cancelled before this call started.
            if job.futures[i].cancelled() or (started is not None and started.cancelled()):
                self._stop_chain(job, i)
                return short
            if started is not None:
                self._hand_back(started, True, True)
            timed = self._mean_job >= _SHORT_JOB_SECONDS  # (a hint: read without the lock)
            with lock:
                self._running_since[me] = (time.monotonic(), clock)
            if timed:
                cpu, process_cpu = time.thread_time(), time.process_time()
            try:
                value, ok = job.fn(arg), True
            except StopIteration as exc:  # a future refuses it (it would end a coroutine)
                value, ok = RuntimeError(f"the task body raised {exc!r}"), False
                value.__cause__ = exc
            except Exception as exc:  # handed to the awaiting coroutine
                value, ok = exc, False
            except BaseException as exc:
                # SystemExit or KeyboardInterrupt raised by a task body: the task
                # fails; re-raised on the loop they would stop it (and a kernel).
                value, ok = RuntimeError(f"the task body raised {exc!r}"), False
                value.__cause__ = exc
            if timed:
                cpu = time.thread_time() - cpu
                process_cpu = time.process_time() - process_cpu
            with lock:  # the call ends, and its result is held for the loop
                since, _ = self._running_since.pop(me)
                now = time.monotonic()
                wall = now - since
                self._mean_job += _MEAN_WEIGHT * (wall - self._mean_job)
                crowded = self._busy > 2
                due = self._hold(job.futures[i], ok, value, now)
            if due:
                self._report()
            # Several workers taking turns at the GIL make each other's trivial jobs
            # slow: none would look short, and none would ever leave.
            if wall < _SHORT_JOB_SECONDS and wall < sys.getswitchinterval():
                short = _SHORT
            elif not timed:
                short = _LONG
            elif cpu < _SHORT_JOB_SECONDS and wall < sys.getswitchinterval():
                short = _SHORT
            elif (
                crowded
                and cpu < _CROWDED_JOB_SECONDS
                and wall < _CROWDED_JOB_WALL_SECONDS
                and process_cpu >= _SATURATED * wall
            ):
                short = _CROWDED
            else:
                short = _LONG
            last = i + 1 == len(job.args)
            if not last and not (
                ok and job.proceed is not None and job.proceed(value) and not self.flag.is_set()
            ):
                self._stop_chain(job, i + 1)
                return short
        return short

    def _stop_chain(self, job: _Job, start: int) -> None:
        """The calls from ``start`` on will not run: say so to whoever waits for them."""
        for started in job.started[start:]:
            if started is not None:
                self._hand_back(started, True, False)

    def _hand_back(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        """Hold a result for the loop; wake it when a batch is due."""
        with self._lock:
            due = self._hold(future, ok, value, time.monotonic())
        if due:
            self._report()

    def _hold(self, future: asyncio.Future[Any], ok: bool, value: Any, now: float) -> bool:
        """(self._lock held) Hold a result for the loop; whether a batch is due."""
        if not self._finished:
            self._held_since = now
        self._finished.append((future, ok, value))
        return self._due()

    def _due(self) -> bool:
        """(self._lock held) Whether the results held should go to the loop now: while
        more jobs wait, they are held briefly, so that one wake-up of the loop hands back
        a batch (waking it per job costs more than a trivial job)."""
        finished = self._finished
        return len(finished) >= _BATCH or (
            bool(finished) and time.monotonic() - self._held_since >= _HOLD_SECONDS
        )

    def _report(self) -> None:
        """Wake the loop to deliver the results held, unless a wake-up is on its way."""
        with self._lock:
            if not self._finished or self._reporting:
                return
            self._reporting = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._deliver)  # type: ignore[union-attr]

    def _deliver(self) -> None:
        with self._lock:
            batch = self._finished.copy()
            self._finished.clear()  # the same list: workers hold a reference to it
            self._reporting = False
            idle = self._busy == 0
        for future, ok, value in batch:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if idle and self._all_idle is not None:
            self._all_idle.set()

    # A bounded wait that reports whether it ended in time (like ``Event.wait``):
    # the caller acts on the answer, so a cancelling ``asyncio.timeout`` does not fit.
    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for running jobs to end; True if they did."""
        if self._busy == 0:
            return True
        self._all_idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._all_idle.wait(), timeout)
        except TimeoutError:
            return self._busy == 0
        finally:
            self._all_idle = None
        return True

    def shutdown(self) -> None:
        """Let the threads exit once the queue is drained (they are daemons: a job
        still running does not keep the process alive)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(_STOP)

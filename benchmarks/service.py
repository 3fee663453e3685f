"""Benchmark: ``sd.build`` against the registry service, per task and per request.

    python -m benchmarks.service [--runs 5] [--wide 200] [--chain 100] [--no-postgres]
                                 [--load-clients 50] [--load-tasks 20] [--no-builds]

Starts the real service (``python -m stardag_nb.cli serve --init``) as a subprocess on a
fresh SQLite database and a second one on the throwaway PostgreSQL server of
``tests/pg_server.py`` (unless ``--no-postgres``), creates an API key through the admin
API, and builds trivial ``AutoTask[int]`` DAGs with ``APIRegistry``, both ways:

- ``v1``: one request per write (``APIRegistry(batch_writes=False)``, what stardag
  0.1.0's client does: register, start and complete each task);
- ``batch``: the writes queued and sent in batches (extension ``batch-v1``, the default).

Workloads: wide (1 root + N leaves, default 200) and chain (N tasks in a line, default
100). The same DAG is built with no registry and with the embedded ``SQLiteRegistry``
(the reference: ``ratio`` is per-task time over the SQLite registry's). Every run builds
new tasks (a ``run`` field in each task) into fresh target directories; the registries
are interleaved within each run so that machine noise hits them alike. Columns:

- ``per task``: wall time of ``sd.build`` / number of tasks (median of the runs);
- ``ratio``: that over the embedded registry's; ``range``: the lowest and highest ratio
  of single runs (each against the embedded registry's build of the same run), which
  shows how noisy the machine was;
- ``req/task``: HTTP requests the client sent per task (counted on the client side);
- ``srv ms/req`` and ``srv us/task``: the server process's CPU time (user + system,
  psutil; all runs summed) per request and per task;
- ``cli ms/req``: this process's CPU time per request, over and above the no-registry build.

Then load runs on PostgreSQL, against ``stardag-nb serve --workers 1`` and ``--workers 2``:
``--load-clients`` (50) concurrent clients, each on its own keep-alive connection, each
making the calls of builds of ``--load-tasks`` (20) tasks, each depending on the one
before, as a v1 client does (start the build; register, start and complete each task;
complete it) and as our client does with batches (start the build; its writes in
batches of 10 tasks, the build's end in the last). They print requests/s, task writes
(register, start, complete) per second, p50 and p99 latency per request as the clients
see it, errors (any answer other than the expected status, or no answer) and the server's
CPU per request (all its processes): the median of three rounds, after a round of the
same size to warm up, the lowest and highest p99 of the three, and the errors of all
four. The load clients
speak HTTP/1.1 on asyncio streams (:class:`RawHTTP`): httpx would cost them ~1 ms of
CPU per request, taken from the same two cores as the server's. Targets (issue 11): 0
errors, p99 under 100 ms.

Figures only: nothing is asserted. The server logs to ``<workdir>/serve-1.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Isolate the client's configuration (target-root cache, profiles) before stardag_nb reads it;
# STARDAG_NB_* (the test servers' settings, e.g. STARDAG_NB_PG_BIN) stay.
_HOME = tempfile.mkdtemp(prefix="stardag-nb-bench-home-")
for _key in [k for k in os.environ if k.startswith("STARDAG_") and not k.startswith("STARDAG_NB_")]:
    del os.environ[_key]
os.environ.update(HOME=_HOME, STARDAG_HOME=os.path.join(_HOME, ".stardag"), COMMIT_HASH="bench")

import psutil  # noqa: E402

import stardag_nb as sd  # noqa: E402
from stardag_nb.registry import NoOpRegistry, RegistryABC  # noqa: E402
from stardag_nb.utils.testing import target_roots_override  # noqa: E402


class SvcLeaf(sd.AutoTask[int]):
    run_no: int
    i: int

    def run(self) -> None:
        self.output().save(self.i)


class SvcRoot(sd.AutoTask[int]):
    run_no: int
    n: int

    def requires(self):  # type: ignore[no-untyped-def]
        return [SvcLeaf(run_no=self.run_no, i=i) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


class SvcLink(sd.AutoTask[int]):
    run_no: int
    i: int

    def requires(self):  # type: ignore[no-untyped-def]
        return SvcLink(run_no=self.run_no, i=self.i - 1) if self.i > 0 else None

    def run(self) -> None:
        self.output().save(self.i)


# -- the service ---------------------------------------------------------------------


@dataclass
class Service:
    """A running ``stardag-nb serve`` and an API key of its ``default/main``."""

    label: str
    proc: Any  # tests.service_proc.ServiceProcess
    key: str
    ps: psutil.Process

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)


@contextmanager
def service(
    label: str, database_url: str, workdir: Path, args: tuple[str, ...] = ()
) -> Iterator[Service]:
    from tests.service_proc import ServiceProcess

    proc = ServiceProcess(database_url, workdir, args=args)
    try:
        proc.start()
        assert proc.pid is not None
        yield Service(label, proc, proc.create_api_key(name="bench"), psutil.Process(proc.pid))
    finally:
        proc.stop()


class CountingAPIRegistry:
    """An ``APIRegistry`` whose HTTP requests (sync and async) are counted."""

    def __new__(cls, url: str, key: str, batch_writes: bool = True) -> Any:
        from stardag_nb.registry import APIRegistry

        registry = APIRegistry(api_url=url, api_key=key, batch_writes=batch_writes)
        http = registry._http
        counter = {"requests": 0}
        sync_request, async_request = http.request, http.arequest

        def request(*args: Any, **kwargs: Any) -> Any:
            counter["requests"] += 1
            return sync_request(*args, **kwargs)

        async def arequest(*args: Any, **kwargs: Any) -> Any:
            counter["requests"] += 1
            return await async_request(*args, **kwargs)

        http.request = request  # type: ignore[method-assign]
        http.arequest = arequest  # type: ignore[method-assign]
        registry.bench_counter = counter  # type: ignore[attr-defined]
        return registry


# -- measurement ---------------------------------------------------------------------


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def _check(summary: Any) -> None:
    if summary.status != "success":
        raise SystemExit(f"build failed: {summary}")


def _one_build(
    make: Callable[[], sd.BaseTask], registry: RegistryABC, root: str, svc: Service | None
) -> tuple[float, float, float, int]:
    counter = getattr(registry, "bench_counter", {"requests": 0})
    before_requests = counter["requests"]
    before_server = svc.cpu() if svc else 0.0
    with target_roots_override({"default": root}):
        cpu0, t0 = time.process_time(), time.perf_counter()
        _check(sd.build(make(), registry=registry, progress=False))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server = (svc.cpu() - before_server) if svc else 0.0
    return wall, cpu, server, counter["requests"] - before_requests


def measure(base: str, runs: int, services: list[Service], wide: int, chain: int) -> None:
    from stardag_nb.registry import SQLiteRegistry  # type: ignore[attr-defined]

    workloads: list[tuple[str, int, Callable[[int], sd.BaseTask]]] = [
        (f"wide {wide}", wide + 1, lambda r: SvcRoot(run_no=r, n=wide)),
        (f"chain {chain}", chain, lambda r: SvcLink(run_no=r, i=chain - 1)),
    ]
    api: dict[str, tuple[Service, Any]] = {}
    for service_ in services:
        for mode in ("v1", "batch"):
            client = CountingAPIRegistry(
                service_.proc.url, service_.key, batch_writes=mode == "batch"
            )
            api[f"{service_.label} {mode}"] = (service_, client)
    labels = ["none", "sqlite (ref)", *api]
    print(
        f"sd.build against the registry service, median of {runs} runs "
        f"(targets: {base}; CPUs: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f})"
    )
    header = (
        f"{'workload':<11}{'registry':<19}{'per task':>10}{'ratio':>8}{'range':>13}"
        f"{'req/task':>9}{'srv ms/req':>11}{'srv us/task':>12}{'cli ms/req':>11}"
    )
    print(header)
    run_no = 0
    for name, n, make in workloads:
        samples = {label: Sample() for label in labels}
        for run in range(runs + 1):  # run 0 warms up (imports, connections, server caches)
            walls: dict[str, float] = {}
            for label in labels:
                run_no += 1
                root = tempfile.mkdtemp(dir=base)
                svc: Service | None = api[label][0] if label in api else None
                registry: RegistryABC
                if label == "none":
                    registry = NoOpRegistry()
                elif label.startswith("sqlite"):
                    registry = SQLiteRegistry(os.path.join(root, "registry.sqlite3"))
                else:
                    registry = api[label][1]
                wall, cpu, server, requests = _one_build(
                    lambda r=run_no, m=make: m(r),
                    registry,
                    root,
                    svc,  # type: ignore[misc]
                )
                if label.startswith("sqlite"):
                    registry.close()  # type: ignore[attr-defined]
                shutil.rmtree(root, ignore_errors=True)
                walls[label] = wall
                if run:
                    sample = samples[label]
                    sample.wall.append(wall)
                    sample.client_cpu.append(cpu)
                    sample.server_cpu.append(server)
                    sample.requests.append(requests)
            if run:
                for label in labels:
                    samples[label].ratios.append(walls[label] / walls["sqlite (ref)"])
        ref = statistics.median(samples["sqlite (ref)"].wall)
        floor_cpu = statistics.median(samples["none"].client_cpu)
        for label in labels:
            sample = samples[label]
            wall = statistics.median(sample.wall)
            spread = f"{min(sample.ratios):.2f}-{max(sample.ratios):.2f}x"
            line = f"{name:<11}{label:<19}{wall / n * 1e6:>8.0f}us{wall / ref:>7.2f}x{spread:>13}"
            requests = statistics.median(sample.requests)
            if requests:
                total_requests = sum(sample.requests)
                server_cpu = sum(sample.server_cpu)
                extra_cli = statistics.median(sample.client_cpu) - floor_cpu
                line += f"{requests / n:>9.2f}{server_cpu / total_requests * 1e3:>11.2f}"
                line += f"{server_cpu / (n * len(sample.wall)) * 1e6:>12.0f}"
                line += f"{extra_cli / requests * 1e3:>11.2f}"
            print(line)
    for _, client in api.values():
        client.close()


# -- load: many clients at once -------------------------------------------------------


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load clients: it
    spends a fraction of httpx's CPU per request, so the run measures the server."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host}:{self.port}\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request; its status and body (``Content-Length`` or chunked)."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        content = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\n{self._head}"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self._writer.write(f"{head}Content-Length: {len(content)}\r\n\r\n".encode() + content)
        lines = (await self._reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if length is not None:
            return status, await self._reader.readexactly(length)
        parts = []
        while chunked:
            size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                break
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
        return status, b"".join(parts)


@dataclass
class LoadResult:
    requests: int
    task_writes: int
    seconds: float
    latencies: list[float]
    errors: list[str]


class _Calls:
    """One load client's requests, timed and checked."""

    def __init__(self, client: RawHTTP, result: LoadResult) -> None:
        self.client = client
        self.result = result

    async def __call__(self, method: str, path: str, expect: int, body: Any = None) -> Any:
        t0 = time.perf_counter()
        try:
            status, data = await self.client.request(method, path, body)
        except Exception as exc:  # counted and shown, not raised
            self.result.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        self.result.latencies.append(time.perf_counter() - t0)
        if status != expect:
            self.result.errors.append(f"{method} {path}: {status} {data[:200]!r}")
            return None
        return json.loads(data)


def _load_task(no: int, i: int, ids: list[str]) -> dict[str, Any]:
    return {
        "task_id": ids[i],
        "task_name": "LoadTask",
        "task_data": {"client": no, "i": i},
        "version": "1",
        "dependency_task_ids": ids[i - 1 : i],
    }


async def _v1_client(call: _Calls, no: int, tasks: int, builds: int) -> None:
    for _ in range(builds):
        ids = [f"load-{no}-{i}-{time.time_ns()}" for i in range(tasks)]
        build = await call("POST", "/api/v1/builds", 201, {"root_task_ids": ids[-1:]})
        if build is None:
            return
        base = f"/api/v1/builds/{build['id']}"
        for i, task_id in enumerate(ids):
            await call("POST", f"{base}/tasks", 201, _load_task(no, i, ids))
            await call("POST", f"{base}/tasks/{task_id}/start", 200)
            await call("POST", f"{base}/tasks/{task_id}/complete", 200)
            call.result.task_writes += 3
        await call("POST", f"{base}/complete", 200)


BATCH_TASKS = 10
"""Tasks per batch in the batched load (each 3 operations)."""


async def _batch_client(call: _Calls, no: int, tasks: int, builds: int) -> None:
    for _ in range(builds):
        ids = [f"load-{no}-{i}-{time.time_ns()}" for i in range(tasks)]
        build = await call("POST", "/api/v1/builds", 201, {"root_task_ids": ids[-1:]})
        if build is None:
            return
        path = f"/api/v1/ext/batch/builds/{build['id']}"
        for first in range(0, tasks, BATCH_TASKS):
            ops: list[dict[str, Any]] = []
            for i in range(first, min(tasks, first + BATCH_TASKS)):
                ops.append({"op": "register", "task": _load_task(no, i, ids)})
                ops.append({"op": "start", "task_id": ids[i]})
                ops.append({"op": "complete", "task_id": ids[i]})
            if first + BATCH_TASKS >= tasks:
                ops.append({"op": "build-complete"})
            answer = await call("POST", path, 200, {"batch_id": str(uuid.uuid4()), "ops": ops})
            if answer is not None:
                refused = [r for r in answer["results"] if not r["ok"]]
                if refused:
                    call.result.errors.append(f"POST {path}: refused {refused[:2]}")
                call.result.task_writes += 3 * min(BATCH_TASKS, tasks - first)


async def _load(
    url: str, key: str, clients: int, tasks: int, builds: int, batched: bool
) -> LoadResult:
    result = LoadResult(0, 0, 0.0, [], [])
    sessions = [RawHTTP(url, {"X-API-Key": key}) for _ in range(clients)]
    try:
        for session in sessions:  # connect first: the run measures requests, not handshakes
            await session.request("GET", "/health")
        client = _batch_client if batched else _v1_client
        t0 = time.perf_counter()
        await asyncio.gather(
            *(client(_Calls(s, result), n, tasks, builds) for n, s in enumerate(sessions))
        )
        result.seconds = time.perf_counter() - t0
    finally:
        for session in sessions:
            await session.close()
    result.requests = len(result.latencies) + len(result.errors)
    return result


def _server_cpu(svc: Service) -> float:
    """CPU seconds of the server and its worker processes."""
    total = 0.0
    for proc in [svc.ps, *svc.ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


LOAD_ROUNDS = 3
"""Measured rounds of each load run (after one unmeasured round of the same size)."""


def load_run(url_for: Callable[[str], str], work: Path, clients: int, tasks: int) -> None:
    print(
        f"\nload on PostgreSQL: {clients} clients at once, each building {tasks}-task builds "
        f"(v1: {3 * tasks + 2} requests per build; batch: {1 + -(-tasks // BATCH_TASKS)}); "
        f"median of {LOAD_ROUNDS} rounds after one to warm up (p99 range: lowest-highest "
        "round; errors: all rounds, the warm-up's too); targets: 0 errors, p99 < 100 ms"
    )
    print(
        f"{'server':<20}{'client':<8}{'req/s':>8}{'writes/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99 range':>14}{'errors':>8}{'srv ms/req':>12}"
    )
    for workers in (1, 2):
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        args = ("--workers", str(workers)) if workers > 1 else ()
        with service(label, url_for(f"load{workers}"), work / f"load{workers}", args) as svc:
            for batched, builds in ((False, 1), (True, 10)):
                # warm up at full size: the first round on a new database runs while the
                # statistics keeper catches up with the growing tables
                warm_up = _load_round(svc, clients, tasks, builds, batched)
                rounds = [_load_round(svc, clients, tasks, builds, batched)
                          for _ in range(LOAD_ROUNDS)]  # fmt: skip
                rate, writes, p50, p99, cpu = (
                    statistics.median(r[i] for r in rounds) for i in range(5)
                )
                errors = [e for r in (warm_up, *rounds) for e in r[5]]
                p99s = sorted(r[3] for r in rounds)
                print(
                    f"{label:<20}{'batch' if batched else 'v1':<8}{rate:>8.0f}{writes:>10.0f}"
                    f"{p50 * 1e3:>9.1f}{p99 * 1e3:>9.1f}"
                    f"{f'{p99s[0] * 1e3:.0f}-{p99s[-1] * 1e3:.0f}':>14}{len(errors):>8}"
                    f"{cpu * 1e3:>12.2f}"
                )
                for error in errors[:3]:
                    print(f"    {error}")


def _load_round(
    svc: Service, clients: int, tasks: int, builds: int, batched: bool
) -> tuple[float, float, float, float, float, list[str]]:
    """One load round: requests/s, task writes/s, p50 and p99 (s), server CPU per request
    (s), errors."""
    cpu0 = _server_cpu(svc)
    result = asyncio.run(_load(svc.proc.url, svc.key, clients, tasks, builds, batched))
    cpu = _server_cpu(svc) - cpu0
    latencies = sorted(result.latencies) or [float("nan")]
    return (
        result.requests / result.seconds,
        result.task_writes / result.seconds,
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        cpu / max(1, result.requests),
        result.errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--wide", type=int, default=200, help="leaves of the wide DAG")
    parser.add_argument("--chain", type=int, default=100, help="length of the chain")
    parser.add_argument("--root", default=None, help="directory for targets (default: /dev/shm)")
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="SQLite only: no PostgreSQL server (tests/pg_server.py), no load runs",
    )
    parser.add_argument("--postgres", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument("--load-clients", type=int, default=50, help="clients of the load run")
    parser.add_argument("--load-tasks", type=int, default=20, help="tasks per load build")
    parser.add_argument(
        "--no-builds", action="store_true", help="skip the sd.build figures (load runs only)"
    )
    args = parser.parse_args()
    logging.getLogger("stardag_nb").setLevel(logging.ERROR)
    base = args.root or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    base = tempfile.mkdtemp(prefix="stardag-nb-bench-", dir=base)
    work = Path(base) / "service"  # the service's database next to the embedded one's
    postgres = not args.no_postgres
    if postgres:
        from tests.pg_server import postgres_available

        if not postgres_available():
            print(
                "PostgreSQL server binaries not found (scripts/system_deps.sh --postgres-only "
                "installs them; STARDAG_NB_PG_BIN names another bin dir): the PostgreSQL "
                "rows and the load runs are left out.",
                flush=True,
            )
            postgres = False
    try:
        from tests.service_proc import sqlite_url

        if not args.no_builds:
            with ExitStack() as stack:
                services = [
                    stack.enter_context(
                        service("api sqlite", sqlite_url(work / "service.sqlite3"), work / "sqlite")
                    )
                ]
                if postgres:
                    from tests.pg_server import postgres_server

                    url = postgres_server().new_database_url("bench")
                    services.append(stack.enter_context(service("api postgres", url, work / "pg")))
                measure(base, args.runs, services, args.wide, args.chain)
        if postgres and args.load_clients > 0:
            from tests.pg_server import postgres_server

            load_run(postgres_server().new_database_url, work, args.load_clients, args.load_tasks)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()

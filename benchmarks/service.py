"""Benchmark: ``sd.build`` against the registry service, per task and per request.

    python -m benchmarks.service [--runs 5] [--wide 200] [--chain 100] [--postgres]
                                 [--load-clients 50] [--load-tasks 20] [--no-builds]

Starts the real service (``python -m stardag_nb.cli serve --init``) as a subprocess on a
fresh SQLite database (and, with ``--postgres``, a second one on the throwaway PostgreSQL
server of ``tests/pg_server.py``), creates an API key through the admin API, and builds
trivial ``AutoTask[int]`` DAGs with ``APIRegistry``:

- wide: 1 root + N leaves (default 200);
- chain: N tasks in a line (default 100).

The same DAG is built with no registry and with the embedded ``SQLiteRegistry`` (the
reference: ``ratio`` is per-task time over the SQLite registry's). Every run builds new
tasks (a ``run`` field in each task) into fresh target directories; the registries are
interleaved within each run so that machine noise hits them alike. Columns:

- ``per task``: wall time of ``sd.build`` / number of tasks (median of the runs);
- ``req/task``: HTTP requests the client sent per task (counted on the client side);
- ``srv ms/req``: the server process's CPU time (user + system, psutil) per request;
- ``cli ms/req``: this process's CPU time per request, over and above the no-registry build.

With ``--postgres`` a load run follows: ``--load-clients`` (50) concurrent clients, each
on its own keep-alive connection, each making the v1 calls of a build (start it; register,
start and complete ``--load-tasks`` tasks, each depending on the one before; complete it)
against ``stardag-nb serve --workers 1`` and ``--workers 2`` on PostgreSQL. It prints
requests/s, p50 and p99 latency per request (as the clients see it) and errors (any
answer other than the expected status, or no answer). Targets (issue 11): 0 errors, p99
under 100 ms.

Figures only: nothing is asserted. The server logs to ``<workdir>/serve-1.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Isolate the client's configuration (target-root cache, profiles) before stardag_nb reads it.
_HOME = tempfile.mkdtemp(prefix="stardag-nb-bench-home-")
for _key in [k for k in os.environ if k.startswith("STARDAG_")]:
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

    def __new__(cls, url: str, key: str) -> Any:
        from stardag_nb.registry import APIRegistry

        registry = APIRegistry(api_url=url, api_key=key)
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
    api = {svc.label: CountingAPIRegistry(svc.proc.url, svc.key) for svc in services}
    labels = ["none", "sqlite (ref)", *api]
    print(
        f"sd.build against the registry service, median of {runs} "
        f"(targets: {base}; CPUs: {os.cpu_count()})"
    )
    header = (
        f"{'workload':<12}{'registry':<16}{'per task':>10}{'ratio':>8}"
        f"{'req/task':>10}{'srv ms/req':>12}{'cli ms/req':>12}"
    )
    print(header)
    run_no = 0
    for name, n, make in workloads:
        samples = {label: Sample() for label in labels}
        for run in range(runs + 1):  # run 0 warms up (imports, connections, server caches)
            for label in labels:
                run_no += 1
                root = tempfile.mkdtemp(dir=base)
                svc = next((s for s in services if s.label == label), None)
                registry: RegistryABC
                if label == "none":
                    registry = NoOpRegistry()
                elif label.startswith("sqlite"):
                    registry = SQLiteRegistry(os.path.join(root, "registry.sqlite3"))
                else:
                    registry = api[label]
                wall, cpu, server, requests = _one_build(
                    lambda r=run_no: make(r),
                    registry,
                    root,
                    svc,  # type: ignore[misc]
                )
                if label.startswith("sqlite"):
                    registry.close()  # type: ignore[attr-defined]
                shutil.rmtree(root, ignore_errors=True)
                if run:
                    sample = samples[label]
                    sample.wall.append(wall)
                    sample.client_cpu.append(cpu)
                    sample.server_cpu.append(server)
                    sample.requests.append(requests)
        ref = statistics.median(samples["sqlite (ref)"].wall)
        floor_cpu = statistics.median(samples["none"].client_cpu)
        for label in labels:
            sample = samples[label]
            wall = statistics.median(sample.wall)
            line = f"{name:<12}{label:<16}{wall / n * 1e6:>8.0f}us{wall / ref:>7.2f}x"
            requests = statistics.median(sample.requests)
            if requests:
                per_req_srv = statistics.median(
                    s / r for s, r in zip(sample.server_cpu, sample.requests, strict=True)
                )
                extra_cli = statistics.median(sample.client_cpu) - floor_cpu
                line += f"{requests / n:>10.2f}{per_req_srv * 1e3:>12.2f}"
                line += f"{extra_cli / requests * 1e3:>12.2f}"
            print(line)
    for registry in api.values():
        registry.close()


# -- load: many clients at once -------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    errors: list[str]


async def _load_client(
    client: Any, no: int, tasks: int, latencies: list[float], errors: list[str]
) -> None:
    async def call(method: str, path: str, expect: int, json: Any = None) -> Any:
        t0 = time.perf_counter()
        try:
            response = await client.request(method, path, json=json)
        except Exception as exc:  # noqa: BLE001 - counted and shown, not raised
            errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        latencies.append(time.perf_counter() - t0)
        if response.status_code != expect:
            errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        return response.json()

    ids = [f"load-{no}-{i}-{time.time_ns()}" for i in range(tasks)]
    build = await call("POST", "/api/v1/builds", 201, {"root_task_ids": ids[-1:]})
    if build is None:
        return
    base = f"/api/v1/builds/{build['id']}"
    for i, task_id in enumerate(ids):
        body = {
            "task_id": task_id,
            "task_name": "LoadTask",
            "task_data": {"client": no, "i": i},
            "version": "1",
            "dependency_task_ids": ids[i - 1 : i],
        }
        await call("POST", f"{base}/tasks", 201, body)
        await call("POST", f"{base}/tasks/{task_id}/start", 200)
        await call("POST", f"{base}/tasks/{task_id}/complete", 200)
    await call("POST", f"{base}/complete", 200)


async def _load(url: str, key: str, clients: int, tasks: int) -> LoadResult:
    import asyncio

    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    async with AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    headers={"X-API-Key": key},
                    timeout=60.0,
                    limits=httpx.Limits(max_connections=1),
                )
            )
            for _ in range(clients)
        ]
        for session in sessions:  # connect first: the run measures requests, not handshakes
            await session.get("/health")
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_load_client(s, n, tasks, latencies, errors) for n, s in enumerate(sessions))
        )
        seconds = time.perf_counter() - t0
    return LoadResult(len(latencies) + len(errors), seconds, latencies, errors)


def load_run(url_for: Callable[[str], str], work: Path, clients: int, tasks: int) -> None:
    import asyncio

    print(
        f"\nload: {clients} clients at once, each a build of {tasks} tasks over the v1 routes "
        f"({3 * tasks + 2} requests per client; targets: 0 errors, p99 < 100 ms)"
    )
    print(f"{'server':<26}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for workers in (1, 2):
        label = f"postgres, {workers} worker{'s' if workers > 1 else ''}"
        args = ("--workers", str(workers)) if workers > 1 else ()
        with service(label, url_for(f"load{workers}"), work / f"load{workers}", args) as svc:
            asyncio.run(_load(svc.proc.url, svc.key, clients, 2))  # warm up connections
            result = asyncio.run(_load(svc.proc.url, svc.key, clients, tasks))
        latencies = sorted(result.latencies) or [float("nan")]
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"{label:<26}{result.requests / result.seconds:>8.0f}{p50 * 1e3:>9.1f}"
            f"{p99 * 1e3:>9.1f}{len(result.errors):>8}"
        )
        for error in result.errors[:3]:
            print(f"    {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--wide", type=int, default=200, help="leaves of the wide DAG")
    parser.add_argument("--chain", type=int, default=100, help="length of the chain")
    parser.add_argument("--root", default=None, help="directory for targets (default: /dev/shm)")
    parser.add_argument(
        "--postgres", action="store_true", help="also a server on PostgreSQL (tests/pg_server.py)"
    )
    parser.add_argument("--load-clients", type=int, default=50, help="clients of the load run")
    parser.add_argument("--load-tasks", type=int, default=20, help="tasks per load client")
    parser.add_argument(
        "--no-builds", action="store_true", help="skip the sd.build figures (load run only)"
    )
    args = parser.parse_args()
    logging.getLogger("stardag_nb").setLevel(logging.ERROR)
    base = args.root or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    base = tempfile.mkdtemp(prefix="stardag-nb-bench-", dir=base)
    work = Path(base) / "service"  # the service's database next to the embedded one's
    try:
        from tests.service_proc import sqlite_url

        if not args.no_builds:
            with ExitStack() as stack:
                services = [
                    stack.enter_context(
                        service("api sqlite", sqlite_url(work / "service.sqlite3"), work / "sqlite")
                    )
                ]
                if args.postgres:
                    from tests.pg_server import postgres_server

                    url = postgres_server().new_database_url("bench")
                    services.append(stack.enter_context(service("api postgres", url, work / "pg")))
                measure(base, args.runs, services, args.wide, args.chain)
        if args.postgres and args.load_clients > 0:
            from tests.pg_server import postgres_server

            load_run(postgres_server().new_database_url, work, args.load_clients, args.load_tasks)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()

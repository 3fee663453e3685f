"""How the client behaves toward a user when the registry service is down, and the small
things issue 11 found a new user trips over (SQLite service only: the client is the
subject here, not the database).

- Service down (nothing listens on the port) or not answering (a socket that listens but
  never accepts): the client says so within seconds and that it is retrying; read-only
  CLI commands give up in a few seconds with one line; a notebook cell shows one line,
  not a traceback; an outage mid-build is logged as one line.
- The build-id prefix printed after a build is unique, and ``registry tasks`` takes it.
- ``config show`` under ``STARDAG_REGISTRY_URL`` + ``STARDAG_API_KEY`` shows the key's
  workspace, environment and the roots builds will use.
- A change of target roots is logged once, not at every build.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

import stardag_nb as sd
from stardag_nb.registry import APIAdmin, APIRegistry
from tests.service.conftest import ServiceServer, unique
from tests.service_proc import free_port

REPO = Path(__file__).parents[2]
WS = "default"


@pytest.fixture(scope="module")
def backend() -> str:
    """One SQLite-backed server for this module (overrides the conftest's two backends)."""
    return "sqlite"


# -- helpers ---------------------------------------------------------------------------


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8", **extra)
    return env


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> Ran:
    """``stardag-nb ARGS`` as a subprocess; how long it took."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stardag_nb.cli", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL whose socket listens but never accepts nor answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class Notices(logging.Handler):
    """The warnings of the ``stardag_nb.registry`` logger, with when they came."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.started = time.monotonic()
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((time.monotonic() - self.started, record.getMessage()))

    def first(self, *words: str, within: float) -> tuple[float, str]:
        """The first notice containing ``words``, waiting up to ``within`` s from the start."""
        while True:
            for when, text in self.seen:
                if all(w in text for w in words):
                    return when, text
            if time.monotonic() - self.started > within:
                raise AssertionError(f"no notice with {words} within {within} s: {self.seen}")
            time.sleep(0.05)

    def count(self, *words: str) -> int:
        return sum(all(w in text for w in words) for _, text in self.seen)


@pytest.fixture
def notices() -> Iterator[Notices]:
    handler = Notices()
    logger = logging.getLogger("stardag_nb.registry")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def in_thread(call: object) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())  # type: ignore[operator]
        except BaseException as exc:  # checked by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@dataclass
class Env:
    name: str
    key: str
    roots: dict[str, str]


@pytest.fixture
def env(server: ServiceServer, tmp_path: Path) -> Env:
    """A fresh environment of workspace ``default`` with a local root and an API key."""
    name = unique("cm")
    roots = {"default": str(tmp_path / "roots" / name)}
    info = server.create_environment(WS, name, roots)
    assert info["state"] == "running", info
    return Env(name, server.api_key(WS, name), roots)


# -- the service is down: the CLI ------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("registry", "builds"), ("registry", "tasks", "0190")], ids=["builds", "tasks"]
)
def test_read_only_commands_give_up_quickly_when_nothing_listens(
    args: tuple[str, ...], dead_url: str, tmp_path: Path
) -> None:
    ran = run_cli("--registry", dead_url, *args, env=cli_env(tmp_path), cwd=tmp_path)
    assert ran.seconds < 10, f"took {ran.seconds:.1f} s (it used to wait 60 s)"
    assert ran.code == 1, ran
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), ran.err
    assert dead_url in lines[0] and "unreachable" in lines[0]
    assert "stardag-nb serve" in lines[0] and "STARDAG_REGISTRY_URL" in lines[0]  # the fix
    assert ran.out == ""


def test_read_only_command_gives_up_on_a_host_that_does_not_answer(
    silent_url: str, tmp_path: Path
) -> None:
    ran = run_cli("--registry", silent_url, "registry", "builds", env=cli_env(tmp_path),
                  cwd=tmp_path)  # fmt: skip
    assert ran.seconds < 15, f"took {ran.seconds:.1f} s (it used to wait 30 s)"
    assert ran.code == 1, ran
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), ran.err
    assert silent_url in lines[0] and "no answer within" in lines[0]


def test_config_show_with_the_service_down(dead_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, STARDAG_REGISTRY_URL=dead_url, STARDAG_API_KEY="sk_nothing")
    ran = run_cli("config", "show", env=env, cwd=tmp_path)
    assert ran.seconds < 10, f"took {ran.seconds:.1f} s"
    assert ran.code == 0, ran
    assert "could not ask the service" in ran.out and dead_url in ran.out
    assert "Traceback" not in ran.err


def test_a_build_says_within_seconds_that_the_service_is_unreachable(
    dead_url: str, tmp_path: Path
) -> None:
    (tmp_path / "down_dag.py").write_text(
        "import stardag_nb as sd\n\n@sd.task\ndef plus(a: int, b: int) -> int:\n"
        "    return a + b\n\ntarget = plus(a=1, b=2)\n"
    )
    env = cli_env(tmp_path, STARDAG_REGISTRY=dead_url, STARDAG_API_RETRY_SECONDS="8")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stardag_nb.cli", "build", "down_dag:target", "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put((time.monotonic() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        when, first = lines.get(timeout=5)
        assert proc.poll() is None, "the build must still be retrying"
        assert "unreachable" in first and "retrying" in first and dead_url in first, first
        assert when < 5
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    rest = [text for _, text in list(lines.queue)]
    assert proc.returncode == 1
    assert not any("Traceback" in text for text in rest), rest
    assert len(rest) == 1 and rest[0].startswith("error: ") and "gave up" in rest[0], rest


# -- the service is down: the client in a process ------------------------------------


def test_a_host_that_does_not_answer_is_reported_within_seconds(
    silent_url: str, notices: Notices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "2")
    registry = APIRegistry(api_url=silent_url, api_key="sk_x", timeout=30)
    thread, outcome = in_thread(registry.list_builds)
    when, text = notices.first("does not answer", within=5)
    assert when < 5 and silent_url in text and "retrying" in text, text
    assert thread.is_alive(), "still waiting for the answer"


def test_an_outage_and_its_end_are_reported_once(
    server: ServiceServer, env: Env, notices: Notices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "60")
    registry = APIRegistry(api_url=server.url, api_key=env.key)
    server.stop()
    try:
        calls = [in_thread(registry.list_builds) for _ in range(4)]
        when, text = notices.first("unreachable", "retrying", within=5)
        assert when < 5 and server.url in text, text
        time.sleep(1.5)  # more retries of the 4 calls: still one notice
        assert all(thread.is_alive() for thread, _ in calls)
    finally:
        server.start(init=False)
    for thread, outcome in calls:
        thread.join(timeout=60)
        assert outcome and isinstance(outcome[0], list), outcome
    assert notices.count("unreachable") == 1, notices.seen
    assert notices.count("answers again") == 1, notices.seen


class Killer(sd.AutoTask[int]):
    """Stops the registry service while it runs (a crash of the service mid-build), then
    runs on for ``linger`` seconds."""

    n: int
    linger: float = 0.0

    def run(self) -> None:
        _kill_server()
        time.sleep(self.linger)
        self.output().save(self.n)


_servers: list[ServiceServer] = []


def _kill_server() -> None:
    _servers[-1].kill()


def test_an_outage_mid_build_is_logged_as_one_line(
    server: ServiceServer, env: Env, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "1")
    from stardag_nb.target import TargetFactory, target_factory_provider

    registry = APIRegistry(api_url=server.url, api_key=env.key)
    task = Killer(n=int(time.time()))
    _servers.append(server)
    try:
        with caplog.at_level(logging.WARNING), target_factory_provider.override(
            TargetFactory(target_roots=env.roots)
        ):
            summary = sd.build(task, registry=registry)
            assert task.output().load() == task.n  # the work was done
    finally:
        server.start(init=False)
    assert summary.status.value == "success", summary
    failed = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert failed, caplog.text
    for record in failed:
        assert record.exc_info is None, "a registry outage is logged without traceback"
        message = record.getMessage()
        assert "RegistryUnreachableError" in message and server.url in message
    assert "Traceback" not in caplog.text


class AfterKiller(sd.AutoTask[int]):
    i: int
    first: Killer

    def requires(self):  # type: ignore[no-untyped-def]
        return self.first

    def run(self) -> None:
        self.output().save(self.i)


class ManyAfterKiller(sd.AutoTask[int]):
    n: int
    first: Killer

    def requires(self):  # type: ignore[no-untyped-def]
        return [AfterKiller(i=i, first=self.first) for i in range(self.n)]

    def run(self) -> None:
        self.output().save(self.n)


@pytest.mark.parametrize("batched", [False, True], ids=["v1", "batched"])
def test_after_one_request_gave_up_the_build_does_not_wait_per_record(
    server: ServiceServer, env: Env, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, batched: bool,
) -> None:  # fmt: skip
    """The service dies early in a build of 32 tasks: the first record waits the retry
    window; the later ones are tried once (not a window each), only the first lost record
    is logged, and the client says when the service answers again. With batched writes
    the same policy holds once the client knows the service is failing (a batch is being
    retried): a start then waits for its answer, and one that cannot be recorded fails
    its task (the killer lingers a moment so that its own start's batch finds out)."""
    monkeypatch.setenv("STARDAG_API_RETRY_SECONDS", "2")
    from stardag_nb.target import TargetFactory, target_factory_provider

    registry = APIRegistry(api_url=server.url, api_key=env.key, batch_writes=batched)
    killer = Killer(n=int(time.time()), linger=0.5 if batched else 0.0)
    root = ManyAfterKiller(n=30, first=killer)
    _servers.append(server)
    try:
        with caplog.at_level(logging.WARNING), target_factory_provider.override(
            TargetFactory(target_roots=env.roots)
        ):
            start = time.monotonic()
            summary = sd.build(root, registry=registry)
            elapsed = time.monotonic() - start
    finally:
        server.start(init=False)
    print(f"build of 32 tasks with the service gone: {elapsed:.1f} s")
    assert registry.batching is batched
    # (retrying each record: 2 s for the first, 2 s for the starts, 2 s for the end)
    assert elapsed < 5, f"the build waited {elapsed:.0f} s: a retry window per record"
    # the policy: a task whose start cannot be recorded fails, and the build stops
    assert summary.status.value == "failure", summary
    assert "each request is tried once" in str(summary.error), summary.error
    lost = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        registry.list_builds()  # the service answers again
    assert "answers again" in caplog.text, caplog.text


def test_a_notebook_cell_shows_one_line(dead_url: str, tmp_path: Path) -> None:
    pytest.importorskip("ipykernel")
    from tests.kernel_utils import kernel_client, run_cell

    with kernel_client(tmp_path) as client:
        setup = f"""
        import os
        os.environ["STARDAG_API_RETRY_SECONDS"] = "3"
        import stardag_nb as sd
        from stardag_nb.registry import APIRegistry

        @sd.task
        def plus(a: int, b: int) -> int:
            return a + b

        registry = APIRegistry(api_url={dead_url!r}, api_key="sk_x")
        """
        assert run_cell(client, setup)["status"] == "ok"
        blocking = run_cell(client, "sd.build(plus(a=1, b=2), registry=registry)")
        assert blocking["status"] == "error"
        error = blocking["error"]
        assert error.startswith("RegistryUnreachableError: ") and "\n" not in error, error
        assert dead_url in error and "stardag-nb serve" in error
        assert "unreachable" in blocking["stdout"] and "retrying" in blocking["stdout"]
        assert "Traceback" not in blocking["stdout"]

        run_cell(client, "from stardag_nb.notebook import start_build")
        awaited = run_cell(client, "await start_build([plus(a=2, b=3)], registry=registry)")
        assert awaited["status"] == "error"
        assert awaited["error"].startswith("RegistryUnreachableError: ")
        assert "\n" not in awaited["error"], awaited["error"]


# -- build-id prefixes -----------------------------------------------------------------


def test_shortest_unique_prefix_goes_past_the_time_part() -> None:
    from stardag_nb.cli._registry import shortest_unique_prefix

    # UUIDv7s of the same millisecond, the second bumped by one (as the service does)
    first = UUID("01938a7b-4c2d-7abc-8def-0123456789ab")
    second = UUID("01938a7b-4c2d-7abc-8def-0123456789ac")
    later = UUID("01938a7c-0000-7000-8000-000000000000")
    assert shortest_unique_prefix(first, [later]) == "01938a7b-4c2d-7abc"
    assert shortest_unique_prefix(first, [first, later]) == "01938a7b-4c2d-7abc"
    assert shortest_unique_prefix(first, [second, later]) == str(first)
    random_id = UUID("8c0f5a2e-1111-4222-8333-444455556666")
    assert shortest_unique_prefix(random_id, []) == "8c0f5a2e"


def test_printed_build_prefix_is_unique_and_accepted(
    server: ServiceServer, env: Env, tmp_path: Path
) -> None:
    registry = APIRegistry(api_url=server.url, api_key=env.key)
    seeded = [registry.build_start(description=f"seed {i}") for i in range(3)]
    (tmp_path / "prefix_dag.py").write_text(
        "import stardag_nb as sd\n\n@sd.task\ndef plus(a: int, b: int) -> int:\n"
        f"    return a + b\n\ntarget = plus(a=1, b={time.time_ns()})\n"
    )
    cli = cli_env(tmp_path, STARDAG_REGISTRY_URL=server.url, STARDAG_API_KEY=env.key)
    built = run_cli("build", "prefix_dag:target", "--no-progress", env=cli, cwd=tmp_path)
    assert built.code == 0, built
    match = re.search(r"stardag-nb registry tasks (\S+)", built.out)
    assert match, built.out
    ref = match.group(1)
    # builds started right after, in the same minute, share the id's first 8 characters
    seeded += [registry.build_start(description=f"after {i}") for i in range(2)]
    ids = [str(b.id) for b in registry.list_builds(limit=100)]
    [mine] = [i for i in ids if i.startswith(ref)]
    assert mine not in map(str, seeded)
    assert sum(i[:8] == mine[:8] for i in ids) > 1, "the test needs builds sharing 8 chars"

    tasks = run_cli("registry", "tasks", ref, env=cli, cwd=tmp_path)
    assert tasks.code == 0, tasks
    assert tasks.out.startswith(f"Build {mine}")
    assert "plus" in tasks.out

    short = run_cli("registry", "tasks", mine[:8], env=cli, cwd=tmp_path)
    assert short.code == 2, short
    assert "ambiguous" in short.err
    sharing = [i for i in ids if i.startswith(mine[:8])]
    assert all(i in short.err for i in sharing[:10]), short.err


# -- config show under an API key ------------------------------------------------------


def test_config_show_under_an_api_key(server: ServiceServer, env: Env, tmp_path: Path) -> None:
    cli = cli_env(tmp_path, STARDAG_REGISTRY_URL=server.url, STARDAG_API_KEY=env.key)
    shown = run_cli("config", "show", "--json", env=cli, cwd=tmp_path)
    assert shown.code == 0, shown
    data = json.loads(shown.out)
    info = server.environment(WS, env.name)
    assert (data["workspace"], data["environment"]) == (WS, env.name)
    assert data["environment_id"] == info["id"] and data["workspace_id"] == info["workspace_id"]
    assert data["target_roots"] == env.roots

    text = run_cli("config", "show", env=cli, cwd=tmp_path)
    assert text.code == 0, text
    fields = dict(
        line.split(":", 1) for line in text.out.splitlines() if re.match(r"^\w+:\s", line)
    )
    assert fields["Workspace"].strip() == f"{WS} ({info['workspace_id']})"
    assert fields["Environment"].strip() == f"{env.name} ({info['id']})"
    assert env.roots["default"] in text.out
    assert "local-target-roots" not in text.out  # not the local root builds do not use


# -- the root-change message -----------------------------------------------------------


class RootLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def test_a_root_change_is_logged_once(
    server: ServiceServer, env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = APIRegistry(api_url=server.url, api_key=env.key)
    base = time.time_ns()

    def changes() -> int:
        return sum("now in use" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="stardag_nb.registry"):
        for i in range(4):
            leaf = RootLeaf(n=base + i)
            assert sd.build(leaf, registry=registry).status.value == "success"
            assert leaf.output().uri.startswith(env.roots["default"])
        assert changes() == 1, caplog.text

        moved = {"default": str(tmp_path / "moved" / env.name)}
        admin = APIAdmin(api_url=server.url, token=server.token)
        try:
            admin.set_target_roots(WS, env.name, moved)
        finally:
            admin.close()
        for i in range(3):
            leaf = RootLeaf(n=base + 10 + i)
            assert sd.build(leaf, registry=registry).status.value == "success"
            assert leaf.output().uri.startswith(moved["default"])
        assert changes() == 2, caplog.text

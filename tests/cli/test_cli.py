"""The ``stardag-nb`` command line, run as real subprocesses against a real SQLite registry
and real local target roots, with a small DAG module in the working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

import stardag_nb

SCRIPT = shutil.which("stardag-nb", path=str(Path(sys.executable).parent))

DAG = '''
import stardag_nb as sd


@sd.task
def get_range(limit: int) -> list[int]:
    return list(range(limit))


@sd.task
def get_sum(integers: sd.Depends[list[int]]) -> int:
    return sum(integers)


@sd.task
def explode(value: sd.Depends[int]) -> int:
    raise ValueError(f"cannot take {value}")


class Square(sd.AutoTask[int]):
    n: int = 7

    def run(self) -> None:
        self.output().save(self.n * self.n)


total = get_sum(integers=get_range(limit=10))
broken = explode(value=total)
pair = (get_range(limit=3), Square(n=2))
number = 42
mixed = [total, "not a task"]


def make_all():
    return [get_range(limit=4), Square(n=3)]


def needs_args(x):
    return total
'''


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@dataclass
class Project:
    """A directory holding the DAG module, with its registry file and target root."""

    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "reg.sqlite3"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}
        env.update(
            HOME=str(self.root / "home"),
            STARDAG_REGISTRY=str(self.registry),
            STARDAG_TARGET_ROOTS__DEFAULT=str(self.out),
            PYTHONIOENCODING="utf-8",
        )
        env.update(extra)
        return env

    def command(self, args: Sequence[str], module: bool = False) -> list[str]:
        if module or SCRIPT is None:
            return [sys.executable, "-m", "stardag_nb.cli", *args]
        return [SCRIPT, *args]

    def run(self, *args: str, module: bool = False, **env: str) -> Result:
        proc = subprocess.run(
            self.command(args, module), cwd=self.root, env=self.env(**env),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def run_many(self, commands: Sequence[Sequence[str]]) -> list[Result]:
        """Run commands concurrently (they are independent): the suite stays fast."""
        procs = [
            subprocess.Popen(
                self.command(args), cwd=self.root, env=self.env(), text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            for args in commands
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            results.append(Result(proc.returncode, out, err))
        return results


def _project(root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    (root / "dag.py").write_text(textwrap.dedent(DAG))
    return Project(root)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return _project(tmp_path / "project")


@dataclass
class Built:
    project: Project
    ok: Result
    failed: Result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One project with two builds: ``dag:total`` (succeeds), then ``dag:broken``."""
    project = _project(tmp_path_factory.mktemp("built") / "project")
    ok = project.run("build", "dag:total")
    failed = project.run("build", "dag:broken", "--json", "--fail-mode", "continue")
    return Built(project, ok, failed)


# -- build ------------------------------------------------------------------------------


def test_build_success_prints_summary_and_writes_outputs(built: Built) -> None:
    result = built.ok
    assert result.returncode == 0, result.stderr
    assert "Build SUCCESS" in result.stdout
    assert "Succeeded: 2" in result.stdout
    assert "Failed: 0" in result.stdout
    files = sorted(p.name for p in built.project.out.rglob("*.json"))
    assert len(files) >= 2  # get_range and get_sum (explode failed and wrote nothing)
    sum_file = next(built.project.out.glob("get_sum/**/*.json"))
    assert json.loads(sum_file.read_text()) == 45
    # stderr is not a terminal: no progress bar.
    assert "[#" not in result.stderr and "\r" not in result.stderr


def test_build_failure_exits_1_with_the_error_in_json(built: Built) -> None:
    result = built.failed
    assert result.returncode == 1
    data = result.json()
    assert isinstance(data, dict)
    assert data["status"] == "failure"
    UUID(data["build_id"])
    assert data["task_count"]["failed"] == 1
    assert data["task_count"]["previously_completed"] == 1
    (task_id, message), = data["errors"].items()
    UUID(task_id)
    assert message == "ValueError: cannot take 45"
    # The task's traceback goes to stderr, never into the JSON on stdout.
    assert "ValueError: cannot take 45" in result.stderr


def test_build_targets_tuple_function_and_class(project: Project) -> None:
    pair, func, cls = project.run_many(
        [
            ["build", "dag:pair", "--json"],
            ["build", "dag:make_all", "--json", "--sequential"],
            ["build", "dag:Square", "--json", "--registry", str(project.root / "other.db")],
        ]
    )
    for result in (pair, func, cls):
        assert result.returncode == 0, result.stderr
        assert result.json()["status"] == "success"  # type: ignore[index]
    assert pair.json()["task_count"]["succeeded"] == 2  # type: ignore[index]
    assert func.json()["task_count"]["discovered"] == 2  # type: ignore[index]
    assert cls.json()["task_count"]["succeeded"] == 1  # type: ignore[index]
    square = next(project.out.glob("Square/**/*.json"))  # Square(n=7): the default
    assert json.loads(square.read_text()) == 49
    assert (project.root / "other.db").exists()


def _build_on_a_terminal(project: Project, *extra: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``stardag-nb build dag:total EXTRA`` with stderr on a pseudo-terminal: (run, stderr)."""
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            project.command(["build", "dag:total", *extra]), cwd=project.root,
            env=project.env(), stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=60,
        )  # fmt: skip
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    return proc, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "no-progress"])
def test_progress_bar_on_a_terminal_only(project: Project, tty: bool) -> None:
    proc, stderr = _build_on_a_terminal(project, *([] if tty else ["--no-progress"]))
    assert proc.returncode == 0
    assert "Build SUCCESS" in proc.stdout
    if tty:
        assert "[##############################] 2/2" in stderr
    else:
        assert "[" not in stderr


def test_an_up_to_date_build_draws_a_full_bar(project: Project) -> None:
    assert _build_on_a_terminal(project)[0].returncode == 0
    proc, stderr = _build_on_a_terminal(project)  # everything is complete now
    assert proc.returncode == 0
    assert "0/0" not in stderr
    assert "[##############################] 1/1  up to date 1" in stderr  # the complete root


def test_bad_targets_exit_2_with_helpful_messages(project: Project) -> None:
    (project.root / "needs_missing.py").write_text("import no_such_package_xyz\n")
    (project.root / "raises.py").write_text("x = 1\nraise RuntimeError('boom at import')\n")
    (project.root / "bad_syntax.py").write_text("x = 1\ndef f(:\n    pass\n")
    cases = {
        "no_such_module:x": ["No module named 'no_such_module'", "hint:"],
        "dag:nope": ["has no attribute 'nope'", "total", "pair", "Square"],
        "dag:number": ["dag:number is int 42", "task instance"],
        "dag:mixed": ["dag:mixed[1] is str", "not a task"],
        "dag:get_range": ["required parameters (limit)"],
        "dag:needs_args": ["required arguments (x)"],
        "needs_missing:x": ["No module named 'no_such_package_xyz'", "needs_missing.py:1"],
        "raises:x": ["RuntimeError: boom at import", "raises.py:2"],
        "bad_syntax:x": ["SyntaxError", "bad_syntax.py:2"],
    }
    results = project.run_many([["build", spec] for spec in cases])
    for (spec, expected), result in zip(cases.items(), results):
        assert result.returncode == 2, (spec, result.stderr)
        assert result.stdout == "", spec
        assert "Traceback" not in result.stderr, spec
        assert result.stderr.startswith("error: "), (spec, result.stderr)
        for text in expected:
            assert text in result.stderr, (spec, text, result.stderr)
    assert not project.out.exists()  # nothing was built


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("dag", ["not of the form MODULE:TARGET", "hint: Use MODULE:TARGET"]),
        ("dag:", ["empty TARGET"]),
        (":total", ["empty MODULE"]),
        ("dag.py:total", ["not a file path", "use dag:total"]),
        ("dag:a:b", ["more than one ':'"]),
        ("dag:1x", ["'1x'", "not a Python identifier"]),
    ],
)
def test_malformed_targets_in_process(
    spec: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed MODULE:TARGET forms fail before any import (checked in-process: fast)."""
    from stardag_nb.cli import main

    assert main(["build", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for text in expected:
        assert text in captured.err


def test_output_helpers() -> None:
    from datetime import datetime, timezone

    from stardag_nb.cli._output import Column, render_table, to_jsonable, truncate

    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
    table = render_table(
        [Column("ID"), Column("TEXT", max_width=6, shrink=True)],
        [["1", "a long\nmessage"], ["22", None]],
    )
    assert table.splitlines() == ["ID  TEXT", "1   a lon…", "22  -"]
    narrow = render_table(
        [Column("A"), Column("B", shrink=True, min_width=3)], [["x", "y" * 20]], width=8
    )
    assert narrow.splitlines()[1] == "x  yyyy…"  # 1 + 2 + 5 = 8
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    uid = UUID(int=1)
    assert to_jsonable({"t": when, "ids": (uid,)}) == {
        "t": "2024-01-02T03:04:05Z",
        "ids": ["00000000-0000-0000-0000-000000000001"],
    }


# -- registry ---------------------------------------------------------------------------


def test_registry_builds_lists_the_builds_newest_first(built: Built) -> None:
    ok_id = json.loads(built.failed.stdout)["build_id"]  # the newest
    text, data = built.project.run_many([["registry", "builds"], ["registry", "builds", "--json"]])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "STARTED", "COMPLETED", "ERROR"]
    assert lines[1].startswith(ok_id) and "failed" in lines[1]
    assert "Error" in lines[1]  # why it failed
    assert "completed" in lines[2]
    assert len(lines) == 3
    builds = data.json()
    assert isinstance(builds, list) and len(builds) == 2
    assert [b["status"] for b in builds] == ["failed", "completed"]
    assert builds[0]["id"] == ok_id
    for build in builds:
        UUID(build["id"])
        started = datetime.fromisoformat(build["started_at"])  # ISO 8601
        assert started.tzinfo is not None and started.utcoffset() == timedelta(0)


def test_registry_builds_limit(built: Built) -> None:
    result = built.project.run("registry", "builds", "--limit", "1", "--json")
    assert result.returncode == 0
    assert len(result.json()) == 1  # type: ignore[arg-type]


def test_registry_tasks_by_id_prefix(built: Built) -> None:
    build_id = json.loads(built.failed.stdout)["build_id"]
    text, data = built.project.run_many(
        [["registry", "tasks", build_id[:6]], ["registry", "tasks", build_id, "--json"]]
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"Build {build_id}")
    assert lines[1].split() == ["ID", "TASK", "STATUS", "STARTED", "COMPLETED", "ERROR"]
    rows = {line.split()[1]: line for line in lines[2:]}
    assert set(rows) == {"get_sum", "explode"}
    assert "failed" in rows["explode"] and "ValueError: cannot take 45" in rows["explode"]
    tasks = data.json()
    assert isinstance(tasks, list)
    by_name = {t["name"]: t for t in tasks}
    assert by_name["explode"]["status"] == "failed"
    assert by_name["explode"]["error_message"] == "ValueError: cannot take 45"
    assert by_name["explode"]["build_id"] == build_id
    UUID(by_name["explode"]["task_id"])
    assert by_name["explode"]["started_at"] is not None


def test_registry_tasks_unknown_and_ambiguous_prefix(project: Project) -> None:
    from stardag_nb.registry import SQLiteRegistry

    with SQLiteRegistry(project.registry) as registry:
        ids: dict[str, list[UUID]] = {}
        while True:  # at most 17 builds until two share a first hex digit
            build_id = registry.build_start([])
            ids.setdefault(str(build_id)[0], []).append(build_id)
            if len(ids[str(build_id)[0]]) == 2:
                break
    shared = str(build_id)[0]
    missing = next(c for c in "0123456789abcdef" if c not in ids)
    ambiguous, unknown, full_unknown = project.run_many(
        [
            ["registry", "tasks", shared],
            ["registry", "tasks", missing],
            ["registry", "tasks", "00000000-0000-0000-0000-000000000001"],
        ]
    )
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr
    for candidate in ids[shared]:
        assert str(candidate) in ambiguous.stderr
    assert unknown.returncode == 2
    assert f"No build id starts with '{missing}'" in unknown.stderr
    assert full_unknown.returncode == 2
    assert "No build 00000000-0000-0000-0000-000000000001" in full_unknown.stderr


def test_registry_commands_without_a_registry(project: Project) -> None:
    noop, bad, empty = project.run_many(
        [
            ["--registry", "none", "registry", "builds"],
            ["registry", "tasks", "abc", "--registry", "not-a-registry"],
            ["registry", "builds", "--registry", str(project.root / "empty.sqlite3")],
        ]
    )
    assert noop.returncode == 2
    assert "No registry is configured" in noop.stderr
    assert bad.returncode == 2
    assert "not a registry this version understands" in bad.stderr
    assert empty.returncode == 0
    assert "No builds recorded" in empty.stdout
    assert not project.registry.exists()  # --registry overrode STARDAG_REGISTRY


# -- version ----------------------------------------------------------------------------


def test_version_as_module_and_script(project: Project) -> None:
    result = project.run("version", module=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"stardag-nb {stardag_nb.__version__}"
    assert SCRIPT is not None, "the stardag-nb script is not installed (pip install -e .)"
    assert project.run("--version").stdout.strip() == result.stdout.strip()


def test_no_arguments_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stardag_nb.cli"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("build", "registry", "auth", "config", "environment", "serve", "version"):
        assert f"    {command} " in result.stdout
    assert "required" not in result.stderr


def test_serve_help_does_not_offer_the_clients_registry_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stardag_nb.cli", "serve", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--database-url" in result.stdout
    assert "--registry" not in result.stdout

"""Stale upstream code, headless (nbclient, a real kernel, no browser): redefine a task
in the middle of a pipeline and re-run the pipeline cell; although the root is complete,
the changed task and everything downstream of it are marked stale (the task upstream
and a sibling are not); ``%%stardag --rebuild-stale`` reruns exactly those tasks and the
marks are gone; unchanged code marks nothing. The saved outputs are the static DAG with
the marks (no front end drew a widget, so none is kept)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("anywidget")

from tools.run_notebooks import execute  # noqa: E402

WIDGET = "application/vnd.jupyter.widget-view+json"

TASKS = """import stardag_nb as sd

RUNS = globals().setdefault("RUNS", [])


class Raw(sd.AutoTask[list[int]]):
    n: int

    def run(self):
        RUNS.append("Raw")
        self.output().save(list(range(self.n)))


class Clean(sd.AutoTask[list[int]]):
    raw: sd.TaskLoads[list[int]]

    def requires(self):
        return self.raw

    def run(self):
        RUNS.append("Clean")
        self.output().save([x for x in self.raw.result() if x % 2 == 0])


class Offset(sd.AutoTask[int]):
    def run(self):
        RUNS.append("Offset")
        self.output().save(100)


class Report(sd.AutoTask[int]):
    clean: sd.TaskLoads[list[int]]
    offset: sd.TaskLoads[int]

    def requires(self):
        return [self.clean, self.offset]

    def run(self):
        RUNS.append("Report")
        self.output().save(sum(self.clean.result()) + self.offset.result())"""

# Clean's body changes, its version does not: same ids, so the old outputs are reused
CHANGED = TASKS.replace("if x % 2 == 0", "if x % 2 == 1")
PIPELINE = "report = Report(clean=Clean(raw=Raw(n=6)), offset=Offset())\nreport"

CELLS = [
    "%load_ext stardag_nb",  # 0
    TASKS,  # 1
    f"%%stardag --as first\n{PIPELINE}",  # 2: everything runs
    "await first\nRUNS.clear()",  # 3
    f"%%stardag --as same\n{PIPELINE}",  # 4: unchanged code: nothing is stale
    "await same\n(same.widget.stale, RUNS)",  # 5
    CHANGED,  # 6: Clean redefined
    f"%%stardag --as changed\n{PIPELINE}",  # 7: the root is complete, yet stale
    "await changed\n(sorted(changed.widget.stale.values()), report.output().load(), RUNS)",  # 8
    f"%%stardag --no-run\n{PIPELINE}",  # 9: the marks without building
    f"%%stardag --rebuild-stale --as rebuilt\n{PIPELINE}",  # 10
    "await rebuilt\n(sorted(RUNS), report.output().load(), rebuilt.widget.stale)",  # 11
    f"%%stardag --as after\n{PIPELINE}",  # 12
    "await after\n(after.widget.stale, len(after.state.nodes))",  # 13
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("stale")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python",
    }  # fmt: skip
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    path = tmp / "stale.ipynb"
    nbformat.write(nb, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        mp.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(tmp / "targets"))
        mp.setenv("STARDAG_REGISTRY", str(tmp / "registry.sqlite3"))
        out = execute(path, tmp / "out")
    return nbformat.read(out, as_version=4), tmp


def _result(cell: Any) -> str:
    (out,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    return str(out["data"]["text/plain"])


def _build_output(cell: Any) -> dict[str, Any]:
    first = next(o for o in cell.outputs if o.output_type in ("display_data", "execute_result"))
    return dict(first["data"])


def _marks(svg: str) -> dict[str, str]:
    """Node label → its stale mark, from the static SVG."""
    marks = {}
    for group in re.findall(r'<g [^>]*class="node"[^>]*>.*?</g>', svg, flags=re.S):
        stale = re.search(r'data-stale="(\w+)"', group)
        label = re.search(r"<text[^>]*>([^<]*)</text>", group)
        assert label is not None, group
        marks[label.group(1).strip()] = stale.group(1) if stale else ""
    return marks


def test_unchanged_code_marks_nothing(executed: Any) -> None:
    nb, _ = executed
    assert _result(nb.cells[5]) == "({}, [])"  # no stale marks, nothing ran
    data = _build_output(nb.cells[4])
    assert "data-stale" not in data["image/svg+xml"]
    assert "stale" not in data["text/markdown"]


def test_redefined_upstream_marks_it_and_everything_downstream_although_complete(
    executed: Any,
) -> None:
    nb, _ = executed
    # the build stopped at the complete root: nothing ran, the old result is still there
    assert _result(nb.cells[8]) == "(['code', 'upstream'], 106, [])"
    data = _build_output(nb.cells[7])
    assert WIDGET not in data  # no front end drew a widget here: the saved output is static
    marks = _marks(data["image/svg+xml"])
    assert marks == {"Report": "upstream", "Clean": "code"}, marks
    assert 'data-code-changed="true"' in data["image/svg+xml"]
    assert "2 stale" in data["text/html"]
    assert "%%stardag --rebuild-stale" in data["text/html"]
    assert "bump the changed task's version" in data["text/html"]
    table = data["text/markdown"]
    assert "| Clean | already_complete (code changed) |" in table
    assert "| Report | already_complete (stale (upstream changed)) |" in table


def test_no_run_shows_the_marks_without_building(executed: Any) -> None:
    nb, _ = executed
    data = _build_output(nb.cells[9])
    assert WIDGET not in data
    assert _marks(data["image/svg+xml"]) == {"Report": "upstream", "Clean": "code"}


def test_rebuild_stale_reruns_exactly_the_stale_tasks_and_clears_the_marks(executed: Any) -> None:
    nb, tmp = executed
    # Clean and Report ran again (Raw and Offset did not); Clean now keeps the odd numbers
    assert _result(nb.cells[11]) == "(['Clean', 'Report'], 109, {})"
    assert "data-stale" not in _build_output(nb.cells[10])["image/svg+xml"]
    assert _result(nb.cells[13]) == "({}, 1)"  # a no-op build again, nothing marked
    leftovers = [p for p in Path(tmp / "targets").rglob("*") if ".stale-" in p.name]
    assert leftovers == [], "the set-aside outputs were not cleaned up"


# -- in-process (a real IPython shell, the embedded registry in a temporary directory) -------


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    from stardag_nb import config
    from stardag_nb.registry import registry_provider
    from stardag_nb.target import target_factory_provider

    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(tmp_path / "targets"))
    monkeypatch.setenv("STARDAG_REGISTRY", str(tmp_path / "registry.sqlite3"))
    config.clear_config_cache()  # the conftest resets them again afterwards
    target_factory_provider.reset()
    registry_provider.reset()
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext stardag_nb")
    shell.run_cell(TASKS).raise_error()
    yield shell
    InteractiveShell.clear_instance()


def _build(shell: Any, line: str = "", cell: str = PIPELINE) -> Any:
    import asyncio

    async def main() -> Any:
        handle = shell.run_cell_magic("stardag", line, cell)
        await handle
        return handle

    return asyncio.run(main())


def test_the_handle_rebuilds_its_stale_tasks_in_place(shell: Any) -> None:
    import asyncio

    _build(shell)
    shell.run_cell(CHANGED).raise_error()
    handle = _build(shell)
    first_id = handle.state.build_id
    assert sorted(handle.widget.stale.values()) == ["code", "upstream"]
    shell.user_ns["RUNS"].clear()

    async def rebuild() -> Any:
        handle.rebuild_stale()  # what the widget's Rebuild stale button calls
        assert not handle.done()
        return await handle

    summary = asyncio.run(rebuild())
    assert summary.status.value == "success"
    assert sorted(shell.user_ns["RUNS"]) == ["Clean", "Report"]
    assert handle.state.build_id != first_id and handle.widget.stale == {}
    assert handle.widget.final_output["image/svg+xml"].count('data-status="completed"') == 2


def test_a_rebuild_never_shows_the_previous_static_dag(shell: Any) -> None:
    """The front end shows ``final_output`` whenever ``keep_live`` is off: the rebuild
    clears the old static DAG before (in the same update as) it turns ``keep_live`` off."""
    import asyncio

    _build(shell)
    shell.run_cell(CHANGED).raise_error()
    handle = _build(shell)
    handle.widget.keep_live = True  # as when a front end drew it: it stays the widget
    assert handle.widget.final_output
    seen: list[tuple[bool, bool]] = []
    handle.widget.observe(
        lambda _: seen.append((handle.widget.keep_live, bool(handle.widget.final_output))),
        names=["keep_live", "final_output"],
    )

    async def rebuild() -> Any:
        handle.rebuild_stale()
        shown = list(seen)  # what the front end was told before the rebuild ran
        await handle
        return shown

    shown = asyncio.run(rebuild())
    assert shown and (False, True) not in shown, shown  # never: static, the old DAG
    assert shown[-1] == (False, False)  # the live view of the new build


def test_a_failed_rebuild_puts_the_old_output_back(shell: Any) -> None:
    _build(shell)
    report = shell.user_ns["report"]
    before = report.output().load()
    failing = CHANGED.replace('RUNS.append("Clean")', "raise ValueError('not yet')")
    shell.run_cell(failing).raise_error()
    handle = _build(shell, "--rebuild-stale --fail-mode continue")
    assert handle.status == "failure"
    assert report.output().load() == before  # Report never ran: its old output is back
    clean = shell.user_ns["report"].clean
    assert clean.output().load() == [0, 2, 4]  # so is the failed task's
    # still stale (nothing was rebuilt), and no backup file is left behind
    assert sorted(handle.widget.stale.values()) == ["code", "upstream"]
    root = Path(report.output().wrapped.uri).parents[3]
    assert [p for p in root.rglob("*") if ".stale-" in p.name] == []


def test_rebuilding_only_an_upstream_task_marks_what_was_built_from_its_old_output(
    shell: Any,
) -> None:
    _build(shell)
    shell.run_cell(CHANGED).raise_error()
    # rebuild the changed task alone: Report was built from Clean's old output
    _build(shell, "--rebuild-stale", "Clean(raw=Raw(n=6))")
    handle = _build(shell)
    stale = {handle.state.nodes[k].name: v for k, v in handle.widget.stale.items()}
    assert stale == {"Report": "rebuilt"}
    handle.widget.selected = next(iter(handle.widget.stale))
    assert "was rebuilt after this output was built" in handle.widget.details["stale"]


def test_a_stale_task_whose_output_is_not_its_own_local_file_is_not_rerun(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    custom = TASKS.replace(
        "class Offset(sd.AutoTask[int]):",
        "class Offset(sd.AutoTask[int]):\n"
        "    def complete(self):\n"
        "        return self.output().exists()\n",
    )
    shell.run_cell(custom).raise_error()
    _build(shell)
    shell.run_cell(custom.replace("save(100)", "save(101)")).raise_error()
    shell.user_ns["RUNS"].clear()
    handle = _build(shell, "--rebuild-stale")
    printed = capsys.readouterr().out
    assert "is not rerun: it decides its completeness itself" in printed
    assert "bump its version" in printed
    # Offset keeps its output; Report, downstream of it, is not rerun either
    assert shell.user_ns["RUNS"] == []
    assert sorted(handle.widget.stale.values()) == ["code", "upstream"]


def test_a_task_redefined_two_levels_down_is_found(shell: Any) -> None:
    # equal-by-id tasks built on other code are not reused for the new pipeline
    _build(shell)
    shell.run_cell(TASKS.replace("list(range(self.n))", "list(range(0, self.n))")).raise_error()
    handle = _build(shell)
    stale = {handle.state.nodes[k].name: v for k, v in handle.widget.stale.items()}
    assert stale == {"Raw": "code", "Clean": "upstream", "Report": "upstream"}
    assert type(shell.user_ns["report"].clean.raw) is shell.user_ns["Raw"]  # the new class

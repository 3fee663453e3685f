"""%%stardag and the DAG widget, driven in-process through a real IPython shell."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from stardag_nb.exceptions import BuildCancelled

IPython = pytest.importorskip("IPython")
pytest.importorskip("anywidget")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import stardag_nb as sd  # noqa: E402
from stardag_nb.notebook import BuildHandle, DagWidget  # noqa: E402

DEFINE = '''
import asyncio
import stardag_nb as sd

@sd.task
def numbers(n: int) -> list[int]:
    return list(range(n))

@sd.task
def total(xs: sd.Depends[list[int]]) -> int:
    return sum(xs)

class Slow(sd.AutoTask[int]):
    n: int
    async def run_aio(self):
        await asyncio.sleep(0.3)
        await self.output().save_aio(self.n)

class Broken(sd.AutoTask[int]):
    def run(self):
        raise ValueError("broken on purpose")
'''


@pytest.fixture
def shell() -> Iterator[Any]:
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext stardag_nb")
    shell.run_cell(DEFINE)
    yield shell
    InteractiveShell.clear_instance()


def run_magic(shell: Any, line: str, cell: str) -> Any:
    return shell.run_cell_magic("stardag", line, textwrap.dedent(cell))


def test_magic_builds_and_the_widget_state_is_final(shell: Any) -> None:
    async def main() -> tuple[Any, Any]:
        handle = run_magic(shell, "--as job", "total(xs=numbers(n=5))")
        assert isinstance(handle, BuildHandle) and not handle.done()  # returned at once
        assert shell.user_ns["job"] is handle
        summary = await handle
        return handle, summary

    handle, summary = asyncio.run(main())
    assert summary.status == "success" and summary.task_count.succeeded == 2
    widget: DagWidget = handle.widget
    assert len(widget.nodes) == 2 and len(widget.edges) == 1
    assert set(widget.statuses.values()) == {"completed"}
    assert widget.counts["completed"] == 2 and widget.build_status == "success"
    labels = {n["label"] for n in widget.nodes}
    assert labels == {"numbers", "total"}


def test_failure_shows_in_the_widget_with_traceback(shell: Any) -> None:
    async def main() -> Any:
        handle = run_magic(shell, "--fail-mode continue", "[Broken(), Slow(n=1)]")
        await handle
        return handle

    handle = asyncio.run(main())
    widget = handle.widget
    statuses = {n["label"]: widget.statuses[n["id"]] for n in widget.nodes}
    assert statuses == {"Broken": "failed", "Slow": "completed"}
    broken_id = next(n["id"] for n in widget.nodes if n["label"] == "Broken")
    widget.selected = broken_id  # what a click does
    assert "broken on purpose" in widget.details["error"]
    assert "ValueError" in widget.details["traceback"]
    # it starts at the task's own code, not in the engine's executor and worker frames
    first_frame = widget.details["traceback"].splitlines()[1]
    assert "stardag_nb/build" not in first_frame, widget.details["traceback"]
    assert widget.details["output"].endswith(".json")


def test_cancel_message_stops_the_build(shell: Any) -> None:
    async def main() -> Any:
        handle = run_magic(shell, "", "[Slow(n=10), Slow(n=11)]")
        await asyncio.sleep(0.1)
        handle.widget._handle_message(handle.widget, {"type": "cancel"}, [])  # the button
        with pytest.raises(BuildCancelled, match="was cancelled") as raised:
            await handle
        # shown in a notebook as one line, not the frames of the engine
        assert raised.value._render_traceback_() == [f"BuildCancelled: {raised.value}"]
        return handle

    handle = asyncio.run(main())
    assert handle.status == "cancelled"
    assert set(handle.widget.statuses.values()) == {"cancelled"}


def test_no_run_shows_the_dag_without_building(shell: Any) -> None:
    widget = run_magic(shell, "--no-run", "total(xs=numbers(n=7))")
    assert isinstance(widget, DagWidget)
    assert set(widget.statuses.values()) == {"pending"}
    assert not shell.user_ns["total"](xs=shell.user_ns["numbers"](n=7)).complete()


def test_cell_assigning_tasks_builds_them(shell: Any) -> None:
    async def main() -> Any:
        handle = run_magic(shell, "", "a = numbers(n=3)\nb = total(xs=a)\nnote = 'not a task'")
        return await handle

    summary = asyncio.run(main())
    assert summary.task_count.succeeded == 2


def test_cell_without_tasks_says_so(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_magic(shell, "", "x = 1") is None
    assert "defines no task" in capsys.readouterr().out


def test_help_lists_the_options(shell: Any) -> None:
    doc = shell.find_cell_magic("stardag").__doc__
    for option in ("--env", "--no-run", "--sequential", "--fail-mode", "--as"):
        assert option in doc


def test_widget_mimebundle_has_a_static_fallback(shell: Any) -> None:
    async def main() -> Any:
        handle = run_magic(shell, "", "total(xs=numbers(n=4))")
        await handle
        return handle

    handle = asyncio.run(main())
    bundle = handle.widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    svg = data["image/svg+xml"]
    assert svg.startswith("<svg") and svg.count('class="node"') == 2
    assert svg.count('data-status="completed"') == 2
    assert "| total | completed |" in data["text/markdown"]


def test_task_displays_as_its_dag(shell: Any) -> None:
    task = shell.user_ns["total"](xs=shell.user_ns["numbers"](n=9))
    data, _ = shell.display_formatter.format(task)
    assert data["image/svg+xml"].count('class="node"') == 2
    assert "numbers" in data["text/markdown"]


def test_redefining_a_task_in_a_cell_replaces_it(shell: Any) -> None:
    shell.run_cell("@sd.task\ndef numbers(n: int) -> list[int]:\n    return [42] * n\n")
    async def main() -> Any:
        return await run_magic(shell, "", "total(xs=numbers(n=2))")

    asyncio.run(main())
    assert shell.user_ns["total"](xs=shell.user_ns["numbers"](n=2)).result() == 84
    dumped = shell.user_ns["numbers"](n=2).model_dump(mode="json")
    rebuilt = sd.BaseTask.model_validate(dumped)
    assert rebuilt.call(1) == [42]  # resolves to the new definition


ASSETS = '''
import base64
from stardag_nb import registry_asset as ra

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cf00000003010100c9fe92ef0000000049454e44ae426082"
)).decode()

class Reported(sd.AutoTask[int]):
    def run(self):
        self.output().save(7)

    def registry_assets(self):
        return [
            ra.MarkdownRegistryAsset(name="summary", body="**seven** things"),
            ra.JSONRegistryAsset(name="metrics", body={"acc": 0.9, "per_class": {"a": [1, 2]}}),
            ra.TableRegistryAsset(name="rows", columns=["k", "v"], rows=[["x", 1], ["y", 2]]),
            ra.ImageRegistryAsset(name="pixel", media_type="image/png", data_base64=PNG),
        ]
'''


def test_assets_render_after_the_build_and_on_demand(shell: Any) -> None:
    shell.run_cell(ASSETS)

    async def main() -> Any:
        handle = run_magic(shell, "", "Reported()")
        await handle
        return handle

    handle = asyncio.run(main())
    assert [a.name for _, a in handle.assets.entries] == ["summary", "metrics", "rows", "pixel"]
    view = sd.show_assets(shell.user_ns["Reported"]())
    text = view._repr_mimebundle_()["text/markdown"]
    assert "**seven** things" in text
    assert "<details" in text and "<b>per_class</b>" in text  # a collapsible JSON tree
    assert "| k | v |" in text and "| y | 2 |" in text
    assert 'src="data:image/png;base64,' in text
    assert len(view) == 4


def test_environment_picker_and_its_code_twin(shell: Any, tmp_path: Any) -> None:
    from stardag_nb.notebook import EnvironmentPicker
    from stardag_nb.registry import SQLiteRegistry, registry_provider

    registry_provider.set(SQLiteRegistry(tmp_path / "reg.sqlite3"))
    SQLiteRegistry(tmp_path / "reg.sqlite3", environment="prod").close()  # another environment
    picker = EnvironmentPicker()
    assert picker.environments == ["default/local", "default/prod"]
    assert picker.active == "default/local"
    assert "default" in picker.target_roots

    picker.active = "default/prod"  # what choosing in the list does
    assert registry_provider.get().environment == "prod"

    shell.run_cell("%stardag_env local")  # the code twin, replayed by "Run all"
    assert registry_provider.get().environment == "local"

    async def main() -> Any:
        return await run_magic(shell, "--env prod", "numbers(n=11)")

    summary = asyncio.run(main())
    prod = SQLiteRegistry(tmp_path / "reg.sqlite3", environment="prod")
    assert [b.id for b in prod.list_builds()] == [summary.build_id]


def test_tasks_whose_code_changed_since_their_build_are_marked(shell: Any, tmp_path: Any) -> None:
    from stardag_nb.registry import SQLiteRegistry, registry_provider

    registry_provider.set(SQLiteRegistry(tmp_path / "code.sqlite3"))
    shell.run_cell("@sd.task\ndef tripled(n: int) -> int:\n    return 3 * n\n")

    async def build() -> Any:
        handle = run_magic(shell, "", "tripled(n=2)")
        await handle
        return handle

    first = asyncio.run(build())
    assert first.widget.code_changed == []
    again = asyncio.run(build())  # same code: complete and unchanged
    assert again.widget.code_changed == []
    # the body changes but not the version: the id (and so the old output) stays
    shell.run_cell("@sd.task\ndef tripled(n: int) -> int:\n    return n + n + n + 0\n")
    changed = asyncio.run(build())
    task_id = str(shell.user_ns["tripled"](n=2).id)
    assert changed.widget.statuses[task_id] == "already_complete"
    assert changed.widget.code_changed == [task_id]
    changed.widget.selected = task_id
    assert "bump the task's version" in changed.widget.details["code_changed"]
    assert 'data-code-changed="true"' in changed.widget._repr_mimebundle_()[0]["image/svg+xml"]
    # a docstring, a comment or formatting is not a code change
    from stardag_nb._code_hash import code_hash

    before = code_hash(shell.user_ns["tripled"])
    shell.run_cell('@sd.task\ndef tripled(n: int) -> int:\n    """Doc."""\n    return n+n+n+0  # same\n')
    assert code_hash(shell.user_ns["tripled"]) == before


def test_code_defined_in_a_stardag_cell_is_hashable(shell: Any) -> None:
    from stardag_nb._code_hash import code_hash

    async def main() -> Any:
        return await run_magic(shell, "", "@sd.task\ndef in_cell(n: int) -> int:\n    return n\nin_cell(n=1)")

    asyncio.run(main())
    assert code_hash(shell.user_ns["in_cell"]) is not None


def test_two_thousand_tasks_collapse_by_family(shell: Any) -> None:
    shell.run_cell(
        "class Leafy(sd.AutoTask[int]):\n    i: int\n    def run(self):\n        self.output().save(self.i)\n"
        "class Rooty(sd.AutoTask[int]):\n    n: int\n    def requires(self):\n"
        "        return [Leafy(i=i) for i in range(self.n)]\n    def run(self):\n        self.output().save(self.n)\n"
    )

    async def main() -> Any:
        handle = run_magic(shell, "", "Rooty(n=2000)")
        await handle
        return handle

    handle = asyncio.run(main())
    widget = handle.widget
    assert len(handle.state.nodes) == 2001
    assert {n["label"] for n in widget.nodes} == {"Leafy ×2000", "Rooty ×1"}
    assert widget.edges == [["family:Leafy", "family:Rooty", False]]
    assert set(widget.statuses.values()) == {"completed"}
    widget.selected = "family:Leafy"
    assert widget.details["tasks"] == 2000 and widget.details["statuses"] == {"completed": 2000}
    bundle = widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["image/svg+xml"].count('class="node"') == 2
    assert "… 1801 more" in data["text/markdown"]  # the table caps its rows


def test_static_svg_by_graphviz_and_by_the_python_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from stardag_nb.notebook import DagState, to_svg
    from stardag_nb.notebook._state import NodeInfo

    state = DagState()
    state.nodes["a"] = NodeInfo("a", 'odd"name', "", "completed")
    state.nodes["b"] = NodeInfo("b", "b", "ns", "failed", code_changed=True)
    state.edges.append(("a", "b", True))
    pictures = {}
    monkeypatch.setenv("STARDAG_NB_STATIC_LAYOUT", "python")
    pictures["python"] = to_svg(state)
    if shutil.which("dot"):
        monkeypatch.delenv("STARDAG_NB_STATIC_LAYOUT")
        pictures["graphviz"] = to_svg(state)
        assert "<title>stardag</title>" in pictures["graphviz"]  # dot's graph title
    for svg in pictures.values():  # the same attributes whichever drew it
        assert svg.count('class="node"') == 2
        assert 'data-id="a"' in svg and 'data-status="completed"' in svg
        assert 'data-status="failed" data-code-changed="true"' in svg


def test_a_failed_task_logs_one_line_and_keeps_its_traceback_for_the_panel(
    shell: Any, caplog: pytest.LogCaptureFixture
) -> None:
    shell.run_cell(
        "class Refuses(sd.AutoTask[int]):\n"
        "    def run(self):\n"
        "        raise ValueError('no thanks')\n"
    )

    async def main() -> Any:
        handle = run_magic(shell, "--fail-mode continue", "Refuses()")
        assert (await handle).status.value == "failure"
        return handle

    with caplog.at_level("ERROR", logger="stardag_nb.build"):
        handle = asyncio.run(main())
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failures, caplog.text
    assert all(r.exc_info is None for r in failures)  # no stderr traceback block in the cell
    assert "click the task in the DAG" in failures[0].getMessage()
    (node,) = handle.state.nodes.values()
    assert "ValueError: no thanks" in node.traceback  # the details panel has it
    caplog.clear()
    with caplog.at_level("ERROR", logger="stardag_nb.build"):
        sd.build(shell.user_ns["Refuses"]())  # a build without a widget keeps it
    assert any(r.exc_info for r in caplog.records if "failed" in r.getMessage())

"""Write notebooks/demo.ipynb from the cells below (the notebook is committed; rerun this
after editing the cells): python tools/make_demo_notebook.py"""

from __future__ import annotations

from _notebook_file import write_notebook

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# stardag_nb demo

Tasks are typed functions or pydantic classes; each has a deterministic id and a
persistent output. `%%stardag` builds on the kernel's own event loop: the cell returns
at once with a live DAG widget, and the kernel stays usable while it builds.
Everything here runs on the embedded defaults: a local target root and a local SQLite
registry under `~/.stardag`.""",
    ),
    (
        "code",
        """%load_ext stardag_nb""",
    ),
    (
        "code",
        """import asyncio
import stardag_nb as sd
from stardag_nb.registry_asset import MarkdownRegistryAsset


@sd.task
def get_range(limit: int) -> list[int]:
    return list(range(limit))


@sd.task
def get_sum(integers: sd.Depends[list[int]]) -> int:
    return sum(integers)


class Slowly(sd.AutoTask[int]):
    \"\"\"An async task that takes a moment, so the widget has something to show.\"\"\"

    value: sd.TaskLoads[int]
    seconds: float = 0.5

    def requires(self):
        return self.value

    async def run_aio(self):
        await asyncio.sleep(self.seconds)
        await self.output().save_aio(self.value.result() * 2)


class Report(sd.AutoTask[str]):
    totals: list[sd.TaskLoads[int]]

    def requires(self):
        return self.totals

    def run(self):
        self.output().save(" + ".join(str(t.result()) for t in self.totals))

    def registry_assets(self):
        return [MarkdownRegistryAsset(name="report", body=f"### Report\\n\\n{self.result()}")]""",
    ),
    (
        "markdown",
        """Build a small DAG. The cell returns a build handle at once; `--as build` also binds it.
When the build ends, the live widget is replaced by the static DAG with its final statuses,
which the saved notebook keeps.""",
    ),
    (
        "code",
        """%%stardag --as build
Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "markdown",
        """The kernel answers while the build runs; awaiting the handle waits for it.""",
    ),
    (
        "code",
        """print("still building?", not build.done())
summary = await build
summary""",
    ),
    (
        "code",
        """Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)]).result()""",
    ),
    (
        "markdown",
        """A task displays as its DAG; building it again finds everything complete.""",
    ),
    (
        "code",
        """Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "code",
        """%%stardag --as again
Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "code",
        """(await again).task_count""",
    ),
    (
        "markdown",
        """The report's registry assets appeared under the build as it completed; `sd.show_assets` shows them again:""",
    ),
    (
        "code",
        """sd.show_assets(Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)]))""",
    ),
    (
        "markdown",
        """The environment picker lists the registry's environments and switches the
kernel's active one; `%stardag_env NAME` (or `sd.use_environment(NAME)`) is its code twin,
so "Run all" reproduces the choice.""",
    ),
    (
        "code",
        """from stardag_nb.notebook import EnvironmentPicker

EnvironmentPicker(extra_environments=["default/scratch"])""",
    ),
    (
        "code",
        """%stardag_env local""",
    ),
    (
        "markdown",
        """What the embedded registry recorded for the first build:""",
    ),
    (
        "code",
        """registry = sd.registry_provider.get()
for record in registry.list_build_tasks(summary.build_id):
    print(f"{record.name:<10} {record.status}")
report_id = Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)]).id
[asset.body for asset in registry.get_assets(report_id)]""",
    ),
    (
        "markdown",
        """`--no-run` shows what a build would do without running it:""",
    ),
    (
        "code",
        """%%stardag --no-run
get_sum(integers=get_range(limit=1000))""",
    ),
    (
        "markdown",
        """A failing task: with `--fail-mode continue` everything else still runs, and the
widget shows the error (click the red node for its traceback; once the build ended its
output is the static DAG, and `failing.widget` shows the interactive view again). Builds report failures in
their summary; they do not raise.""",
    ),
    (
        "code",
        """class Flaky(sd.AutoTask[int]):
    def run(self):
        raise RuntimeError("this task always fails")""",
    ),
    (
        "code",
        """%%stardag --as failing --fail-mode continue
[Flaky(), get_sum(integers=get_range(limit=3))]""",
    ),
    (
        "code",
        """outcome = await failing
outcome.status.value, outcome.task_count.failed, outcome.task_count.succeeded""",
    ),
    (
        "markdown",
        """Cancelling: the widget's **Cancel** button, `handle.cancel()` in code, or the kernel's
interrupt (■) stops a build: nothing new starts, and a long sync `run()` that checks
`sd.cancelled()` returns early. The registry records it as cancelled; awaiting it raises
one `BuildCancelled` line.""",
    ),
    (
        "code",
        """%%stardag --as long
Slowly(value=get_sum(integers=get_range(limit=7)), seconds=30)""",
    ),
    (
        "code",
        """await asyncio.sleep(0.5)
long.cancel()
try:
    await long
except sd.BuildCancelled as stopped:
    print(stopped)
    print("status:", long.status)""",
    ),
    (
        "markdown",
        """**Stale upstream code.** Ids do not depend on code, so changing a task's body without
bumping its `version` reuses its old output, and everything built from it. Redefine
`get_range` and re-run the pipeline: the root is complete, yet the DAG marks
`get_range` **code changed** (orange outline with a "!") and everything downstream
**stale** (dashed orange outline). The widget's **Rebuild stale** button, or
`%%stardag --rebuild-stale` in code, reruns exactly those tasks; bumping the version
instead gives new ids, so everything downstream is built anew. (A saved notebook keeps
the static DAG with the marks.)""",
    ),
    (
        "code",
        """@sd.task
def get_range(limit: int) -> list[int]:
    return list(range(0, limit))  # same values, different code""",
    ),
    (
        "code",
        """%%stardag --as changed
Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "code",
        """await changed
marks = list(changed.widget.stale.values())
(marks.count("code"), marks.count("upstream")) == (3, 7)  # 3 get_range, 7 downstream""",
    ),
    (
        "markdown",
        """`--rebuild-stale` (the code twin of the button) reruns the 10 stale tasks, and no other:""",
    ),
    (
        "code",
        """%%stardag --as rebuilt --rebuild-stale
Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "code",
        """rebuilt_summary = await rebuilt
(rebuilt_summary.task_count.succeeded, rebuilt.widget.stale) == (10, {})""",
    ),
    (
        "markdown",
        """Putting the original definition back makes them stale again; rebuilding them keeps
this demo repeatable (a `%%stardag` cell can define tasks too):""",
    ),
    (
        "code",
        """%%stardag --as restored --rebuild-stale
@sd.task
def get_range(limit: int) -> list[int]:
    return list(range(limit))


Report(totals=[Slowly(value=get_sum(integers=get_range(limit=n))) for n in (5, 10, 20)])""",
    ),
    (
        "code",
        """await restored
restored.widget.stale == {}""",
    ),
]


def main() -> None:
    write_notebook(CELLS, "demo.ipynb")


if __name__ == "__main__":
    main()

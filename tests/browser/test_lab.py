"""The notebook layer in a real JupyterLab, in headless Chromium: the DAG widget draws the
demo's build, the Cancel button stops a build, the environment picker switches the kernel's
environment, and registry assets render as markdown under a build.

Cells are run through JupyterLab's own commands (``window.jupyterapp``, exposed by the
server flag): the command's promise resolves when the cell's ``execute_reply`` arrives
(``true``, or ``false`` if the cell raised). Its result is parked on ``window`` and polled
with ``wait_for_function``, because ``page.evaluate`` has no timeout.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest

from .conftest import SCREENSHOTS, LabServer, copy_demo, new_page, screenshot

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips (or, under CI, fails) the module
    expect = None

pytestmark = pytest.mark.slow

DEMO_TASKS = 10  # the demo's first build: Report <- 3 x Slowly <- get_sum <- get_range

_JS_PANEL_READY = """(path) => {
    const w = window.jupyterapp?.shell?.currentWidget;
    if (!(w && w.context?.path === path && w.sessionContext)) return false;
    window.__nb = w;
    return true;
}"""
_JS_KERNEL_READY = """async () => {
    const w = window.__nb;
    await w.context.ready;
    await w.sessionContext.ready;
    return w.id;
}"""
_JS_KERNEL_STATUS = "() => window.__nb.sessionContext.session?.kernel?.status"
_JS_RUN = """([command, index, key]) => {
    const w = window.__nb;
    window.__runs = window.__runs || {};
    window.__runs[key] = null;
    if (index !== null) { w.content.activeCellIndex = index; w.content.deselectAll(); }
    window.jupyterapp.commands.execute(command).then(
        ok => { window.__runs[key] = ok === false ? 'failed' : 'ok'; },
        err => { window.__runs[key] = 'error: ' + err; });
}"""
_JS_CELLS = "() => window.__nb.content.widgets.map(c => c.model.toJSON())"
_run_keys = itertools.count()


class Notebook:
    """A notebook opened in JupyterLab in ``page``, with its kernel ready."""

    def __init__(
        self, page: Any, lab: LabServer, path: str, workspace: str, url: str | None = None
    ) -> None:
        self.page = page
        self.path = path
        page.notebooks.append(path)
        page.goto(url or lab.url(path, workspace))
        self.attach()

    def attach(self) -> None:
        """Wait for the notebook panel and its kernel (after opening or reloading)."""
        page, path = self.page, self.path
        page.wait_for_function(_JS_PANEL_READY, arg=path)
        self.panel_id = page.evaluate(_JS_KERNEL_READY)
        page.wait_for_function(f"() => ({_JS_KERNEL_STATUS})() === 'idle'")

    def cell(self, index: int) -> Any:
        return self.page.locator(f"#{self.panel_id} .jp-Notebook .jp-Cell").nth(index)

    def cells(self) -> list[dict[str, Any]]:
        """The cells as nbformat dicts, outputs included."""
        return self.page.evaluate(_JS_CELLS)

    def index_of(self, source_start: str) -> int:
        return next(
            i for i, c in enumerate(self.cells()) if "".join(c["source"]).startswith(source_start)
        )

    def start(self, index: int | None, command: str = "notebook:run-cell") -> str:
        key = f"run{next(_run_keys)}"
        self.page.evaluate(_JS_RUN, [command, index, key])
        return key

    def wait(self, key: str) -> None:
        self.page.wait_for_function(f"() => window.__runs['{key}'] !== null")
        result = self.page.evaluate(f"() => window.__runs['{key}']")
        assert result == "ok", f"{key}: {result}\n{self.errors_text()}"

    def run(self, index: int) -> None:
        self.wait(self.start(index))

    def run_all(self) -> None:
        self.wait(self.start(None, "notebook:run-all-cells"))

    def errors_text(self) -> str:
        errors = [
            o for c in self.cells() for o in c.get("outputs", []) if o["output_type"] == "error"
        ]
        return "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)

    def output_text(self, index: int) -> str:
        outputs = self.cells()[index].get("outputs", [])
        parts = []
        for o in outputs:
            if o["output_type"] == "stream":
                parts.append("".join(o["text"]))
            elif "data" in o:
                parts.append("".join(o["data"].get("text/plain", "")))
        return "".join(parts)

    def assert_clean(self) -> None:
        assert not self.errors_text(), self.errors_text()
        assert self.page.page_errors == [], self.page.page_errors


def write_notebook(lab: LabServer, name: str, *sources: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, lab.root / name)
    return name


# -- the demo notebook, run once per module, shared by the tests that look at it ------------


@pytest.fixture(scope="module")
def demo_run(browser: Any, lab: LabServer) -> Iterator[Notebook]:
    page = new_page(browser)
    try:
        nb = Notebook(page, lab, copy_demo(lab), workspace="demo")
        nb.run_all()
        yield nb
    except BaseException:
        screenshot(page, "demo_run-FAILED")
        raise
    finally:
        page.close()
        lab.shutdown_kernels(page.notebooks)


@pytest.fixture
def demo(demo_run: Notebook, request: pytest.FixtureRequest) -> Iterator[Notebook]:
    yield demo_run
    screenshot(demo_run.page, request.node.name)


def test_demo_draws_the_dag_widget(demo: Notebook) -> None:
    build = demo.cell(demo.index_of("%%stardag --as build"))
    # the build ended (run-all finished): its output is now the static final DAG
    nodes = build.locator(".stardag-static svg g.node")
    expect(nodes).to_have_count(DEMO_TASKS)
    expect(build.locator('.stardag-static g.node[data-status="completed"]')).to_have_count(
        DEMO_TASKS
    )
    picture = build.locator(".stardag-static").first
    picture.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    picture.screenshot(path=str(SCREENSHOTS / "test_demo_draws_the_dag_widget-widget.png"))
    outputs = [o for c in demo.cells() for o in c.get("outputs", [])]
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs
    )  # the picker
    demo.assert_clean()


def test_demo_renders_the_report_asset_as_markdown(demo: Notebook) -> None:
    build = demo.cell(demo.index_of("%%stardag --as build"))
    # the assets area: a markdown output of the build cell (both classes on one element)
    rendered = build.locator(".jp-OutputArea-output.jp-RenderedMarkdown")
    expect(rendered.filter(has_text="Report").first).to_be_visible()
    heading = build.locator(".jp-RenderedMarkdown h3", has_text="Report")
    expect(heading).to_have_count(1)
    heading.scroll_into_view_if_needed()
    demo.assert_clean()


# -- notebooks written by the tests ----------------------------------------------------------


SLEEPY = """import asyncio
import stardag_nb as sd


class Sleepy(sd.AutoTask[int]):
    n: int

    async def run_aio(self):
        await asyncio.sleep(60)
        await self.output().save_aio(self.n)"""


def test_cancel_button_stops_a_build(page: Any, lab: LabServer) -> None:
    path = write_notebook(
        lab, "cancel.ipynb",
        "%load_ext stardag_nb",
        SLEEPY,
        "%%stardag --as job\n[Sleepy(n=1), Sleepy(n=2)]",
        'print("STATUS=" + job.status)\nassert job.status == "cancelled", job.status',
    )  # fmt: skip
    nb = Notebook(page, lab, path, workspace="cancel")
    for i in range(3):
        nb.run(i)  # the %%stardag cell returns at once; the build runs on the kernel's loop
    build = nb.cell(2)
    expect(build.locator('.stardag-node[data-status="running"]')).to_have_count(2)
    cancel = build.locator("button.stardag-cancel")
    expect(cancel).to_be_enabled()
    cancel.click()
    # cancelled: the build ended, so its output is the static DAG with the final statuses
    expect(build.locator('.stardag-static g.node[data-status="cancelled"]')).to_have_count(
        2, timeout=20_000
    )
    nb.run(3)
    assert "STATUS=cancelled" in nb.output_text(3)
    nb.assert_clean()


def test_environment_picker_switches_the_kernel_environment(page: Any, lab: LabServer) -> None:
    path = write_notebook(
        lab, "picker.ipynb",
        "%load_ext stardag_nb",
        'from stardag_nb.notebook import EnvironmentPicker\n\nEnvironmentPicker(extra_environments=["default/other"])',
        'import stardag_nb as sd\n\nprint("ENV=" + sd.registry_provider.get().environment)',
    )  # fmt: skip
    nb = Notebook(page, lab, path, workspace="picker")
    nb.run(0)
    nb.run(1)
    select = nb.cell(1).locator(".stardag-env select")
    expect(select.locator('option[value="default/other"]')).to_have_count(1)
    expect(select).to_have_value("default/local")  # the embedded registry's default
    select.select_option("default/other")
    expect(select).to_have_value("default/other")
    nb.run(2)
    assert "ENV=other" in nb.output_text(2)
    nb.assert_clean()

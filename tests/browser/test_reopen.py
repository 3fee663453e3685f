"""A saved notebook keeps its DAG, in JupyterLab and in Notebook 7 (headless Chromium):
while a build runs its cell shows the live widget; when it ends the output becomes the
static DAG with the final statuses; after saving, restarting the kernel and reloading
the page, that DAG is still drawn (no "Error displaying widget: model not found").
Screenshots in the light and the dark theme."""

from __future__ import annotations

import json

from typing import Any

import pytest

from .conftest import SCREENSHOTS, LabServer, set_theme
from .test_lab import Notebook, write_notebook

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips (or, under CI, fails) the module
    expect = None

pytestmark = pytest.mark.slow

WIDGET = "application/vnd.jupyter.widget-view+json"
TASKS = """import asyncio
import stardag_nb as sd


@sd.task
def numbers(n: int) -> list[int]:
    return list(range(n))


class Slow(sd.AutoTask[int]):
    xs: sd.TaskLoads[list[int]]

    def requires(self):
        return self.xs

    async def run_aio(self):
        await asyncio.sleep(4)
        await self.output().save_aio(sum(self.xs.result()))"""
BUILD = "%%stardag --as job\nSlow(xs=numbers(n={n}))"  # n: a task not built before
STATIC_NODES = ".stardag-static svg g.node"


def _shots(nb: Notebook, cell: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
            set_theme(nb.page, theme)
            cell.scroll_into_view_if_needed()
            nb.page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"))
            cell.screenshot(path=str(SCREENSHOTS / f"{name}-cell-{suffix}.png"))
    finally:
        # the setting is the server's: later tests expect light
        set_theme(nb.page, "JupyterLab Light")


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_saved_notebook_shows_the_final_dag_after_restart_and_reload(
    page: Any, lab: LabServer, frontend: str
) -> None:
    path = write_notebook(  # fmt: skip
        lab,
        f"reopen-{frontend}.ipynb",
        "%load_ext stardag_nb",
        TASKS,
        BUILD.format(n=3 if frontend == "lab" else 4),
        "summary = await job\nsummary.status.value",
        "from stardag_nb.notebook import EnvironmentPicker\n\nEnvironmentPicker()",
    )
    nb = Notebook(
        page,
        lab,
        path,
        workspace=f"reopen-{frontend}",
        url=lab.nb7_url(path) if frontend == "notebook7" else None,
    )
    nb.run(0)
    nb.run(1)
    nb.run(2)  # returns at once: the build runs on the kernel's loop
    build = nb.cell(2)
    # live: the widget draws the running build
    expect(build.locator('.stardag-dag .stardag-node[data-status="running"]')).to_have_count(1)
    assert any(WIDGET in o.get("data", {}) for o in nb.cells()[2]["outputs"])
    nb.run(3)
    nb.run(4)
    expect(nb.cell(4).locator("select, .stardag-picker").first).to_be_visible()
    # ended: the output is now the static DAG with the final statuses, no widget
    expect(build.locator(STATIC_NODES)).to_have_count(2)
    expect(build.locator(f'{STATIC_NODES}[data-status="completed"]')).to_have_count(2)
    expect(build.locator(".stardag-dag")).to_have_count(0)
    assert not any(WIDGET in o.get("data", {}) for o in nb.cells()[2]["outputs"])
    _shots(nb, build, f"reopen-{frontend}-finished")

    nb.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    nb.page.wait_for_function("() => !window.__nb.context.model.dirty")
    # the picker stays live in the page, while the file holds its static fallback
    expect(nb.cell(4).locator("select")).to_be_visible()
    saved = json.loads((lab.root / path).read_text())["cells"][4]["outputs"]
    assert saved and not any(WIDGET in o.get("data", {}) for o in saved)
    assert "stardag environment" in "".join(saved[0]["data"]["text/html"])
    nb.page.evaluate("() => window.__nb.sessionContext.session.kernel.restart()")
    nb.page.wait_for_function("() => window.__nb.sessionContext.session?.kernel?.status === 'idle'")
    nb.page.reload()
    nb.attach()

    build = nb.cell(2)
    expect(build.locator(f'{STATIC_NODES}[data-status="completed"]')).to_have_count(2)
    expect(build.locator(".stardag-static")).to_contain_text("success")
    expect(nb.page.get_by_text("model not found")).to_have_count(0)
    assert nb.page.locator(".jp-Notebook").inner_text().count("Error displaying widget") == 0
    # the environment picker, a widget too, falls back to text naming the environment
    expect(nb.cell(4)).to_contain_text("local")
    _shots(nb, build, f"reopen-{frontend}-reloaded")
    nb.assert_clean()


def test_restart_during_a_build_says_the_view_is_no_longer_live(page: Any, lab: LabServer) -> None:
    long_task = TASKS.replace("asyncio.sleep(4)", "asyncio.sleep(120)")
    path = write_notebook(
        lab, "restart-live.ipynb", "%load_ext stardag_nb", long_task, BUILD.format(n=5)
    )
    nb = Notebook(page, lab, path, workspace="restart-live")
    for i in range(3):
        nb.run(i)
    build = nb.cell(2)
    expect(build.locator('.stardag-dag .stardag-node[data-status="running"]')).to_have_count(1)
    nb.page.evaluate("() => window.__nb.sessionContext.session.kernel.restart()")
    # the output becomes a snapshot of the last statuses, saying why (not a dead live view)
    expect(build.locator(".stardag-static")).to_contain_text("kernel restarted")
    expect(
        build.locator(f'{STATIC_NODES.replace("g.node", ".stardag-node")}[data-status="running"]')
    ).to_have_count(1)
    assert not any(WIDGET in o.get("data", {}) for o in nb.cells()[2]["outputs"])
    nb.assert_clean()

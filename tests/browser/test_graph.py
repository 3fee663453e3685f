"""The live DAG view in a real JupyterLab and Notebook 7: arrowheads and a legend, a progress header that
counts tasks, "blocked by failure" downstream of a failed task, search that highlights,
the timeline view, a readable details panel, and node text that contrasts with its fill
in the light and the dark theme. Screenshots of both themes land in the artifacts."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SCREENSHOTS, LabServer, screenshot, set_theme
from .test_lab import Notebook, write_notebook

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips (or, under CI, fails) the module
    expect = None

pytestmark = pytest.mark.slow

PIPELINE = """import time
import stardag_nb as sd


class Leaf(sd.AutoTask[int]):
    n: int
    ui: str  # each front end's run builds its own tasks (one server, one registry)

    def run(self):
        time.sleep(0.05)
        if self.n == 3:
            raise ValueError("leaf 3 refuses")
        self.output().save(self.n)


class Mid(sd.AutoTask[int]):
    n: int
    ui: str

    def requires(self):
        return Leaf(n=self.n, ui=self.ui)

    def run(self):
        self.output().save(self.requires().output().load() * 10)


class Top(sd.AutoTask[int]):
    ui: str

    def requires(self):
        return [Mid(n=n, ui=self.ui) for n in range(1, 5)]

    def run(self):
        self.output().save(sum(t.output().load() for t in self.requires()))"""

_JS_CONTRAST = """(root) => {
    const lum = (rgb) => {
        const c = rgb.match(/\\d+/g).slice(0, 3).map((v) => v / 255)
            .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const hex = (h) => `rgb(${parseInt(h.slice(1, 3), 16)},${parseInt(h.slice(3, 5), 16)},${parseInt(h.slice(5, 7), 16)})`;
    let worst = 99;
    for (const g of root.querySelectorAll('.stardag-node')) {
        const fill = g.querySelector('rect').getAttribute('fill');
        const ink = getComputedStyle(g.querySelector('text')).fill;
        const [a, b] = [lum(hex(fill)), lum(ink)];
        worst = Math.min(worst, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05));
    }
    return worst;
}"""


def _widget_shot(view: Any, name: str) -> None:
    """The widget alone (for the README: docs/screenshots/ holds copies of these)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.locator(".stardag-dag").screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_the_live_graph_reads_well(page: Any, lab: LabServer, frontend: str) -> None:
    shot = "graph" if frontend == "lab" else "graph-notebook7"
    path = write_notebook(
        lab, f"graph-{frontend}.ipynb",
        "%load_ext stardag_nb",
        PIPELINE,
        f"%%stardag --as job --fail-mode continue\nTop(ui={frontend!r})",
        "await job",
        "job.widget",  # the live view of the finished build, kept while the kernel lives
    )  # fmt: skip
    url = lab.nb7_url(path) if frontend == "notebook7" else None
    nb = Notebook(page, lab, path, workspace=f"graph-{frontend}", url=url)
    for i in range(5):
        nb.run(i)
    view = nb.cell(4)
    expect(view.locator(".stardag-node")).to_have_count(9)
    # arrowheads on every edge, and a legend
    assert view.locator("marker path.stardag-arrowhead").count() == 1
    edges = view.locator("path.stardag-edge")
    expect(edges).to_have_count(8)
    assert all(
        m and m.startswith("url(#")
        for m in edges.evaluate_all("els => els.map(e => e.getAttribute('marker-end'))")
    )
    expect(view.locator(".stardag-legend-item")).to_have_count(10)
    # the failure, what it blocks, and a header that counts tasks
    expect(view.locator('.stardag-node[data-status="failed"]')).to_have_count(1)
    expect(view.locator('.stardag-node[data-status="blocked"]')).to_have_count(2)  # Mid(n=3), Top
    summary = view.locator(".stardag-summary")
    expect(summary).to_contain_text("6/9 done")
    expect(summary).to_contain_text("1 failed")
    expect(summary).to_contain_text("2 blocked")
    # labels carry the distinguishing parameters
    expect(view.locator(".stardag-node", has_text="n=2")).to_have_count(2)  # Leaf and Mid
    # node text contrasts with its fill (WCAG AA: 4.5)
    for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
        set_theme(nb.page, theme)
        assert view.evaluate(_JS_CONTRAST) >= 4.5
        view.scroll_into_view_if_needed()
        screenshot(page, f"{shot}-{suffix}")
        _widget_shot(view, f"{shot}-widget-{suffix}")
    set_theme(nb.page, "JupyterLab Light")
    # search highlights by parameter
    view.locator("input.stardag-search").fill("n=3")
    expect(view.locator(".stardag-node.stardag-match")).to_have_count(2)
    view.locator("input.stardag-search").fill("")
    expect(view.locator(".stardag-node.stardag-match")).to_have_count(0)
    # details: parameters as a table, the error with a readable traceback
    view.locator('.stardag-node[data-status="failed"]').click()
    details = view.locator(".stardag-details")
    expect(details.locator(".stardag-params th", has_text="n")).to_have_count(1)
    expect(details).not_to_contain_text("__namespace")
    expect(details.locator(".stardag-error")).to_contain_text("leaf 3 refuses")
    details.locator(".stardag-traceback summary").click()
    assert "\n" in details.locator(".stardag-traceback pre").inner_text()
    expect(details).to_contain_text("duration")
    screenshot(page, f"{shot}-details")
    _widget_shot(view, f"{shot}-widget-details")
    # the timeline: a bar per task that ran
    view.locator("button.stardag-view-timeline").click()
    expect(view.locator(".stardag-tl-bar")).to_have_count(7)  # 4 leaves and 3 mids ran
    screenshot(page, f"{shot}-timeline")
    _widget_shot(view, f"{shot}-widget-timeline")
    nb.assert_clean()

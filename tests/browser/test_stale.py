"""Stale upstream code in a real JupyterLab and Notebook 7 (headless Chromium): redefine a
task in the middle of a pipeline and re-run the pipeline cell; the root is complete, yet
the DAG marks the changed task ("code changed", with a badge) and the task downstream
("stale"), in the legend, the header and the details panel, legible in the light and the
dark theme. The output stays the widget, whose Rebuild stale button reruns exactly those
tasks; then the marks are gone and the output is the static DAG. A notebook saved while
stale marks are shown (autosave too) has the static DAG with the marks in its file, never
the widget, while the view keeps the widget and its button."""

from __future__ import annotations

from typing import Any

import pytest

from tests.notebook.test_stale import CHANGED, PIPELINE, TASKS

from .conftest import SCREENSHOTS, LabServer, screenshot, set_theme
from .test_lab import Notebook, write_notebook

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips (or, under CI, fails) the module
    expect = None

pytestmark = pytest.mark.slow

WIDGET = "application/vnd.jupyter.widget-view+json"
CHANGED_AGAIN = CHANGED.replace("if x % 2 == 1", "if x > 2")

# Contrast (WCAG) of node text on its fill, and of the stale outline on the page background.
_JS_CONTRAST = """(root) => {
    const lum = (rgb) => {
        const c = rgb.match(/[\\d.]+/g).slice(0, 3).map((v) => v / 255)
            .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const hex = (h) => `rgb(${[1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16))})`;
    const ratio = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const css = (node) => getComputedStyle(node);
    const page = lum(css(root.querySelector('.stardag-scroll')).backgroundColor);
    let text = 99, outline = 99;
    for (const g of root.querySelectorAll('.stardag-node')) {
        const fill = lum(hex(g.querySelector('rect').getAttribute('fill')));
        text = Math.min(text, ratio(fill, lum(css(g.querySelector('text')).fill)));
        if (g.hasAttribute('data-stale')) {
            outline = Math.min(outline, ratio(lum(css(g.querySelector('rect')).stroke), page));
        }
    }
    return [text, outline];
}"""


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_stale_marks_and_the_rebuild_button(page: Any, lab: LabServer, frontend: str) -> None:
    n = 6 if frontend == "lab" else 8  # tasks of their own: the server's registry is shared
    pipeline = PIPELINE.replace("n=6", f"n={n}")
    path = write_notebook(
        lab, f"stale-{frontend}.ipynb",
        "%load_ext stardag_nb",  # 0
        TASKS,  # 1
        f"%%stardag --as first\n{pipeline}",  # 2
        "await first\nRUNS.clear()",  # 3
        CHANGED,  # 4: Clean's body changes, not its version
        f"%%stardag --as changed\n{pipeline}",  # 5
        "await changed",  # 6
        "(sorted(RUNS), report.output().load())",  # 7
        CHANGED_AGAIN,  # 8
        f"%%stardag --as again\n{pipeline}",  # 9
        "await again",  # 10
    )  # fmt: skip
    url = lab.nb7_url(path) if frontend == "notebook7" else None
    nb = Notebook(page, lab, path, workspace=f"stale-{frontend}", url=url)
    for i in range(7):
        nb.run(i)
    view = nb.cell(5)
    # the root is complete, yet the changed task and the one downstream are marked
    stale = view.locator(".stardag-dag .stardag-node[data-stale]")
    expect(stale).to_have_count(2)
    expect(view.locator('.stardag-node[data-stale="code"]')).to_contain_text("Clean")
    expect(view.locator('.stardag-node[data-stale="code"] .stardag-badge')).to_be_visible()
    expect(view.locator('.stardag-node[data-stale="upstream"]')).to_contain_text("Report")
    expect(view.locator(".stardag-summary")).to_contain_text("2 stale")
    expect(view.locator(".stardag-legend-stale")).to_contain_text("code changed")
    rebuild = view.locator("button.stardag-rebuild")
    expect(rebuild).to_be_visible()
    expect(rebuild).to_have_text("Rebuild stale (2)")
    expect(rebuild).to_be_enabled()
    assert any(WIDGET in o.get("data", {}) for o in nb.cells()[5]["outputs"])  # kept live
    # the details panel says what happened and what to do
    view.locator('.stardag-node[data-stale="upstream"]').click()
    note = view.locator(".stardag-details .stardag-stale-note")
    expect(note).to_contain_text("upstream, changed since this output was built")
    expect(note).to_contain_text("rebuild stale")
    for theme, suffix in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
        set_theme(nb.page, theme)
        text, outline = view.locator(".stardag-dag").evaluate(_JS_CONTRAST)
        assert text >= 4.5, (theme, text)
        assert outline >= 3.0, (theme, outline)  # the stale mark stands out from the page
        view.scroll_into_view_if_needed()
        screenshot(page, f"stale-{frontend}-{suffix}")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        widget_shot = SCREENSHOTS / f"stale-{frontend}-widget-{suffix}.png"
        view.locator(".stardag-dag").screenshot(path=str(widget_shot))
    set_theme(nb.page, "JupyterLab Light")

    # one click reruns exactly the stale tasks; the marks are gone, the output is static
    rebuild.click()
    expect(view.locator(".stardag-static svg g.node")).to_have_count(4)  # 2 rerun, 2 up to date
    expect(view.locator('.stardag-static g.node[data-status="completed"]')).to_have_count(2)
    expect(view.locator(".stardag-static g.node[data-stale]")).to_have_count(0)
    expect(view.locator(".stardag-dag")).to_have_count(0)
    nb.run(7)
    odd = sum(range(1, n, 2))  # Clean keeps the odd numbers now
    assert nb.output_text(7) == f"(['Clean', 'Report'], {odd + 100})"
    view.scroll_into_view_if_needed()
    screenshot(page, f"stale-{frontend}-rebuilt")

    # stale again, then saved (as autosave does): the saved file has the static DAG with
    # the marks, and the view keeps the widget with its Rebuild stale button
    for i in (8, 9, 10):
        nb.run(i)
    again = nb.cell(9)
    expect(again.locator(".stardag-dag .stardag-node[data-stale]")).to_have_count(2)
    nb.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    nb.page.wait_for_function("() => !window.__nb.context.model.dirty")
    saved = (lab.root / path).read_text()
    assert WIDGET not in saved, "a widget output was saved: the file would show 'model not found'"
    assert 'data-stale=\\"code\\"' in saved and "2 tasks are stale" in saved
    expect(again.locator(".stardag-dag .stardag-node[data-stale]")).to_have_count(2)
    button = again.locator("button.stardag-rebuild")
    expect(button).to_be_enabled()
    again.scroll_into_view_if_needed()
    screenshot(page, f"stale-{frontend}-saved")
    button.click()  # still works after the save
    expect(again.locator(".stardag-static g.node[data-stale]")).to_have_count(0)
    expect(again.locator('.stardag-static g.node[data-status="completed"]')).to_have_count(2)
    nb.assert_clean()

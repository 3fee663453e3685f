"""Progress of a large build in a real JupyterLab and Notebook 7: during a 2,001-task
``%%stardag`` build the view shows its first node at once, the header counts tasks (not
families) with done/total climbing several times a second, and the collapsed family node
shows how many of its members are done, running and pending."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import LabServer, screenshot
from .test_lab import Notebook, write_notebook

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest skips (or, under CI, fails) the module
    expect = None

pytestmark = pytest.mark.slow

N = 2000

PIPELINE = f'''import time
import stardag_nb as sd


class Item(sd.AutoTask[int]):
    i: int
    ui: str  # each front end's run builds its own tasks (one server, one registry)

    def run(self):
        time.sleep(0.01)
        self.output().save(self.i)


class Collect(sd.AutoTask[int]):
    ui: str

    def requires(self):
        return [Item(i=i, ui=self.ui) for i in range({N})]

    def run(self):
        self.output().save(len(self.requires()))'''

# Samples the header and the family node every 50 ms from the moment the cell is sent,
# until the build has ended: [ms since start, header text, family subtitle, node count].
_JS_SAMPLE = """([cellIndex, panelId]) => { window.__progress = new Promise((resolve) => {
    const t0 = performance.now();
    const samples = [];
    let endedAt = null;
    const cell = () => document.querySelectorAll(`#${panelId} .jp-Notebook .jp-Cell`)[cellIndex];
    const timer = setInterval(() => {
        const root = cell()?.querySelector('.stardag-dag');
        const header = root?.querySelector('.stardag-summary')?.textContent || '';
        const family = [...(root?.querySelectorAll('.stardag-node') || [])]
            .map((g) => g.querySelector('text.stardag-sub')?.textContent || '')
            .find((t) => / done| running| pending/.test(t)) || '';
        const nodes = root ? root.querySelectorAll('.stardag-node').length : 0;
        samples.push([Math.round(performance.now() - t0), header, family, nodes]);
        const status = root?.querySelector('.stardag-state')?.textContent || '';
        if (/success|failure|cancelled/i.test(status) && endedAt === null) endedAt = performance.now();
        // a little past the end: the last counts may follow the final status
        if ((endedAt !== null && performance.now() - endedAt > 1500) || performance.now() - t0 > 120000) {
            clearInterval(timer);
            resolve(samples);
        }
    }, 50);
}); }"""


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_a_2000_task_build_shows_progress_as_it_runs(
    page: Any, lab: LabServer, frontend: str
) -> None:
    path = write_notebook(
        lab, f"progress-{frontend}.ipynb",
        "%load_ext stardag_nb",
        PIPELINE,
        f"%%stardag --as job\nCollect(ui={frontend!r})",
        "summary = await job\nsummary.status.value",
    )  # fmt: skip
    url = lab.nb7_url(path) if frontend == "notebook7" else None
    nb = Notebook(page, lab, path, workspace=f"progress-{frontend}", url=url)
    nb.run(0)
    nb.run(1)
    page.evaluate(_JS_SAMPLE, [2, nb.panel_id])  # starts sampling, returns at once
    nb.run(2)  # returns at once: the build runs on the kernel's loop
    nb.run(3)
    samples = page.evaluate("() => window.__progress")
    screenshot(page, f"progress-{frontend}-finished")

    total = N + 1
    first_node = next((t for t, _, _, nodes in samples if nodes > 0), None)
    assert first_node is not None and first_node < 3000, samples[:5]  # includes cell start
    done = [
        (t, int(m.group(1)))
        for t, header, _, _ in samples
        if (m := re.search(rf"(\d+)/{total} done", header))
    ]
    assert done, f"the header never counted the {total} tasks: {samples[-3:]}"
    # the finished build's output is the static DAG, with the final count
    expect(nb.cell(2).locator(".stardag-static")).to_contain_text(f"{total}/{total} done")
    climbing = sorted({d for _, d in done if 0 < d < total})
    started = next(t for t, d in done if d > 0)
    ended = done[-1][0]
    seconds = max((ended - started) / 1000, 0.2)
    # updates reach the page several times a second (the issue asks for >= 5/s; the
    # bound is generous for a loaded 2-core machine)
    assert len(climbing) >= max(3, int(seconds * 2)), (seconds, climbing)
    print(f"{frontend}: first node after {first_node} ms; {len(climbing)} distinct counts in {seconds:.2f} s")
    assert climbing == sorted(climbing)
    # the collapsed family counts its members by status while the build runs, and at the end
    family_midway = [f for _, h, f, _ in samples if f and "running" in f]
    assert family_midway, [s for s in samples if s[2]][:5]
    assert re.search(r"\d+ done", family_midway[-1]) or "pending" in family_midway[-1]
    assert nb.output_text(3).strip().strip("'") == "success"
    nb.assert_clean()

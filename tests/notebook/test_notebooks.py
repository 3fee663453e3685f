"""Every notebook in notebooks/ executes headless top to bottom (nbclient), and the
executed demo shows the static DAG when rendered to HTML without widget state."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from tools.run_notebooks import execute  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert any(p.name == "demo.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    executed = execute(path, tmp_path)  # the kernel inherits this test's fresh HOME
    nb = nbformat.read(executed, as_version=4)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    results = [
        o["data"].get("text/plain")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "execute_result"
    ]
    assert "False" not in results, "a notebook's check cell evaluated to False"


def _first_build_output(nb: object) -> dict:
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type == "code" and cell.source.startswith("%%stardag"):
            return cell.outputs[0]["data"]
    raise AssertionError("no %%stardag cell")


def test_demo_saves_the_final_dag_and_renders_without_widget_state(tmp_path: Path) -> None:
    nb = nbformat.read(execute(NOTEBOOKS[0].parent / "demo.ipynb", tmp_path), as_version=4)
    data = _first_build_output(nb)
    build_cell = next(
        c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%stardag")
    )
    assets = [o["data"].get("text/markdown", "") for o in build_cell.outputs[1:]]
    assert any("### Report" in text for text in assets), (
        "the report asset did not render under the build"
    )
    # the saved static picture shows the final statuses, not the initial empty graph
    assert "— success, 10 tasks" in data["text/markdown"]
    assert data["image/svg+xml"].count('data-status="completed"') == 10

    from nbconvert import HTMLExporter

    nb.metadata.pop("widgets", None)  # as on GitHub / after a restart: no widget state
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "<svg" in html and html.count('data-status="completed"') >= 10

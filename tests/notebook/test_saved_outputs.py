"""What a saved notebook keeps (nbclient, a real kernel, no browser): a finished build's
output is the static DAG with its final statuses, not the widget (which a front end
without the kernel shows as "model not found"); the picker's fallback describes the
environments; no output is blank; nbconvert's HTML shows the DAG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("anywidget")

from tools.run_notebooks import execute  # noqa: E402

WIDGET = "application/vnd.jupyter.widget-view+json"

CELLS = [
    "%load_ext stardag_nb",
    """import stardag_nb as sd
from stardag_nb.registry_asset import MarkdownRegistryAsset


@sd.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@sd.task
def total(xs: sd.Depends[list[int]]) -> int:
    return sum(xs)


class Noted(sd.AutoTask[int]):
    def run(self):
        self.output().save(1)

    def registry_assets(self):
        return [MarkdownRegistryAsset(name="note", body="**noted**")]""",
    "%%stardag --as job\ntotal(xs=numbers(n=4))",  # 2: no assets anywhere
    "summary = await job\nsummary.status.value",
    "%%stardag --as noted\nNoted()",  # 4: a task with assets
    "await noted",
    "%%stardag --as unawaited\nnumbers(n=9)",  # 6: finishes while later cells run
    "import asyncio\nawait asyncio.sleep(1.5)",
    "%%stardag --no-run\ntotal(xs=numbers(n=12))",  # 8
    'from stardag_nb.notebook import EnvironmentPicker\n\nEnvironmentPicker(extra_environments=["default/other"])',
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("saved")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    path = tmp / "saved.ipynb"
    nbformat.write(nb, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(tmp / "targets"))
        mp.setenv("STARDAG_REGISTRY", str(tmp / "registry.sqlite3"))
        executed = execute(path, tmp / "out")
    return nbformat.read(executed, as_version=4)


def _displays(cell: Any) -> list[dict[str, Any]]:
    return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]


def test_a_finished_build_saves_the_static_dag_not_the_widget(saved: Any) -> None:
    first = _displays(saved.cells[2])
    assert len(first) == 1, "a DAG without asset-defining tasks gets no assets area"
    data = first[0]["data"]
    assert WIDGET not in data, "the saved output still needs the kernel's widget model"
    html, svg = data["text/html"], data["image/svg+xml"]
    assert "<svg" in html and html.count('data-status="completed"') == 2
    assert svg.count('data-status="completed"') == 2
    assert "— success, 2 tasks" in data["text/markdown"]
    assert (
        data["text/plain"].startswith("<stardag_nb build ")
        and "success, 2 tasks" in data["text/plain"]
    )
    assert first[0]["metadata"]["stardag_nb"]["build_output"] is True


def test_assets_area_under_a_build_holds_its_assets(saved: Any) -> None:
    outputs = _displays(saved.cells[4])
    assert WIDGET not in outputs[0]["data"]
    assert outputs[0]["data"]["image/svg+xml"].count('data-status="completed"') == 1
    assert "**noted**" in outputs[1]["data"]["text/markdown"]


def test_no_run_dag_is_static(saved: Any) -> None:
    (output,) = _displays(saved.cells[8])
    assert WIDGET not in output["data"]
    assert output["data"]["image/svg+xml"].count('data-status="pending"') == 2


def test_picker_fallback_describes_the_environments(saved: Any) -> None:
    (output,) = _displays(saved.cells[9])
    data = output["data"]
    assert WIDGET in data  # the live picker, while the kernel runs
    text = data["text/plain"]
    assert "EnvironmentPicker object" not in text
    assert text.startswith("stardag environment: default/local")
    assert "* default/local" in text and "- default/other" in text and "%stardag_env" in text
    assert "<table>" in data["text/html"] and "default/other" in data["text/html"]


def test_no_output_is_blank(saved: Any) -> None:
    for index, cell in enumerate(saved.cells):
        for output in _displays(cell):
            shown = [v for k, v in output["data"].items() if k != "text/plain" and str(v).strip()]
            assert shown or str(output["data"].get("text/plain", "")).strip(), (index, output)
            assert str(output["data"].get("text/markdown", "x")).strip(), (index, output)


def test_nbconvert_html_shows_the_final_dags(saved: Any) -> None:
    from nbconvert import HTMLExporter

    nb = nbformat.from_dict(saved)
    nb.metadata.pop("widgets", None)  # as on GitHub / after a restart: no widget state
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert html.count('data-status="completed"') >= 3
    assert "EnvironmentPicker object" not in html


def test_an_unawaited_build_saves_its_final_dag_too(saved: Any) -> None:
    # it finished while a later cell ran: the update is sent as part of that cell too
    (output,) = _displays(saved.cells[6])
    assert WIDGET not in output["data"]
    assert output["data"]["image/svg+xml"].count('data-status="completed"') == 1

"""The distributions a user installs from: license, metadata and the widget bundle.

Builds the sdist, then the wheel from that sdist (as pip does when installing from an
sdist), in a temporary directory: the bundle shipped in the sdist means no Node is
needed there."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("dag_widget.js", "env_picker.js")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    # --sdist then --wheel from it: the wheel is what an install from the sdist gives.
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_sdist_ships_license_sources_and_built_bundle(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    assert f"{top}/LICENSE" in names
    assert f"{top}/js/package-lock.json" in names  # the sources can be rebuilt
    for bundle in BUNDLES:
        assert f"{top}/stardag_nb/notebook/static/dist/{bundle}" in names
    assert not any("/node_modules/" in n or "/.venv/" in n for n in names)


def test_wheel_metadata_names_license_classifiers_and_urls(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(zf.read(meta_name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        license_text = zf.read(next(n for n in names if n.endswith("licenses/LICENSE"))).decode()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert meta["License-Expression"] == "Apache-2.0"  # SPDX
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: Jupyter" in classifiers
    assert "Typing :: Typed" in classifiers
    assert meta.get_all("Project-URL")
    for bundle in BUNDLES:
        assert f"stardag_nb/notebook/static/dist/{bundle}" in names
    assert "stardag_nb/py.typed" in names

"""Fixtures for the real-browser tests: one Jupyter server (JupyterLab, and Notebook 7 when
installed) and one headless Chromium per test module, a fresh page per test, a screenshot
after every test.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``browser`` extra (JupyterLab,
Playwright's Python client): ``scripts/browser_deps.sh``. Never ``playwright install``.
Without them the tests here are skipped, except under ``CI=true``, where they fail, so a
broken install is noticed. Screenshots go to ``out/browser-screenshots/`` (CI artifacts).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "out" / "browser-screenshots"
CHROMIUM = os.environ.get("STARDAG_TEST_CHROMIUM", "/usr/bin/chromium")
# Playwright's launch() already adds --headless, --no-sandbox, a temporary --user-data-dir,
# --no-first-run, --disable-sync, --disable-background-networking, --disable-component-update
# and --disable-dev-shm-usage; --disable-gpu and --disable-quic it does not add.
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
TIMEOUT_MS = 60_000  # first kernel start + widget JS on a loaded 2-core CI machine
SERVER_START_SECONDS = 90


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (run scripts/browser_deps.sh)"
    for module, extra in (
        ("playwright", "playwright"),
        ("jupyterlab", "jupyterlab"),
        ("psutil", "psutil"),
    ):
        if importlib.util.find_spec(module) is None:
            return (
                f"{extra} is not installed (pip install -e '.[browser]' or scripts/browser_deps.sh)"
            )
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_requirements() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


# -- the JupyterLab server -------------------------------------------------------------------


@dataclass
class LabServer:
    base: str
    token: str
    root: Path  # the server's root_dir: notebooks go here
    tmp: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(
            f"{self.base}/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def url(self, notebook: str, workspace: str) -> str:
        # A workspace per page: no tabs restored from an earlier test's page.
        return f"{self.base}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def nb7_url(self, notebook: str) -> str:
        """The notebook in Notebook 7 (served by the same server as JupyterLab)."""
        return f"{self.base}/notebooks/{notebook}?token={self.token}"

    def shutdown_kernels(self, paths: list[str]) -> None:
        """Delete the sessions (and kernels) of these notebooks, so kernels do not pile up."""
        with contextlib.suppress(OSError, ValueError):
            for session in self.api("api/sessions"):
                if session.get("path") not in paths:
                    continue
                with contextlib.suppress(OSError):
                    self.api(f"api/sessions/{session['id']}", "DELETE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(
    _browser_requirements: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """A JupyterLab server on 127.0.0.1 with an isolated Jupyter/IPython config, a temp HOME
    and fresh stardag target root and registry; stopped (with its kernels) by PID."""
    import psutil

    tmp = tmp_path_factory.mktemp("lab")
    root, home = tmp / "root", tmp / "home"
    root.mkdir()
    home.mkdir()
    # Never fetch news/updates: no "get notified about Jupyter news?" toast over screenshots.
    settings = tmp / "config/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    token = f"stardag-{os.getpid()}-{time.monotonic_ns()}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARDAG_", "JUPYTER"))}
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        IPYTHONDIR=str(tmp / "ipython"),
        STARDAG_TARGET_ROOTS__DEFAULT=str(tmp / "targets"),
        STARDAG_REGISTRY=str(tmp / "registry.sqlite3"),
    )
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",  # Notebook 7 at /notebooks/...
    ]  # fmt: skip
    log_path = tmp / "lab-server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, tmp, log_path)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            with contextlib.suppress(OSError):
                server.api("api/status")
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer in {SERVER_START_SECONDS} s:\n{log_path.read_text()[-4000:]}"
                )
            time.sleep(0.2)
        yield server
    finally:
        # Only our processes: the server and what it spawned (kernels), by PID.
        kids = []
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(proc.pid).children(recursive=True)
        with contextlib.suppress(OSError):
            server.api("api/shutdown", "POST")  # the server stops its kernels itself
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for kid in kids:
            with contextlib.suppress(psutil.Error):
                kid.kill()
        log.close()


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(_browser_requirements: None) -> Iterator[Any]:
    """One headless Chromium (Debian's) per module."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# Known upstream page errors that are not ours, all from Notebook 7.6 (none seen in Lab
# 4.6 so far): its keyboard-shortcuts plugin on every page load, and its notebook page,
# which has no file browser, asked to open a path after a reload.
KNOWN_PAGE_ERRORS: tuple[str, ...] = (
    "Cannot read properties of undefined (reading 'schema')",
    "Command 'filebrowser:open-path' not registered.",
)


def new_page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.page_errors = []  # type: ignore[attr-defined]
    page.notebooks = []  # type: ignore[attr-defined]  # paths opened, for kernel shutdown
    page.on(
        "pageerror",
        lambda e: (
            None if any(k in str(e) for k in KNOWN_PAGE_ERRORS) else page.page_errors.append(str(e))
        ),  # type: ignore[attr-defined]
    )
    return page


# The page's chrome in the theme: the menu bar's computed background is dark exactly when
# the theme is, and only that theme's stylesheet is loaded.
_JS_THEME_PAINTED = """(light) => {
    const bar = document.querySelector('.lm-MenuBar') || document.body;
    const rgb = getComputedStyle(bar).backgroundColor.match(/[\\d.]+/g).map(Number);
    const lum = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
    const themes = [...document.querySelectorAll('link[rel=stylesheet]')]
        .map((link) => link.href).filter((href) => href.includes('/api/themes/'));
    const wanted = light ? 'light' : 'dark';  // no stylesheet of the other theme is left
    return (light ? lum > 0.5 : lum < 0.5) && themes.every((href) => href.includes(wanted));
}"""
_JS_TWO_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


def set_theme(page: Any, name: str) -> None:
    """Switch JupyterLab (or Notebook 7) to the theme ``name`` and wait until the page
    is drawn in it, so that screenshots and contrast checks see that theme only."""
    from playwright.sync_api import expect

    page.evaluate(
        "(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", name
    )
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", name)
    page.wait_for_function(_JS_THEME_PAINTED, arg="Light" in name)
    # JupyterLab covers the page with its splash while a theme loads, then fades it out
    expect(page.locator("#jupyterlab-splash")).to_have_count(0)
    page.evaluate(_JS_TWO_FRAMES)


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    with contextlib.suppress(Exception):  # a dead page must not hide the test's own error
        page.screenshot(path=str(path))
    return path


@pytest.fixture
def page(browser: Any, lab: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page for one test; screenshot at the end, then its kernels are shut down."""
    pg = new_page(browser)
    try:
        yield pg
    finally:
        screenshot(pg, request.node.name)
        pg.close()
        lab.shutdown_kernels(pg.notebooks)


def copy_demo(lab: LabServer, name: str = "demo.ipynb") -> str:
    shutil.copy(REPO / "notebooks" / "demo.ipynb", lab.root / name)
    return name

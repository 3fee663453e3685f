"""Write notebooks/team-registry.ipynb from the cells below (the notebook is committed; rerun
this after editing the cells): python tools/make_team_notebook.py"""

from __future__ import annotations

from _notebook_file import write_notebook

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# A team registry: `stardag-nb serve`

A team shares builds, target roots and assets through the registry service. This notebook
starts one on loopback (SQLite, in a temporary folder), logs in with the owner token that
`serve --init` prints, and builds into an environment whose target roots everyone shares.
It needs `pip install 'stardag_nb[service]'`. Everything happens under a temporary
`STARDAG_HOME`, so your own `~/.stardag` is untouched.""",
    ),
    (
        "code",
        """import os, pathlib, subprocess, sys, tempfile, time

work = pathlib.Path(tempfile.mkdtemp(prefix="stardag-team-"))
os.environ["STARDAG_HOME"] = str(work / "home")  # this demo's login, caches and config
os.environ["COLUMNS"] = "160"  # wide tables from the `!stardag-nb` commands below
cli = [sys.executable, "-m", "stardag_nb.cli"]

log = open(work / "serve.log", "w")
server = subprocess.Popen(
    [*cli, "serve", "--init", "--host", "127.0.0.1", "--port", "0",
     "--database-url", f"sqlite+aiosqlite:///{work}/service.sqlite3"],
    stdout=log, stderr=subprocess.STDOUT,
)
token = url = None
deadline = time.monotonic() + 90
while url is None:  # the server prints its token, then its address
    text = (work / "serve.log").read_text()
    for line in text.splitlines():
        if line.startswith("Owner token:"):
            token = line.split(":", 1)[1].strip()
        if line.startswith("Serving registry on"):
            url = line.split()[-1]
    if url is None and (server.poll() is not None or time.monotonic() > deadline):
        raise RuntimeError(f"the service did not start:\\n{text}")
    time.sleep(0.1)
print("service:", url, "(PID", server.pid, ")")""",
    ),
    (
        "markdown",
        """Log in (the CLI writes a profile, so builds now go to the service), and look around.
The same commands work on the embedded SQLite registry, without a service.""",
    ),
    (
        "code",
        """!{sys.executable} -m stardag_nb.cli auth login --url {url} --token {token}
!{sys.executable} -m stardag_nb.cli config list environments""",
    ),
    (
        "markdown",
        """## An environment with its own target root

Creating an environment provisions it: each target root is created and checked writable,
and the environment moves *created → provisioning → running*. `config use` makes it the
active one (for the CLI and for this kernel, which has not loaded its config yet); builds
then write under its roots. In a running kernel, `%stardag_env NAME` or the picker below
switch.""",
    ),
    (
        "code",
        """shared = work / "shared-outputs"
!{sys.executable} -m stardag_nb.cli environment create analytics --target-root default={shared}
!{sys.executable} -m stardag_nb.cli config use environment analytics""",
    ),
    (
        "code",
        """%load_ext stardag_nb
import stardag_nb as sd
from stardag_nb.notebook import EnvironmentPicker
from stardag_nb.registry_asset import MarkdownRegistryAsset

EnvironmentPicker()""",
    ),
    (
        "code",
        """@sd.task
def measurements(n: int) -> list[float]:
    return [i * 0.5 for i in range(n)]


class Summary(sd.AutoTask[dict]):
    values: sd.TaskLoads[list[float]]

    def requires(self):
        return self.values

    def run(self):
        xs = self.values.result()
        self.output().save({"count": len(xs), "mean": sum(xs) / len(xs)})

    def registry_assets(self):
        s = self.output().load()
        return [MarkdownRegistryAsset(name="summary", body=f"**{s['count']}** values, mean {s['mean']:.2f}")]""",
    ),
    (
        "code",
        """%%stardag --as team_build
Summary(values=measurements(n=9))""",
    ),
    (
        "code",
        """outcome = await team_build
outcome.status.name == "SUCCESS" and (shared / "Summary").is_dir()  # written under the shared root""",
    ),
    ("code", """!{sys.executable} -m stardag_nb.cli registry builds"""),
    (
        "markdown",
        """## The lifecycle: failed, fixed, deleted

A target root that cannot be created leaves the environment **failed** with the reason.
Fix the cause and `provision` again. `delete` removes the environment's records for good;
a later build there fails with a clear message.""",
    ),
    (
        "code",
        """blocker = work / "not-a-directory"
blocker.write_text("a file where a folder should be")
!{sys.executable} -m stardag_nb.cli environment create scratch --target-root default={blocker}/out""",
    ),
    (
        "code",
        """blocker.unlink()  # the fix
!{sys.executable} -m stardag_nb.cli environment provision scratch
!{sys.executable} -m stardag_nb.cli environment events scratch""",
    ),
    (
        "code",
        """from stardag_nb.registry import environment_registry

scratch = environment_registry("scratch")  # the same service, that environment; nothing switched
!{sys.executable} -m stardag_nb.cli environment delete scratch --yes
try:
    message = str(sd.build(measurements(n=3), registry=scratch).error)
except Exception as exc:
    message = str(exc)
print(message)
"was deleted" in message""",
    ),
    (
        "code",
        """server.terminate()  # stopped by its PID
server.wait(timeout=30) is not None""",
    ),
]


def main() -> None:
    write_notebook(CELLS, "team-registry.ipynb")


if __name__ == "__main__":
    main()

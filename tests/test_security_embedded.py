"""The hostile-root attacks of issue 11 on the embedded registry (``EmbeddedAdmin`` on a
real SQLite file, real directories): overlapping and dangerous roots are refused, and a
purge deletes exactly the outputs the environment's builds recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.exceptions import APIError
from stardag_nb.registry import EmbeddedAdmin, SQLiteRegistry
from stardag_nb.registry.wire import TargetRootIn
from stardag_nb.target import InMemoryFileSystemTarget, TargetFactory, target_factory_provider


class SecLeaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def snapshot(*dirs: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for top in dirs:
        for path in sorted(top.rglob("*")) if top.exists() else []:
            found[str(path)] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def admin(tmp_path: Path, isolated_env: Path) -> Iterator[EmbeddedAdmin]:
    a = EmbeddedAdmin(isolated_env / ".stardag" / "registry.sqlite3", username="alice")
    yield a
    a.close()


@pytest.fixture
def victim(admin: EmbeddedAdmin, tmp_path: Path) -> Path:
    root = tmp_path / "victim" / "data"
    admin.create_workspace("victims")
    assert admin.create_environment("victims", "prod", {"default": str(root)}).state == "running"
    (root / "Task").mkdir()
    (root / "Task" / "out.json").write_text("precious")
    return root


def test_overlapping_roots_are_refused_in_any_workspace(
    admin: EmbeddedAdmin, victim: Path, tmp_path: Path
) -> None:
    admin.create_workspace("evil")
    link = tmp_path / "link"
    link.symlink_to(victim, target_is_directory=True)
    before = snapshot(victim.parent)
    for uri in (str(victim), f"local://{victim}", f"file://{victim}/", f"{victim}/./",
                str(victim.parent), str(victim / "Task"), str(link)):  # fmt: skip
        with pytest.raises(APIError, match="overlaps target root 'default'") as refused:
            admin.create_environment("evil", "grab", {"default": uri})
        assert f"of environment 'victims/prod'" in str(refused.value)
    admin.create_environment("evil", "mine", {"default": str(tmp_path / "mine")})
    with pytest.raises(APIError, match="overlaps"):
        admin.add_target_root("evil", "mine", "extra", f"local://{victim}/x")
    with pytest.raises(APIError, match="overlaps"):
        admin.set_target_roots("evil", "mine", {"default": str(victim.parent)})
    assert admin.list_target_roots("evil", "mine") == {"default": str(tmp_path / "mine")}
    assert snapshot(victim.parent) == before


def test_dangerous_roots_are_refused(admin: EmbeddedAdmin, isolated_env: Path) -> None:
    for uri in ("/", "file:///", "local:///.", "/etc", "local:///etc", "/usr/lib", "~",
                "~/.stardag", str(isolated_env), "relative/dir", "."):  # fmt: skip
        with pytest.raises(APIError, match="is refused"):
            admin.create_environment("default", "bad", {"default": uri})
    assert not any(p.name.startswith(".stardag-probe") for p in Path("/etc").iterdir())
    assert (isolated_env / ".stardag" / "registry.sqlite3").exists()


def test_purge_deletes_exactly_the_recorded_outputs(
    admin: EmbeddedAdmin, victim: Path, tmp_path: Path
) -> None:
    root = tmp_path / "mine"
    admin.create_environment("default", "dev", {"default": str(root)})
    registry = SQLiteRegistry(admin.path, environment="dev")
    with target_factory_provider.override(TargetFactory(target_roots={"default": str(root)})):
        sd.build_sequential(SecLeaf(n=3), registry=registry)
    registry.close()
    built = [p for p in root.rglob("*") if p.is_file()]
    assert built, "the build wrote its output"
    unrecorded = root / "notes.txt"
    unrecorded.write_text("mine, but not an output")
    # hostile records: outputs outside the environment's root
    (env_id,) = (
        sqlite3.connect(admin.path)
        .execute("SELECT id FROM environments WHERE name = 'dev' AND deleted_at IS NULL")
        .fetchone()
    )
    with sqlite3.connect(admin.path) as conn:
        for i, uri in enumerate(
            [
                str(victim / "Task" / "out.json"),
                f"{root}/../victim/data",
                f"local://{victim}/Task/out.json",
                str(root),
                str(admin.path),
            ]
        ):
            conn.execute(
                "INSERT INTO tasks (environment_id, task_id, namespace, name, body, output_uri,"
                " created_at) VALUES (?, ?, '', 'Evil', '{}', ?, 0)",
                (env_id, f"evil-{i}", uri),
            )  # fmt: skip
    before = snapshot(victim.parent)

    deleted = admin.delete_environment("default", "dev", purge_data=True)
    assert all(not p.exists() for p in built)
    assert unrecorded.exists() and root.is_dir()
    assert snapshot(victim.parent) == before and admin.path.exists()
    purged = {p.name: p.message for p in deleted.purged}
    assert purged["default"] == f"deleted {len(built)} recorded output(s) under {root}"
    assert purged["-"].startswith("kept 5 recorded output(s) under none of")


def test_purge_outputs_refuses_escapes_and_dangerous_roots(tmp_path: Path) -> None:
    from stardag_nb.environments import purge_outputs

    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.json").write_text("keep")
    (root / "a" / "out.json").write_text("go")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    checks = purge_outputs(
        [TargetRootIn(name="default", uri=f"local://{root}")],
        [str(root / "a" / "out.json"), str(root / "escape" / "x.json"), str(root)],
    )
    assert not (root / "a" / "out.json").exists() and (outside / "x.json").exists()
    assert not checks[0].ok and "outside the root" in checks[0].message
    assert checks[1].name == "-" and str(root) in checks[1].message
    for dangerous in ("/", "~", "local:///.", "/etc"):
        refused = purge_outputs([TargetRootIn(name="r", uri=dangerous)], ["/etc/hostname"])
        assert not refused[0].ok and "refused" in refused[0].message
    # in-memory and fsspec memory roots: the output's own keys only
    store = InMemoryFileSystemTarget.uri_to_bytes
    store.update({"in-memory://r/a.json": b"1", "in-memory://r/b.json": b"2",
                  "in-memory://other/a.json": b"3"})  # fmt: skip
    purge_outputs([TargetRootIn(name="m", uri="in-memory://r")],
                  ["in-memory://r/a.json", "in-memory://other/a.json"])  # fmt: skip
    assert "in-memory://r/a.json" not in store
    assert store.pop("in-memory://r/b.json") == b"2" and store.pop("in-memory://other/a.json")

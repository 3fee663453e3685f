"""The commit a build records: git's short sha, ``-dirty`` with changes, an error outside git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stardag_nb.registry import _base, get_git_commit_hash

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SHORT_SHA", "COMMIT_HASH", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_base, "_git_hash_cache", {})


def test_commit_of_a_work_tree_from_a_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg" / "deep").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    sha = _git(repo, "rev-parse", "--short", "HEAD")

    monkeypatch.chdir(repo / "pkg" / "deep")
    assert get_git_commit_hash() == sha

    (repo / "untracked.txt").write_text("new\n")
    monkeypatch.setattr(_base, "_git_hash_cache", {})
    assert get_git_commit_hash() == f"{sha}-dirty"


def test_outside_a_work_tree_names_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="SHORT_SHA or COMMIT_HASH"):
        get_git_commit_hash()
    monkeypatch.setenv("COMMIT_HASH", "abc1234")
    assert get_git_commit_hash() == "abc1234"


def test_repository_named_by_git_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    assert get_git_commit_hash() == _git(repo, "rev-parse", "--short", "HEAD")


def test_a_build_in_a_work_tree_records_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stardag_nb as sd
    from stardag_nb.registry import SQLiteRegistry, registry_provider

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("STARDAG_HOME", str(tmp_path / "stardag-home"))
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(tmp_path / "targets"))

    @sd.task
    def answer() -> int:
        return 42

    summary = sd.build(answer())
    registry = registry_provider.get()
    assert isinstance(registry, SQLiteRegistry)
    registry.flush()
    build = registry.get_build(summary.build_id)
    assert build.commit_hash == _git(repo, "rev-parse", "--short", "HEAD")
    registry.close()

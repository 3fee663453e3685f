"""Outputs stay inside their target root: derived paths that would leave it are refused
with an error naming the task and the path, and nothing is written outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import stardag_nb as sd
from stardag_nb.exceptions import TargetError
from stardag_nb._alias_task import AliasedMetadata
from stardag_nb.registry import NoOpRegistry
from stardag_nb.target import TargetFactory, get_target, target_factory_provider

sd.namespace("confinement", __name__)


class DotDotPath(sd.AutoTask[int]):
    @property
    def _relpath(self) -> str:
        return "../../escaped.json"

    def run(self) -> None:
        self.output().save(1)


class AbsolutePath(sd.AutoTask[int]):
    where: str

    @property
    def _relpath(self) -> str:
        return self.where

    def run(self) -> None:
        self.output().save(1)


class DotDotExtra(sd.AutoTask[int]):
    @property
    def _relpath_extra(self) -> str:
        return "../../.."

    def run(self) -> None:
        self.output().save(1)


class DotDotName(sd.AutoTask[int], name_override="../../../escaped"):
    def run(self) -> None:
        self.output().save(1)


class DotDotNamespace(sd.AutoTask[int], namespace_override="/tmp/escaped"):
    def run(self) -> None:
        self.output().save(1)


@pytest.fixture
def roots(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "deep" / "er" / "root"
    root.mkdir(parents=True)
    with target_factory_provider.override(TargetFactory(target_roots={"default": str(root)})):
        yield tmp_path, root


def _files_outside(tmp_path: Path, root: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]


@pytest.mark.parametrize(
    "task",
    [
        DotDotPath(),
        DotDotExtra(),
        DotDotName(),
        DotDotNamespace(),
        AbsolutePath(where="/tmp/stardag-nb-escaped.json"),
        AbsolutePath(where="file:///tmp/stardag-nb-escaped.json"),
    ],
    ids=["relpath", "relpath_extra", "name_override", "namespace_override", "absolute", "uri"],
)
def test_a_derived_path_that_leaves_the_root_is_refused(roots, task: sd.AutoTask[int]) -> None:  # type: ignore[no-untyped-def]
    tmp_path, root = roots
    with pytest.raises(TargetError) as info:
        task.output()
    message = str(info.value)
    assert type(task).__name__ in message and "outside its target root" in message
    assert "AliasTask" in message  # the fix for pointing at outputs elsewhere
    summary = sd.build(task, registry=NoOpRegistry(), progress=False)
    assert summary.status.value == "failure"
    assert _files_outside(tmp_path, root) == []
    assert not os.path.exists("/tmp/stardag-nb-escaped.json")


def test_get_target_refuses_dot_dot_but_takes_explicit_locations(roots) -> None:  # type: ignore[no-untyped-def]
    tmp_path, root = roots
    with pytest.raises(TargetError, match=r"would leave the target root 'default'"):
        get_target("a/../../x.json")
    explicit = tmp_path / "elsewhere.json"
    assert get_target(str(explicit)).uri == str(explicit)  # a full path names itself
    assert get_target("a/b.json").uri == f"{root}/a/b.json"


def test_an_empty_or_relative_root_is_refused(tmp_path: Path) -> None:
    for bad, phrase in (("", "is empty"), ("relative/dir", "a relative path")):
        factory = TargetFactory(target_roots={"default": bad})
        with pytest.raises(TargetError, match=phrase) as info:
            factory.get_target("x.json")
        assert "STARDAG_TARGET_ROOTS__DEFAULT" in str(info.value)


def test_an_empty_root_from_the_environment_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", "")
    monkeypatch.chdir(tmp_path)
    from stardag_nb.config import clear_config_cache

    clear_config_cache()
    try:
        with target_factory_provider.override(TargetFactory()):
            task = DotDotPathless()
            summary = sd.build(task, registry=NoOpRegistry(), progress=False)
    finally:
        clear_config_cache()
    assert summary.status.value == "failure"
    assert "empty" in str(summary.error) or any(
        "empty" in str(r) for r in getattr(summary, "errors", [])
    ), summary
    assert list(tmp_path.rglob("*.json")) == []


class DotDotPathless(sd.AutoTask[int]):
    def run(self) -> None:
        self.output().save(1)


def test_an_alias_of_an_explicit_uri_still_works(roots) -> None:  # type: ignore[no-untyped-def]
    """An alias names an existing output by its full URI (not derived): allowed, even
    under another root."""
    tmp_path, root = roots
    other = tmp_path / "other-root"
    with target_factory_provider.override(TargetFactory(target_roots={"default": str(other)})):
        original = DotDotPathless()
        sd.build(original, registry=NoOpRegistry(), progress=False)
        meta = AliasedMetadata.from_task(original)
    alias = sd.AliasTask[int](aliased=meta)
    assert alias.output().uri.startswith(str(other))
    assert alias.output().load() == 1

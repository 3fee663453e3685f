"""TargetFactory: roots, prefixes, fsspec URIs, errors and the module-level provider."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import stardag_nb.target as target_module
from stardag_nb.exceptions import MissingDependencyError, TargetError, UnknownTargetRootError
from stardag_nb.target import (
    DirectoryTarget,
    InMemoryFileSystemTarget,
    LocalTarget,
    RemoteFileSystemTarget,
    TargetFactory,
    get_directory_target,
    get_target,
    target_factory_provider,
)


def test_roots_normalised_with_trailing_slash(tmp_path: Path) -> None:
    factory = TargetFactory(
        target_roots={"default": str(tmp_path / "root"), "slashed": str(tmp_path / "s") + "/"}
    )
    assert factory.target_roots == {
        "default": str(tmp_path / "root") + "/",
        "slashed": str(tmp_path / "s") + "/",
    }
    assert factory.get_path("a/b.json") == str(tmp_path / "root" / "a" / "b.json")
    assert factory.get_target("a/b.json") == LocalTarget(str(tmp_path / "root" / "a" / "b.json"))
    assert factory.get_target("x", "slashed").uri == str(tmp_path / "s" / "x")


def test_tilde_in_explicit_root(isolated_env: Path) -> None:
    factory = TargetFactory(target_roots={"default": "~/roots"})
    assert factory.get_target("x.txt").uri == str(isolated_env / "roots" / "x.txt")


def test_absolute_paths_and_uris_pass_through(tmp_path: Path) -> None:
    factory = TargetFactory(target_roots={"default": str(tmp_path / "root")})
    absolute = str(tmp_path / "elsewhere" / "f.txt")
    assert factory.get_path(absolute) == absolute
    assert factory.get_target(absolute) == LocalTarget(absolute)
    assert factory.get_path("memory://b/k") == "memory://b/k"


def test_in_memory_uris_share_the_clearable_store() -> None:
    factory = TargetFactory(target_roots={"default": "in-memory://root"})
    with InMemoryFileSystemTarget.cleared():
        target = factory.get_target("key.txt")
        assert isinstance(target, RemoteFileSystemTarget)
        assert target.uri == "in-memory://root/key.txt"
        with target.open("w") as handle:
            handle.write("shared")
        assert InMemoryFileSystemTarget.uri_to_bytes == {"in-memory://root/key.txt": b"shared"}
        assert InMemoryFileSystemTarget("in-memory://root/key.txt").open("r").read() == "shared"
        assert factory.get_target("in-memory://root/key.txt").exists()  # full URI as-is
    assert not factory.get_target("key.txt").exists()


def test_unknown_key_error_lists_keys_and_how_to_add(tmp_path: Path) -> None:
    factory = TargetFactory(target_roots={"default": str(tmp_path), "large": str(tmp_path)})
    with pytest.raises(UnknownTargetRootError) as info:
        factory.get_target("a", target_root_key="archive")
    message = str(info.value)
    assert "'archive'" in message
    assert "['default', 'large']" in message
    assert "STARDAG_TARGET_ROOTS__ARCHIVE=" in message
    assert isinstance(info.value, TargetError)
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownTargetRootError):
        factory.get_directory_target("a", "archive")


def test_relative_root_is_rejected(tmp_path: Path) -> None:
    factory = TargetFactory(target_roots={"default": str(tmp_path), "rel": "relative/dir"})
    with pytest.raises(TargetError, match="must be absolute"):
        factory.get_target("x", "rel")
    assert factory.get_target("x").uri == str(tmp_path / "x")  # other keys still work


def test_custom_prototypes(tmp_path: Path) -> None:
    factory = TargetFactory(
        target_roots={"default": "in-memory://root", "local": str(tmp_path)},
        prefix_to_target_prototype={"in-memory://": InMemoryFileSystemTarget, "/": LocalTarget},
    )
    target = factory.get_target("k.txt")
    assert target == InMemoryFileSystemTarget("in-memory://root/k.txt")
    assert isinstance(factory.get_target("k", "local"), LocalTarget)
    no_local = TargetFactory(
        target_roots={"default": "in-memory://root"},
        prefix_to_target_prototype={"in-memory://": InMemoryFileSystemTarget},
    )
    with pytest.raises(TargetError, match="does not match any configured prefix"):
        no_local._get_target_prototype("relative/x")


def test_directory_target_from_factory(tmp_path: Path) -> None:
    factory = TargetFactory(target_roots={"default": str(tmp_path / "root")})
    directory = factory.get_directory_target("dd")
    assert isinstance(directory, DirectoryTarget)
    assert directory.uri == str(tmp_path / "root" / "dd") + "/"
    with (directory / "f.txt").open("w") as handle:
        handle.write("x")
    directory.mark_done()
    assert (tmp_path / "root" / "dd._DONE").exists()
    assert factory.get_directory_target("dd/").uri == directory.uri


def test_memory_root_through_fsspec_writes_and_reads() -> None:
    import fsspec

    factory = TargetFactory(target_roots={"default": "memory://stardag-nb-test/root"})
    target = factory.get_target("a/b.txt")
    assert isinstance(target, RemoteFileSystemTarget)
    assert target.uri == "memory://stardag-nb-test/root/a/b.txt"
    assert not target.exists()
    with target.open("w") as handle:
        handle.write("through fsspec")
    assert target.exists()
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("memory://stardag-nb-test/root/a/b.txt") == b"through fsspec"
    with target.open("r") as handle:
        assert handle.read() == "through fsspec"
    with target.proxy_path("r") as path:
        assert path.read_text() == "through fsspec"
    with pytest.raises(RuntimeError):
        with target.open("w") as handle:
            handle.write("never uploaded")
            raise RuntimeError
    assert fs.cat_file("memory://stardag-nb-test/root/a/b.txt") == b"through fsspec"

    directory = factory.get_directory_target("dir")
    with (directory / "x.bin").open("wb") as handle:
        handle.write(b"\x00")
    directory.mark_done()
    assert directory.exists()
    assert fs.cat_file("memory://stardag-nb-test/root/dir._SUB_KEYS") == b"x.bin"
    fs.rm("memory://stardag-nb-test", recursive=True)


def test_missing_protocol_package_raises_missing_dependency() -> None:
    # s3fs may be installed here (the S3 tests use it): hide it in a fresh process.
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from stardag_nb.exceptions import MissingDependencyError\n"
        "from stardag_nb.target import TargetFactory\n"
        "f = TargetFactory(target_roots={'default': 's3://bucket/root'})\n"
        "for uri in ('x.json', 's3://bucket/other'):\n"
        "    try:\n"
        "        f.get_target(uri)\n"
        "    except MissingDependencyError as e:\n"
        "        assert isinstance(e, ImportError)\n"
        "        print(e)\n"
        "        print('---')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second, _ = out.stdout.split("---")
    assert "s3://bucket/root/x.json" in first
    assert "s3fs" in first
    assert "pip install 'stardag_nb[remote]' s3fs" in first
    assert "s3://bucket/other" in second  # absolute URI, same error


def test_missing_fsspec_itself_is_reported() -> None:
    code = (
        "import sys; sys.modules['fsspec'] = None\n"
        "from stardag_nb.exceptions import MissingDependencyError\n"
        "from stardag_nb.target import TargetFactory\n"
        "f = TargetFactory(target_roots={'default': 'gs://bucket/r'})\n"
        "try:\n"
        "    f.get_target('x')\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gs://bucket/r/x" in out.stdout
    assert "fsspec" in out.stdout and "gcsfs" in out.stdout
    assert "pip install 'stardag_nb[remote]' gcsfs" in out.stdout


def test_unknown_protocol_is_a_target_error() -> None:
    factory = TargetFactory(target_roots={"default": "/tmp"})
    with pytest.raises(TargetError, match="zz"):
        factory.get_target("zz://somewhere/x")


def test_default_roots_come_from_config(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = isolated_env / "configured"
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(root))
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__OTHER", "memory://other")
    from stardag_nb import config

    config.clear_config_cache()
    factory = TargetFactory()
    assert factory.target_roots["default"] == str(root) + "/"
    assert factory.target_roots["other"] == "memory://other/"


def test_provider_and_module_functions(tmp_path: Path) -> None:
    factory = TargetFactory(target_roots={"default": str(tmp_path / "a"), "b": str(tmp_path / "b")})
    with target_factory_provider.override(factory):
        assert get_target("x.txt") == LocalTarget(str(tmp_path / "a" / "x.txt"))
        assert get_target("x.txt", "b") == LocalTarget(str(tmp_path / "b" / "x.txt"))
        assert get_directory_target("d").uri == str(tmp_path / "a" / "d") + "/"
        assert target_module.get_target("y").uri == str(tmp_path / "a" / "y")
    assert target_factory_provider.get() is not factory


def test_provider_default_reads_config_once(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARDAG_TARGET_ROOTS__DEFAULT", str(isolated_env / "first"))
    from stardag_nb import config

    config.clear_config_cache()
    assert get_target("t").uri == str(isolated_env / "first" / "t")
    target_factory_provider.set(TargetFactory(target_roots={"default": str(isolated_env / "set")}))
    assert get_target("t").uri == str(isolated_env / "set" / "t")

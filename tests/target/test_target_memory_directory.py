"""In-memory targets and DirectoryTarget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stardag_nb.target import (
    DirectoryTarget,
    FileSystemTarget,
    InMemoryFileSystemTarget,
    InMemoryRemoteFileSystem,
    InMemoryTarget,
    LoadableSaveableTarget,
    LoadableTarget,
    LocalTarget,
    RemoteFileSystemTarget,
    SaveableTarget,
    Target,
)

# --------------------------------------------------------------------------------------
# InMemoryTarget


def test_in_memory_target_save_load_and_clear() -> None:
    with InMemoryTarget.cleared():
        target: InMemoryTarget[dict[str, int]] = InMemoryTarget("k")
        assert not target.exists()
        obj = {"x": 1}
        target.save(obj)
        assert target.exists()
        assert target.load() is obj  # the object itself, not a copy
        assert InMemoryTarget.key_to_object == {"k": obj}
        assert InMemoryTarget("k").load() is obj  # class-level store
        with pytest.raises(KeyError, match="nokey"):
            InMemoryTarget("nokey").load()
    assert InMemoryTarget.key_to_object == {}


def test_in_memory_target_async_and_protocols() -> None:
    with InMemoryTarget.cleared():
        target: InMemoryTarget[int] = InMemoryTarget(("tuple", "key"))
        assert isinstance(target, Target)
        assert isinstance(target, LoadableTarget)
        assert isinstance(target, SaveableTarget)
        assert isinstance(target, LoadableSaveableTarget)
        assert not isinstance(target, FileSystemTarget)
        asyncio.run(target.save_aio(5))
        assert asyncio.run(target.exists_aio())
        assert asyncio.run(target.load_aio()) == 5
        InMemoryTarget.clear_targets()
        assert not target.exists()


def test_in_memory_target_cleared_clears_on_entry() -> None:
    InMemoryTarget("before").save(1)
    with InMemoryTarget.cleared():
        assert InMemoryTarget.key_to_object == {}
        InMemoryTarget("inside").save(2)
    assert InMemoryTarget.key_to_object == {}


# --------------------------------------------------------------------------------------
# InMemoryFileSystemTarget


def test_in_memory_fs_target_replaces_content() -> None:
    with InMemoryFileSystemTarget.cleared():
        target = InMemoryFileSystemTarget("in-memory://a/b.txt")
        assert not target.exists()
        with target.open("w") as handle:
            handle.write("abc")
        with target.open("w") as handle:
            handle.write("de")
        assert InMemoryFileSystemTarget.uri_to_bytes == {"in-memory://a/b.txt": b"de"}
        with target.open("r") as handle:
            assert handle.read() == "de"
        with target.open("rb") as handle:
            assert handle.read() == b"de"
        assert target == InMemoryFileSystemTarget("in-memory://a/b.txt")
    assert InMemoryFileSystemTarget.uri_to_bytes == {}


def test_in_memory_fs_target_write_is_all_or_nothing() -> None:
    with InMemoryFileSystemTarget.cleared():
        target = InMemoryFileSystemTarget("in-memory://x")
        with target.open("wb") as handle:
            handle.write(b"old")
        with pytest.raises(RuntimeError):
            with target.open("wb") as handle:
                handle.write(b"new")
                raise RuntimeError
        assert target.open("rb").read() == b"old"
        with pytest.raises(FileNotFoundError, match="in-memory://missing"):
            InMemoryFileSystemTarget("in-memory://missing").open("r")


def test_in_memory_fs_target_async_and_proxy_paths() -> None:
    with InMemoryFileSystemTarget.cleared():
        target = InMemoryFileSystemTarget("in-memory://dir/file.csv")

        async def go() -> bytes:
            async with target.open_aio("wb") as handle:
                await handle.write(b"1,2\n")
            assert await target.exists_aio()
            async with target.proxy_path_aio("r") as path:
                assert path.name == "file.csv"
                assert path.read_bytes() == b"1,2\n"
            async with target.open_aio("rb") as handle:
                return bytes(await handle.read())

        assert asyncio.run(go()) == b"1,2\n"
        with target.proxy_path("w") as path:
            path.write_text("3,4\n")
        assert InMemoryFileSystemTarget.uri_to_bytes["in-memory://dir/file.csv"] == b"3,4\n"
        with target.proxy_path("r") as path:
            local = path
            assert path.read_text() == "3,4\n"
        assert not local.exists()  # temporary copy removed


# --------------------------------------------------------------------------------------
# InMemoryRemoteFileSystem via RemoteFileSystemTarget


def test_in_memory_remote_file_system() -> None:
    rfs = InMemoryRemoteFileSystem()
    assert rfs.URI_PREFIX == "in-memory://"
    target = RemoteFileSystemTarget("in-memory://r/x.txt", rfs)
    assert not target.exists()
    with target.open("w") as handle:
        handle.write("hello")
    assert rfs.uri_to_bytes == {"in-memory://r/x.txt": b"hello"}
    assert InMemoryRemoteFileSystem().uri_to_bytes == {}  # per-instance store
    with pytest.raises(RuntimeError):
        with target.open("w") as handle:
            handle.write("partial")
            raise RuntimeError
    with target.open("r") as handle:
        assert handle.read() == "hello"
    with pytest.raises(FileNotFoundError):
        RemoteFileSystemTarget("in-memory://r/none", rfs).open("rb")


# --------------------------------------------------------------------------------------
# DirectoryTarget


def test_directory_target_layout(tmp_path: Path) -> None:
    root = tmp_path / "out"
    directory = DirectoryTarget(str(root / "dir"), LocalTarget)
    assert directory.uri == str(root / "dir") + "/"
    assert not directory.exists()
    first = directory.get_sub_target("b/x.txt")
    second = directory / "a.txt"
    assert first == LocalTarget(str(root / "dir" / "b" / "x.txt"))
    assert second.uri == str(root / "dir" / "a.txt")
    with first.open("w") as handle:
        handle.write("1")
    with second.open("w") as handle:
        handle.write("2")
    assert not directory.exists()
    directory.mark_done()
    assert directory.exists()
    assert (root / "dir._SUB_KEYS").read_text() == "a.txt\nb/x.txt"
    assert (root / "dir._DONE").read_bytes() == b""
    assert directory.sub_keys_target() == LocalTarget(str(root / "dir._SUB_KEYS"))
    assert sorted(p.name for p in root.iterdir()) == ["dir", "dir._DONE", "dir._SUB_KEYS"]


def test_directory_target_trailing_slash_and_async(tmp_path: Path) -> None:
    directory = DirectoryTarget(str(tmp_path / "d2") + "/", LocalTarget)
    assert directory.uri == str(tmp_path / "d2") + "/"
    (directory / "z").open("w").close()

    async def go() -> bool:
        assert not await directory.exists_aio()
        await directory.mark_done_aio()
        return await directory.exists_aio()

    assert asyncio.run(go())
    assert (tmp_path / "d2._SUB_KEYS").read_text() == "z"
    assert (tmp_path / "d2._DONE").exists()


def test_directory_target_with_in_memory_prototype() -> None:
    with InMemoryFileSystemTarget.cleared():
        directory = DirectoryTarget("in-memory://run/out", InMemoryFileSystemTarget)
        directory.mark_done()
        assert directory.exists()
        assert InMemoryFileSystemTarget.uri_to_bytes == {
            "in-memory://run/out._SUB_KEYS": b"",
            "in-memory://run/out._DONE": b"",
        }

"""Remote file systems: RemoteFileSystemTarget, CachedRemoteFileSystem, fsspec."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stardag_nb.target import (
    CachedRemoteFileSystem,
    CachedRemoteFileSystemConfig,
    FsspecRemoteFileSystem,
    InMemoryRemoteFileSystem,
    RemoteFileSystemABC,
    RemoteFileSystemTarget,
    Serializable,
)
from stardag_nb.target.serialize import JSONSerializer


class CountingFS(InMemoryRemoteFileSystem):
    """Counts calls, to check what the cache saves."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def exists(self, uri: str) -> bool:
        self.calls.append("exists")
        return super().exists(uri)

    def download(self, uri: str, destination: Path) -> None:
        self.calls.append("download")
        super().download(uri, destination)

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        self.calls.append("upload")
        super().upload(source, uri, ok_remove)


class ThreadedFS(RemoteFileSystemABC):
    """Only sync methods: the base class provides the async ones."""

    URI_PREFIX = "thr://"

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def exists(self, uri: str) -> bool:
        return uri in self.store

    def download(self, uri: str, destination: Path) -> None:
        if uri not in self.store:
            raise FileNotFoundError(uri)
        destination.write_bytes(self.store[uri])

    def upload(self, source: Path, uri: str, ok_remove: bool = False) -> None:
        self.store[uri] = source.read_bytes()


def test_remote_target_sync_and_async_io() -> None:
    rfs = ThreadedFS()
    target = RemoteFileSystemTarget("thr://b/k.json", rfs)
    serializable = Serializable(target, JSONSerializer(dict[str, int]))

    async def go() -> dict[str, int]:
        assert not await serializable.exists_aio()
        await serializable.save_aio({"a": 1})
        assert await serializable.exists_aio()
        async with target.proxy_path_aio("r") as path:
            assert path.read_bytes() == b'{"a":1}'
        async with target.proxy_path_aio("w") as path:
            path.write_bytes(b'{"a":2}')
        with pytest.raises(RuntimeError):
            async with target.open_aio("wb") as handle:
                await handle.write(b'{"a":3}')
                raise RuntimeError
        return await serializable.load_aio()

    assert asyncio.run(go()) == {"a": 2}
    assert serializable.load() == {"a": 2}
    with target.proxy_path("w") as path:
        path.write_bytes(b'{"a":4}')
    assert rfs.store["thr://b/k.json"] == b'{"a":4}'
    with pytest.raises(RuntimeError):
        with target.proxy_path("w") as path:
            path.write_bytes(b"partial")
            raise RuntimeError
    assert rfs.store["thr://b/k.json"] == b'{"a":4}'
    with target.open("r") as handle:
        assert handle.read() == '{"a":4}'


def test_cached_remote_file_system(tmp_path: Path) -> None:
    remote = CountingFS()
    cache = CachedRemoteFileSystem(
        remote,
        root=str(tmp_path / "cache"),
        root_by_prefix={"in-memory://special/": str(tmp_path / "cache2")},
    )
    assert cache.URI_PREFIX == "in-memory://"
    assert cache.get_cache_path("in-memory://a/b.txt") == tmp_path / "cache" / "a" / "b.txt"
    assert (
        cache.get_cache_path("in-memory://special/b.txt")
        == tmp_path / "cache2" / "special" / "b.txt"
    )
    target = RemoteFileSystemTarget("in-memory://a/b.txt", cache)
    with target.open("w") as handle:
        handle.write("hello")
    assert remote.uri_to_bytes == {"in-memory://a/b.txt": b"hello"}
    assert (tmp_path / "cache" / "a" / "b.txt").read_text() == "hello"  # written through

    remote.calls.clear()
    assert target.exists()
    with target.open("r") as handle:
        assert handle.read() == "hello"
    with target.proxy_path("r") as path:
        assert path == tmp_path / "cache" / "a" / "b.txt"
    assert remote.calls == []  # all served from the cache

    remote.uri_to_bytes["in-memory://a/c.txt"] = b"remote only"
    other = RemoteFileSystemTarget("in-memory://a/c.txt", cache)
    with other.open("rb") as handle:
        assert handle.read() == b"remote only"
    assert remote.calls == ["download"]
    assert (tmp_path / "cache" / "a" / "c.txt").read_bytes() == b"remote only"
    assert not list((tmp_path / "cache" / "a").glob("*.tmp-*"))

    no_cache_check = CachedRemoteFileSystem(
        remote, root=str(tmp_path / "cache"), allow_cache_check_exists=False
    )
    remote.uri_to_bytes.clear()
    assert cache.exists("in-memory://a/b.txt")
    assert not no_cache_check.exists("in-memory://a/b.txt")


def test_cached_remote_file_system_async(tmp_path: Path) -> None:
    remote = CountingFS()
    remote.uri_to_bytes["in-memory://x/y"] = b"data"
    cache = CachedRemoteFileSystem(remote, root=str(tmp_path / "c"))

    async def go() -> bytes:
        assert await cache.exists_aio("in-memory://x/y")
        destination = tmp_path / "dest"
        await cache.download_aio("in-memory://x/y", destination)
        source = tmp_path / "src"
        source.write_bytes(b"up")
        await cache.upload_aio(source, "in-memory://x/z", ok_remove=True)
        assert not source.exists()  # moved into the cache
        return destination.read_bytes()

    assert asyncio.run(go()) == b"data"
    assert remote.uri_to_bytes["in-memory://x/z"] == b"up"
    assert (tmp_path / "c" / "x" / "z").read_bytes() == b"up"


def test_cached_remote_file_system_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3://"):
        CachedRemoteFileSystem(
            InMemoryRemoteFileSystem(), root=str(tmp_path), root_by_prefix={"s3://": "/x"}
        )
    cache = CachedRemoteFileSystem(InMemoryRemoteFileSystem(), root=str(tmp_path))
    with pytest.raises(ValueError):
        cache.get_cache_path("gs://other/prefix")
    with pytest.raises(ValueError):
        cache.get_cache_path("in-memory://a/../../escape")


def test_cached_remote_file_system_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = CachedRemoteFileSystemConfig(root="/cache", root_by_prefix={"s3://b/": "/c"})
    assert config.allow_cache_check_exists is True
    monkeypatch.setenv("ROOT", "/from/env")
    monkeypatch.setenv("ALLOW_CACHE_CHECK_EXISTS", "false")
    from_env = CachedRemoteFileSystemConfig()  # type: ignore[call-arg]
    assert from_env.root == "/from/env"
    assert from_env.allow_cache_check_exists is False


def test_fsspec_remote_file_system_memory(tmp_path: Path) -> None:
    rfs = FsspecRemoteFileSystem("memory")
    assert rfs.URI_PREFIX == "memory://"
    uri = "memory://stardag-nb-remote-test/f.bin"
    source = tmp_path / "s"
    source.write_bytes(b"bytes")
    rfs.upload(source, uri)
    assert rfs.exists(uri)
    destination = tmp_path / "d"
    rfs.download(uri, destination)
    assert destination.read_bytes() == b"bytes"
    assert asyncio.run(rfs.exists_aio(uri))
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        rfs.download("memory://stardag-nb-remote-test/nothing-here", tmp_path / "n")
    # wrapped in the local cache
    cache = CachedRemoteFileSystem(rfs, root=str(tmp_path / "cache"))
    target = RemoteFileSystemTarget(uri, cache)
    with target.open("rb") as handle:
        assert handle.read() == b"bytes"
    assert (tmp_path / "cache" / "stardag-nb-remote-test" / "f.bin").read_bytes() == b"bytes"
    rfs.get_fs().rm("memory://stardag-nb-remote-test", recursive=True)


def test_fsspec_local_file_protocol(tmp_path: Path) -> None:
    rfs = FsspecRemoteFileSystem("file")
    uri = f"file://{tmp_path}/deep/er/x.txt"
    target = RemoteFileSystemTarget(uri, rfs)
    with target.open("w") as handle:
        handle.write("local via fsspec")
    assert (tmp_path / "deep" / "er" / "x.txt").read_text() == "local via fsspec"
    assert target.exists()

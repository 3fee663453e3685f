"""Provisioning target roots on real directories and fsspec file systems (purging recorded
outputs is covered by tests/test_security_embedded.py)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from stardag_nb.environments import RootCheck, provision_target_root
from stardag_nb.registry.wire import TargetRootIn


def _root(uri: str, create: bool = True, name: str = "default") -> TargetRootIn:
    return TargetRootIn(name=name, uri=uri, create=create)


def _no_probe_left(path: Path) -> bool:
    return not any(p.name.startswith(".stardag-probe-") for p in path.iterdir())


def test_local_root_is_created_and_probed(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    check = provision_target_root(_root(str(target)))
    assert isinstance(check, RootCheck)
    assert check.ok, check.message
    assert (check.name, check.uri) == ("default", str(target))
    assert target.is_dir() and _no_probe_left(target)
    assert "created" in check.message
    again = provision_target_root(_root(str(target)))
    assert again.ok and "exists" in again.message


def test_home_and_file_uri_roots(isolated_env: Path, tmp_path: Path) -> None:
    check = provision_target_root(_root("~/stardag/roots/x"))
    assert check.ok, check.message
    assert (isolated_env / "stardag" / "roots" / "x").is_dir()
    file_root = tmp_path / "via-file-uri"
    check = provision_target_root(_root(f"file://{file_root}"))
    assert check.ok, check.message
    assert file_root.is_dir()


def test_root_under_a_regular_file_fails_with_the_os_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    uri = str(blocker / "sub")
    check = provision_target_root(_root(uri, name="data"))
    assert not check.ok
    assert check.message == (
        f"target root 'data' ({uri}): cannot create directory: [Errno 20] Not a directory"
    )


def test_missing_root_without_create_fails(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    check = provision_target_root(_root(str(missing), create=False))
    assert not check.ok
    assert str(missing) in check.message and "does not exist" in check.message
    assert not missing.exists()


def test_root_that_is_a_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    check = provision_target_root(_root(str(path)))
    assert not check.ok and "not a directory" in check.message


def test_relative_and_empty_uris_are_refused() -> None:
    for uri in ("relative/dir", " "):
        check = provision_target_root(_root(uri))
        assert not check.ok
        assert "target root 'default'" in check.message


def test_missing_fsspec_backend_names_the_package() -> None:
    # s3fs is installed for the S3 tests: hide it in a fresh process.
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from stardag_nb.environments import provision_target_root\n"
        "from stardag_nb.registry.wire import TargetRootIn\n"
        "check = provision_target_root("
        "TargetRootIn(name='default', uri='s3://some-bucket/prefix', create=True))\n"
        "print(check.ok, check.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False ")
    assert "s3fs" in out.stdout and "s3://some-bucket/prefix" in out.stdout


def test_fsspec_memory_root_is_created_and_probed() -> None:
    uri = f"memory://stardag-test-{uuid.uuid4().hex}/roots/main"
    fs = fsspec.filesystem("memory")
    assert not fs.exists(uri)
    check = provision_target_root(_root(uri))
    assert check.ok, check.message
    assert "created" in check.message
    assert fs.exists(uri)
    assert not [p for p in fs.ls(uri, detail=False) if ".stardag-probe-" in p]


class _BucketFS(MemoryFileSystem):
    """A memory file system under a bucket protocol: the first component is a bucket that
    exists only once ``mkdir``'d (as on S3)."""

    protocol = ("bucketfs-test",)
    root_marker = ""
    store: dict = {}
    pseudo_dirs = [""]
    buckets: set[str] = set()

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return path.split("://", 1)[-1].rstrip("/")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: object) -> None:
        if "/" not in path.strip("/"):
            self.buckets.add(path.strip("/"))
        super().mkdir(path, create_parents=create_parents, **kwargs)

    def exists(self, path: str, **kwargs: object) -> bool:
        path = self._strip_protocol(path)
        if "/" not in path:
            return path in self.buckets
        return super().exists(path, **kwargs)


@pytest.fixture
def bucket_protocol(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from stardag_nb.environments import _provision

    protocol = "bucketfs-test"
    fsspec.register_implementation(protocol, _BucketFS, clobber=True)
    monkeypatch.setattr(_provision, "_BUCKET_PROTOCOLS", frozenset({protocol}))
    yield protocol
    from fsspec.registry import _registry

    _registry.pop(protocol, None)


def test_bucket_is_created_with_mkdir_when_missing(bucket_protocol: str) -> None:
    uri = f"{bucket_protocol}://team-bucket/stardag"
    refused = provision_target_root(_root(uri, create=False))
    assert not refused.ok and "bucket 'team-bucket' does not exist" in refused.message
    check = provision_target_root(_root(uri))
    assert check.ok, check.message
    assert "bucket 'team-bucket' created" in check.message
    assert "team-bucket" in _BucketFS.buckets


def test_dangerous_roots_are_refused_and_untouched(tmp_path: Path, isolated_env: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    for dangerous in ("/", "~", str(isolated_env.parent), "/etc"):
        refused = provision_target_root(_root(dangerous))
        assert not refused.ok and "refused" in refused.message, dangerous
        assert refused.message.startswith("target root 'default'")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _no_probe_left(isolated_env) and _no_probe_left(tmp_path)
    assert not any(p.name.startswith(".stardag-probe-") for p in Path("/etc").iterdir())


def test_in_memory_roots() -> None:
    check = provision_target_root(_root("in-memory://roots/x"))
    assert check.ok, check.message
    assert "in-memory" in check.message

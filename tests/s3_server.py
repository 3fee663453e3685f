"""Pytest fixtures for a throwaway S3-compatible server (``rclone serve s3`` on loopback).

The server itself is :class:`tools.s3_server.S3Server` (also used by
``notebooks/dask_s3.ipynb``); its names are re-exported here. The fixtures are registered
for the whole suite by ``tests/conftest.py``::

    def test_x(s3_root):                      # a fresh, empty bucket per test
        s3_root.uri                           # "s3://<bucket>/stardag"
        s3_root.storage_options               # {"endpoint_url": ..., "key": ..., "secret": ...}
        s3_root.server.keys(s3_root.bucket)   # object keys stored in the bucket

    def test_y(s3_server):                    # the session's server
        bucket = s3_server.new_bucket()       # created, unique name
        s3_server.storage_options()           # for fsspec / s3fs / TargetFactory

The session's server is stopped by its PID at the end of the session. A missing ``rclone``
binary fails the test with the install command: it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools.s3_server import S3Root, S3Server, S3ServerMissing, rclone_binary

__all__ = ["S3Root", "S3Server", "S3ServerMissing", "rclone_binary", "s3_root", "s3_server"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server (fails, never skips, when ``rclone`` is missing)."""
    try:
        server = S3Server().start()
    except S3ServerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_root(s3_server: S3Server) -> S3Root:
    """A fresh bucket on the session's server and the root ``s3://<bucket>/stardag``."""
    return S3Root(s3_server, s3_server.new_bucket(), "stardag")

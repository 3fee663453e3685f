"""A throwaway PostgreSQL server for the test session (real server, loopback only).

Usage from a conftest or test::

    from tests.pg_server import postgres_server, require_postgres_server

    server = require_postgres_server()            # pytest.skip outside CI if binaries are missing
    url = server.new_database_url("svc")          # postgresql+asyncpg://postgres@127.0.0.1:P/svc_...

The cluster is created lazily (once per process) with Debian's binaries from
``/usr/lib/postgresql/<highest>/bin`` (``scripts/system_deps.sh`` installs them), in a fresh
temporary directory, listening on 127.0.0.1 on a free port with trust auth and its unix
socket inside that directory. The ``postmaster`` runs as a direct child process: it is
stopped by its PID (SIGINT = fast shutdown, then SIGKILL) by ``stop()``, at interpreter exit,
and, should a test session itself be SIGKILLed, by the next session (stale clusters whose
owning process is gone are killed by their recorded postmaster PID and removed).

PostgreSQL refuses to run as root: when the effective uid is 0 the directory is handed to
the ``postgres`` OS user and ``initdb``/``postgres`` run with that uid (``subprocess`` sets the
uid itself, rather than through ``runuser``, so the PID we hold is the postmaster's own).

Durability: ``fsync=off`` (and ``initdb --no-sync``) only make PostgreSQL skip flushing the
OS page cache to disk. Data of a committed transaction is already written to the kernel
(``synchronous_commit`` stays ``on``), so killing any *process* — the registry server in the
crash tests, or even PostgreSQL itself — loses nothing; only an OS crash or power loss
could, and then the throwaway cluster is gone anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

__all__ = [
    "PostgresMissingInCI",
    "PostgresServer",
    "PostgresUnavailable",
    "postgres_available",
    "postgres_bin_dir",
    "postgres_server",
    "require_postgres_server",
]

PG_ROOT = Path("/usr/lib/postgresql")
TMP_PREFIX = "stardag-nb-pg-"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SUPERUSER = "postgres"
# Read at import too: tests/conftest.py drops STARDAG_* variables before each test runs.
_PG_BIN_AT_IMPORT = os.environ.get("STARDAG_NB_PG_BIN")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL server binaries are not installed (outside CI: callers skip)."""


class PostgresMissingInCI(RuntimeError):
    """PostgreSQL server binaries are missing under ``CI=true`` (never skipped)."""


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``), where nothing may be skipped."""
    return os.environ.get("CI", "").lower() == "true"


def postgres_bin_dir() -> Path | None:
    """The ``bin`` dir of the highest installed PostgreSQL version, or None.

    ``STARDAG_NB_PG_BIN`` overrides the search (a dir holding ``postgres`` and ``initdb``).
    """
    override = os.environ.get("STARDAG_NB_PG_BIN") or _PG_BIN_AT_IMPORT
    candidates = [Path(override)] if override else []
    if not override and PG_ROOT.is_dir():

        def version(path: Path) -> tuple[int, ...]:
            return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

        candidates = sorted(PG_ROOT.glob("*/bin"), key=version, reverse=True)
    for bin_dir in candidates:
        if all(os.access(bin_dir / exe, os.X_OK) for exe in ("postgres", "initdb", "psql")):
            return bin_dir
    return None


def postgres_available() -> bool:
    """Whether a PostgreSQL server can be started here."""
    return postgres_bin_dir() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _kill_stale_clusters() -> None:
    """Stop clusters left by test sessions that died without cleaning up, by their PIDs."""
    for tmp in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            owner = int((tmp / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((tmp / "data" / "postmaster.pid").read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if "postgres" in cmdline and str(tmp) in cmdline:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


class PostgresServer:
    """One running throwaway PostgreSQL cluster; see the module docstring."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        self.data_dir = self.tmp / "data"
        self.socket_dir = self.tmp / "sock"
        self.log_path = self.tmp / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._counter = 0
        self._lock = threading.Lock()
        (self.tmp / "owner.pid").write_text(str(os.getpid()))
        self.socket_dir.mkdir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.tmp, SUPERUSER, SUPERUSER)
            shutil.chown(self.socket_dir, SUPERUSER, SUPERUSER)

    # -- process ---------------------------------------------------------------------

    def _run_kwargs(self) -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        kwargs: dict[str, object] = {"env": env, "cwd": str(self.tmp)}
        if self._as_postgres:
            env["HOME"] = str(self.tmp)
            kwargs.update(user=SUPERUSER, group=SUPERUSER, extra_groups=[])
        return kwargs

    def start(self) -> None:
        """initdb, then start ``postgres`` on a free loopback port and wait until ready."""
        initdb = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
            **self._run_kwargs(),  # type: ignore[arg-type]
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stderr}")
        last_error = ""
        for _attempt in range(3):  # a free port may be taken between probe and bind
            self.port = _free_port()
            if self._spawn():
                return
            last_error = self.log_path.read_text(errors="replace")
            if "could not bind" not in last_error and "in use" not in last_error:
                break
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start; its log:\n{last_error}")

    def _spawn(self) -> bool:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        if self._as_postgres:
            shutil.chown(self.log_path, SUPERUSER, SUPERUSER)
        cmd = [
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "fsync=off",  # safe for process kills, see module docstring
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C on the test run doesn't hit it; stop() does
            **self._run_kwargs(),  # type: ignore[arg-type]
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            probe = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-d", self.dsn, "-t", "2"],
                capture_output=True,
                env=self._run_kwargs()["env"],  # type: ignore[arg-type]
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.1)
        self.process.kill()  # running but never ready: don't leave it behind
        self.process.wait(STOP_TIMEOUT)
        return False

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL after a timeout; remove the directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.tmp, ignore_errors=True)
        global _SERVER
        with _SERVER_LOCK:
            if _SERVER is self:
                _SERVER = None

    # -- databases -------------------------------------------------------------------

    def dsn_for(self, database: str = "postgres") -> str:
        """A libpq/asyncpg DSN for ``database``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """DSN of the maintenance database ``postgres``."""
        return self.dsn_for("postgres")

    def sqlalchemy_url(self, database: str) -> str:
        """SQLAlchemy async URL (asyncpg driver) for ``database``."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with ``psql`` and return its unaligned output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn_for(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._run_kwargs()["env"],  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({sql!r}): {result.stderr.strip()}")
        return result.stdout

    def new_database(self, prefix: str = "test") -> str:
        """CREATE a fresh, uniquely named database and return its name."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        stem = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_")[:40] or "db"
        name = f"{stem}_{counter}_{uuid.uuid4().hex[:8]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def new_database_url(self, prefix: str = "test") -> str:
        """CREATE a fresh database; return ``postgresql+asyncpg://postgres@127.0.0.1:P/NAME``."""
        return self.sqlalchemy_url(self.new_database(prefix))


_SERVER: PostgresServer | None = None
_SERVER_LOCK = threading.RLock()


def postgres_server() -> PostgresServer:
    """The process-wide PostgreSQL server, started on first use.

    Raises PostgresUnavailable when the binaries are missing (callers skip), or
    PostgresMissingInCI under ``CI=true`` (a failure, never a skip).
    """
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None and _SERVER.running():
            return _SERVER
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            message = (
                f"PostgreSQL server binaries not found in {PG_ROOT}/*/bin "
                "(run scripts/system_deps.sh, or apt-get install postgresql)"
            )
            if in_ci():
                raise PostgresMissingInCI(message + "; they are required under CI=true")
            raise PostgresUnavailable(message)
        _kill_stale_clusters()
        server = PostgresServer(bin_dir)
        atexit.register(server.stop)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _SERVER = server
        return server


def require_postgres_server() -> PostgresServer:
    """``postgres_server()``, or ``pytest.skip`` when binaries are missing outside CI."""
    import pytest

    try:
        return postgres_server()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))

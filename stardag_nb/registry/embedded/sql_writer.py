"""Bulk writes of the embedded registry: statements over many rows, written in one
transaction, on this process's connection or by a writer process.

The writer process takes a large build's SQLite work to another core: the build's
process only pickles its rows (plain values, under 1 us a row) and waits for the write
without the GIL, where SQLite took a few microseconds a row, mostly holding the GIL.
This module uses only the standard library: the writer process runs it as a script
(``python -I -S sql_writer.py``), which starts in about 15 ms and imports little else.
It writes what its parent sends on stdin (pickles) and answers on stdout; at the end of
its stdin (its parent closed it, or died) it finishes the write in hand and exits, and it
exits too once its parent is gone (a child forked from the parent does not hold it).
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import sys
import time
import urllib.parse
import weakref
from itertools import chain, islice

TYPE_CHECKING = False  # (the writer process does not import typing: it starts faster)
if TYPE_CHECKING:
    import json
    import subprocess
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["Bulk", "Statement", "WriterProcess", "max_chunk_rows", "never", "write_statements"]

_JSON_CHUNK_ROWS = 1024  # rows per JSON statement (a build's last write waits for one)
_JSON_MAX_CHARS = 64 * 1024 * 1024  # a longer text (large task bodies) goes as parameters
# Rows per VALUES statement: a whole write of a 1,000-task build took 22.5 ms of CPU in
# statements of 256 rows, 18.8 ms in 64 (a layered build's, with long edge rows: 18.8 ->
# 12.5 ms); 16 or 32 rows cost more again.
_MAX_CHUNK_ROWS = 64
_WIDEST_ROW = 11  # values in the widest row of a bulk statement


def never() -> bool:
    return False


def _encode_rows(rows: list[tuple[Any, ...]]) -> str:
    """Rows as one compact JSON array (json imported here: the writer process, which
    writes no JSON, starts without it)."""
    global _ROWS_ENCODER
    if _ROWS_ENCODER is None:
        import json

        _ROWS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _ROWS_ENCODER.encode(rows)


_ROWS_ENCODER: json.JSONEncoder | None = None


class Bulk:
    """A statement that writes many rows at once: ``sql`` with ``{rows}`` where the rows
    go, ``columns`` values each: as ``VALUES`` lists of at most ``max_chunk`` rows (and
    then powers of two, so a few prepared statements serve every batch), or as one JSON
    array unpacked by ``json_each``.

    ``VALUES`` is the cheaper of the two for SQLite, but takes the GIL back after every
    statement (``executemany``: after every row), and a writer thread beside a build
    running Python waits up to a switch interval (5 ms) for it each time: 100,000 task
    rows took 3.3 s beside a busy thread against 0.9 s as JSON, which SQLite parses and
    writes without the GIL. So writes beside a running build go as JSON, and the last
    write of a build (nothing else runs) as ``VALUES``; so does the rest of the write in
    flight that a build's last write waits for (``as_json`` is asked before each chunk).
    The writer process, which runs no other Python, writes ``VALUES`` only."""

    def __init__(self, sql: str, columns: int) -> None:
        self.template, self.columns = sql, columns
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(columns))
        # (WHERE: an INSERT ... SELECT before ON CONFLICT must not end in a join)
        self.json_sql = sql.format(rows=f"SELECT {picks} FROM json_each(?) WHERE true")
        self.row = "(" + ",".join("?" * columns) + ")"
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            text = self._sql[rows] = self.template.format(
                rows="VALUES " + ",".join([self.row] * rows)
            )
        return text

    def run(
        self,
        conn: sqlite3.Connection,
        rows: Iterable[tuple[Any, ...]],
        max_chunk: int,
        as_json: Callable[[], bool] = never,
    ) -> None:
        """Write ``rows``, in ``VALUES`` lists of at most ``max_chunk`` rows, or as JSON
        while ``as_json()`` says so (a chunk that JSON would not carry exactly, with a
        NUL character, as ``VALUES``)."""
        source = iter(rows)
        while True:
            json_now = as_json()
            chunk = list(islice(source, _JSON_CHUNK_ROWS if json_now else max_chunk))
            if not chunk:
                break
            if json_now:
                try:
                    text = _encode_rows(chunk)
                except ValueError:  # a NaN or infinity
                    text = None
                # (SQLite's JSON functions end a text at a NUL character)
                if text is not None and len(text) <= _JSON_MAX_CHARS and "\\u0000" not in text:
                    conn.execute(self.json_sql, (text,))
                    continue
            start, total, size = 0, len(chunk), max_chunk
            while start < total:
                while size > total - start:
                    size //= 2
                params = list(chain.from_iterable(chunk[start : start + size]))
                conn.execute(self.sql(size), params)
                start += size


class Statement:
    """SQL (a :class:`Bulk` or one statement for ``executemany``) and its rows (made as
    they are written: a statement runs once)."""

    __slots__ = ("rows", "sql")

    def __init__(self, sql: Bulk | str, rows: Iterable[tuple[Any, ...]]) -> None:
        self.sql, self.rows = sql, rows

    def run(
        self, conn: sqlite3.Connection, max_chunk: int, as_json: Callable[[], bool] = never
    ) -> None:
        if isinstance(self.sql, Bulk):
            self.sql.run(conn, self.rows, max_chunk, as_json)
        else:
            conn.executemany(self.sql, self.rows)


def max_chunk_rows(conn: sqlite3.Connection) -> int:
    """Rows per bulk statement as parameters: a power of two within the connection's
    limit of parameters (for the widest row)."""
    chunk = _MAX_CHUNK_ROWS
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _WIDEST_ROW
    while chunk > max(1, limit):
        chunk //= 2
    return chunk


def write_statements(
    conn: sqlite3.Connection,
    statements: Iterable[Statement],
    max_chunk: int,
    as_json: Callable[[], bool] = never,
) -> None:
    """Run ``statements`` in one ``BEGIN IMMEDIATE`` transaction (rolled back on error,
    an interrupt too)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            statement.run(conn, max_chunk, as_json)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# -- the writer process ----------------------------------------------------------------

# Answers of the writer process: one kind byte, the length of a UTF-8 message (4 bytes,
# big-endian), the message. Only the parent's pickles cross the pipe (parent to child).
_OK, _BUSY, _FAILED = b"o", b"b", b"f"
# SQLite's result codes that a retry may get past (another connection holds the file)
_RETRYABLE = ("SQLITE_BUSY", "SQLITE_LOCKED")


class WriterProcessError(Exception):
    """The writer process failed, is gone or did not answer (the rows of the write in
    hand may or may not be written: a write it committed just before it died is not
    acknowledged); this process writes instead."""


_live_writers: weakref.WeakSet[WriterProcess] = weakref.WeakSet()


def _forget_writers_in_forked_child() -> None:
    """In a child forked from a process with a writer process: point the inherited pipe
    ends at /dev/null, so that the writer still sees the end of its input when its
    parent ends, and nothing the child does reaches it."""
    for writer in list(_live_writers):
        writer.detach()


class WriterProcess:
    """A child process that writes statements to one SQLite file (the parent's side).

    ``start`` returns once the child has opened the file, or raises
    :class:`WriterProcessError`. :meth:`write` sends statements and waits for their
    transaction (their rows are materialized and pickled here); ``SQLITE_BUSY`` and
    ``SQLITE_LOCKED`` come back as ``sqlite3.OperationalError`` (the caller retries
    later), any other failure as :class:`WriterProcessError`. Any exception while
    talking to it (an interrupt too) kills it: a pipe left mid-message is never used
    again. Not thread-safe: the caller holds its connection lock around every call.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.detached = False
        _live_writers.add(self)

    @classmethod
    def start(
        cls,
        path: str,
        file_id: tuple[int, int],
        timeout: float,
        pragmas: list[str],
        ready_within: float = 10.0,
    ) -> WriterProcess:
        """Start a writer of the existing file ``path`` (an absolute path; its device and
        inode ``file_id``, as this process opened it; connection ``timeout`` and
        ``pragmas`` as this process's), and wait until it has opened that very file."""
        import subprocess  # (here: the writer process does not need it)
        import threading

        name = os.path.basename(sys.executable or "").lower()
        if getattr(sys, "frozen", False) or not name.startswith(("python", "pypy")):
            # (a frozen application's, or an embedding server's, executable is no Python
            # to run this file with)
            raise WriterProcessError(f"no Python interpreter to run ({sys.executable!r})")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            raise WriterProcessError(f"cannot start a registry writer process: {exc}") from exc
        writer = cls(proc)
        # (a timer, not select(): portable, and any number of open files)
        timer = threading.Timer(ready_within, proc.kill)
        timer.daemon = True
        timer.start()
        try:
            writer._send(("open", path, file_id, os.getpid(), timeout, pragmas))
            writer._answer()
        except BaseException:
            writer.kill()
            raise
        finally:
            timer.cancel()
        return writer

    def write(self, statements: Iterable[Statement]) -> None:
        """Write ``statements`` in one transaction of the writer process."""
        try:
            wire = []
            for st in statements:
                sql = st.sql
                if isinstance(sql, Bulk):
                    wire.append((sql.template, sql.columns, list(st.rows)))
                else:
                    wire.append((sql, 0, list(st.rows)))
            self._send(("write", wire))
            self._answer()
        except sqlite3.OperationalError:  # busy: the writer is fine
            raise
        except BaseException:
            self.kill()
            raise

    def close(self, wait: float = 60.0) -> None:
        """End the writer once it has written what it was sent (killed after ``wait``)."""
        import subprocess

        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            _live_writers.discard(self)  # (after: a fork before lets go of the pipes)
            self.proc.wait(wait)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        import subprocess

        _live_writers.discard(self)
        try:
            self.proc.kill()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def detach(self) -> None:
        """In a forked child: let go of the writer without touching it (see
        :func:`_forget_writers_in_forked_child`)."""
        self.detached = True
        _live_writers.discard(self)
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None and not stream.closed:
                    os.dup2(null, stream.fileno(), inheritable=False)
        finally:
            os.close(null)
        self.proc.returncode = 0  # (never waited for here: it is not this process's child)

    def _send(self, message: object) -> None:
        stdin = self.proc.stdin
        if self.detached or stdin is None or stdin.closed:
            raise WriterProcessError("the registry writer process is closed")
        try:
            pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (OSError, ValueError) as exc:  # BrokenPipeError: it died
            raise WriterProcessError(f"the registry writer process is gone: {exc}") from exc

    def _answer(self) -> None:
        stdout = self.proc.stdout
        if stdout is None or stdout.closed:
            raise WriterProcessError("the registry writer process is closed")
        try:
            head = stdout.read(5)
            body = stdout.read(int.from_bytes(head[1:5], "big")) if len(head) == 5 else b""
        except (OSError, ValueError) as exc:
            head, body = b"", repr(exc).encode()
        kind, message = head[:1], body.decode("utf-8", "replace")
        if kind == _OK:
            return
        if kind == _BUSY:
            raise sqlite3.OperationalError(message)
        if kind == _FAILED:
            raise WriterProcessError(message)
        code = self.proc.poll()
        raise WriterProcessError(f"the registry writer process is gone (exit code {code})")


def _serve(stdin: Any, stdout: Any) -> None:
    """The writer process: open the file, then write each batch sent until stdin ends
    (or its parent is gone)."""

    def answer(kind: bytes, message: str = "") -> None:
        data = message.encode("utf-8", "replace")
        stdout.write(kind + len(data).to_bytes(4, "big") + data)
        stdout.flush()

    try:
        _, path, file_id, parent, timeout, pragmas = pickle.load(stdin)
    except (EOFError, pickle.UnpicklingError):
        return
    state = {"busy": False, "orphaned": False}
    if sys.platform != "win32":  # (there, python.exe may be a launcher: its child runs)
        _watch_parent(parent, state)
    try:
        # (mode=rw: never create a file; the parent's file, not one of the same name)
        conn = sqlite3.connect(
            "file:" + urllib.parse.quote(path) + "?mode=rw",
            uri=True,
            timeout=timeout,
            isolation_level=None,
        )
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) != tuple(file_id):
            raise sqlite3.OperationalError(f"{path} is not the file the registry opened")
        for pragma in pragmas:
            conn.execute(pragma)
        max_chunk = max_chunk_rows(conn)
    except (OSError, sqlite3.Error) as exc:
        answer(_FAILED, f"cannot open {path}: {type(exc).__name__}: {exc}")
        return
    answer(_OK)
    bulks: dict[tuple[str, int], Bulk] = {}
    try:
        while not state["orphaned"]:
            try:
                _, wire = pickle.load(stdin)
            except (EOFError, pickle.UnpicklingError):  # its parent closed it, or died
                return
            state["busy"] = True
            try:
                statements = []
                for sql, columns, rows in wire:
                    if columns:
                        bulk = bulks.get((sql, columns))
                        if bulk is None:
                            bulk = bulks[sql, columns] = Bulk(sql, columns)
                        statements.append(Statement(bulk, rows))
                    else:
                        statements.append(Statement(sql, rows))
                write_statements(conn, statements, max_chunk)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "SQLITE_BUSY").startswith(_RETRYABLE):
                    answer(_BUSY, str(exc))
                else:
                    answer(_FAILED, f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                answer(_FAILED, f"{type(exc).__name__}: {exc}")
            else:
                answer(_OK)
            finally:
                state["busy"] = False
    finally:
        conn.close()


def _watch_parent(parent: int, state: dict[str, bool]) -> None:
    """End this process once its parent is gone, even while a forked grandchild keeps
    its stdin open: at once when idle, else after the write in hand."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        state["orphaned"] = True
        while state["busy"]:
            time.sleep(0.1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    import signal

    # A kernel's interrupt reaches its whole process group: this process ends only at
    # the end of its stdin or once its parent is gone, after the write in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # its parent is gone
        os._exit(0)
elif hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_forget_writers_in_forked_child)

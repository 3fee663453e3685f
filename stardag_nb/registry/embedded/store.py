"""The embedded registry: builds, tasks, events and assets in one local SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID, uuid4

from ..._code_hash import code_hash
from ..._config_files import get_stardag_dir
from ...exceptions import StardagError
from .._base import RegistryABC, TaskMetadata, get_git_commit_hash
from .._records import (
    BuildNotFoundError,
    BuildRecord,
    BuildTaskRecord,
    DependencyRecord,
    EnvironmentRecord,
    EnvironmentUnavailableError,
    EventRecord,
    RegistryEventKind,
    TaskNotFoundError,
    WorkspaceRecord,
)
from . import schema
from .liveness import abandon_builds, find_abandoned, this_process
from .sql_writer import (
    Bulk,
    Statement,
    WriterProcess,
    WriterProcessError,
    max_chunk_rows,
    never,
    write_statements,
)

if TYPE_CHECKING:
    from ..._task import BaseTask
    from ...registry_asset import RegistryAsset
    from .._built_code import BuiltCodeRecord

__all__ = ["SQLiteRegistry", "default_registry_path"]

logger = logging.getLogger("stardag_nb.registry")

DEFAULT_FILE_NAME = "registry.sqlite3"


def default_registry_path() -> Path:
    """``<stardag dir>/registry.sqlite3`` (``~/.stardag`` or ``$STARDAG_HOME``)."""
    return get_stardag_dir() / DEFAULT_FILE_NAME


# The event kinds as plain str, as event rows hold them (see _Batch.events)
_E = SimpleNamespace(**{kind.name: kind.value for kind in RegistryEventKind})


# -- SQL -------------------------------------------------------------------------------


_UPSERT_TASKS = Bulk(
    "INSERT INTO tasks (environment_id, task_id, namespace, name, version, body, output_uri,"
    " created_at) {rows}"
    " ON CONFLICT (environment_id, task_id) DO UPDATE SET namespace = excluded.namespace,"
    " name = excluded.name, version = excluded.version, body = excluded.body,"
    " output_uri = coalesce(excluded.output_uri, tasks.output_uri)"
    # an unchanged row (a task built before) is not rewritten
    " WHERE tasks.body IS NOT excluded.body OR tasks.name IS NOT excluded.name"
    " OR tasks.namespace IS NOT excluded.namespace OR tasks.version IS NOT excluded.version"
    " OR tasks.output_uri IS NOT coalesce(excluded.output_uri, tasks.output_uri)",
    8,
)
# A build's task as a whole row: the builds this registry started, whose rows it keeps.
_UPSERT_BUILD_TASK_ROWS = Bulk(
    "INSERT INTO build_tasks (build_id, task_id, status, registered_at, started_at,"
    " completed_at, error_message, updated_at, code_hash) {rows}"
    " ON CONFLICT (build_id, task_id) DO UPDATE SET status = excluded.status,"
    " registered_at = excluded.registered_at, started_at = excluded.started_at,"
    " completed_at = excluded.completed_at, error_message = excluded.error_message,"
    " updated_at = excluded.updated_at, code_hash = excluded.code_hash",
    9,
)
# Changes of a build's task merged with its stored row, if any (builds started elsewhere:
# resumed): a NULL status keeps the status (a new row starts 'pending'); ss / fs say
# whether the start / finish columns were set (possibly to NULL) since the last write.
_MERGE_BUILD_TASKS = Bulk(
    "WITH j (b, t, s, r, st, f, e, ss, fs, u, h) AS ({rows})"
    " INSERT INTO build_tasks (build_id, task_id, status, registered_at, started_at,"
    " completed_at, error_message, updated_at, code_hash)"
    " SELECT j.b, j.t, coalesce(j.s, bt.status, 'pending'), coalesce(bt.registered_at, j.r),"
    " CASE WHEN j.ss THEN j.st ELSE bt.started_at END,"
    " CASE WHEN j.fs THEN j.f ELSE bt.completed_at END,"
    " CASE WHEN j.fs THEN j.e ELSE bt.error_message END,"
    " j.u, coalesce(j.h, bt.code_hash)"
    " FROM j LEFT JOIN build_tasks AS bt ON bt.build_id = j.b AND bt.task_id = j.t WHERE true"
    " ON CONFLICT (build_id, task_id) DO UPDATE SET status = excluded.status,"
    " registered_at = excluded.registered_at, started_at = excluded.started_at,"
    " completed_at = excluded.completed_at, error_message = excluded.error_message,"
    " updated_at = excluded.updated_at, code_hash = excluded.code_hash",
    11,
)
_INSERT_EDGES = Bulk(
    "INSERT INTO task_dependencies (environment_id, downstream_task_id, dynamic, digest,"
    " upstream_task_ids, created_at) {rows} ON CONFLICT DO NOTHING",
    6,
)
_INSERT_EVENTS = Bulk(
    "INSERT INTO events (build_id, task_id, kind, created_at, error_message, metadata) {rows}",
    6,
)
_INSERT_COMPLETIONS = Bulk(
    "INSERT INTO task_completions (environment_id, task_id, build_id, completed_at) {rows}"
    " ON CONFLICT DO NOTHING",
    4,
)
_INSERT_EVENT = (
    "INSERT INTO events (build_id, task_id, kind, created_at, error_message, metadata)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_ASSET = (
    "INSERT INTO assets (environment_id, task_id, build_id, type, name, body, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, task_id, type, name) DO UPDATE"
    " SET build_id = excluded.build_id, body = excluded.body, created_at = excluded.created_at"
)
_INSERT_BUILD = (
    "INSERT INTO builds (id, environment_id, name, description, commit_hash, root_task_ids,"
    " status, created_at, started_at, host, pid, process_started_at, heartbeat_at)"
    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)"
)
_FINISH_BUILD = "UPDATE builds SET status = ?, completed_at = ?, error_message = ? WHERE id = ?"
_HEARTBEAT = "UPDATE builds SET heartbeat_at = ? WHERE id = ? AND status = 'running'"

_BACKLOG_ROWS = 50_000  # pending rows past which a caller waits for the flusher
# Once the running builds have written this many rows, batches grow (at least this
# interval per such number of rows written, up to the longest interval, or this many
# rows): each write rewrites the index pages its rows touch, and the rows of a large
# build are spread over many pages (task ids are random), so a write costs about as
# much as the tables are large, whatever its rows: a 100k-task build wrote its rows at
# twice the cost per row of a 10k-task one with a write every second.
_LARGE_BUILD_ROWS = 20_000
_LARGE_BUILD_INTERVAL = 1.0
_LARGE_BUILD_MAX_INTERVAL = 5.0
_LARGE_BUILD_MAX_ROWS = 500_000
_CACHE_KIB = 64 * 1024  # the writer connection's page cache (filled only as needed)
# With a writer process, how old the oldest pending row of a build may get: its rows are
# written on another core while the build goes on, each write as soon as the last one
# ended (so the rows of a large build still gather while a write takes long), and its
# last write (which the build waits for) stays small.
_PROCESS_INTERVAL = 0.01

# Indices into a pending build-task entry (a list, updated in place).
_STATUS, _REGISTERED, _STARTED, _FINISHED, _ERROR, _STARTED_SET, _FINISHED_SET, _UPDATED = range(8)
_UUID, _CODE_HASH, _OWN = 8, 9, 10  # the task's id (text); its code hash; True: a full row

_ADJECTIVES = (
    "amber", "brisk", "calm", "dapper", "eager", "fuzzy", "gentle", "hasty", "icy", "jolly",
    "keen", "lucid", "mellow", "nimble", "olive", "plucky", "quiet", "rapid", "sunny", "tidy",
)  # fmt: skip
_NOUNS = (
    "badger", "comet", "delta", "ember", "falcon", "glacier", "heron", "island", "jackal",
    "kestrel", "lagoon", "meadow", "nebula", "otter", "pebble", "quartz", "raven", "spruce",
    "tundra", "walrus",
)  # fmt: skip


def _has_json(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has its JSON functions (built in since 3.38; an option before)."""
    try:
        return bool(conn.execute("SELECT json_extract('[1]', '$[0]')").fetchone()[0] == 1)
    except sqlite3.OperationalError:
        return False


def _build_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randrange(100):02d}"


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else _ts(value)


def _output_uri(task: BaseTask) -> str | None:
    output = getattr(task, "output", None)
    if output is None:
        return None
    try:
        uri = getattr(output(), "uri", None)
    except Exception:  # an output that cannot be built yet is not the registry's problem
        return None
    return uri if isinstance(uri, str) else None


# -- the batch writer ------------------------------------------------------------------


class _Batch:
    """Rows waiting to be written. Task rows, ids and bodies are converted when the batch
    is written (on the flusher thread during a build), not when the build calls the
    registry."""

    __slots__ = (
        "assets", "build_tasks", "build_updates", "completions", "edges", "events", "rows",
        "since", "task_times", "tasks",
    )  # fmt: skip

    def __init__(self) -> None:
        self.tasks: list[BaseTask] = []
        self.task_times: list[float] = []  # when each was registered
        # (build key, task UUID as int) -> [status, registered, started, finished, error,
        # started set, finished set, updated, task id (text), code hash, own]: the task's row
        # (own) or its changes since the last write, merged. Never changed once the
        # batch is being written. (A UUID's hash is computed in Python; its int's is not.)
        # Rows are tuples of plain values: the garbage collector stops tracking them.
        self.build_tasks: dict[tuple[str, int], tuple[Any, ...]] = {}
        # (downstream task, dynamic flag, upstream ids, time), ids as ints (UUIDs would
        # keep the garbage collector tracking the row): one row per call
        self.edges: list[tuple[int, int, tuple[int, ...], float]] = []
        # Event and completion rows as written (the task id the text of its build-task
        # row, the kind a plain str), one after another in a flat list: no object per
        # row, for the garbage collector to count and look at (a large build's pending
        # rows made its collections more frequent and each longer).
        self.events: list[Any] = []  # _EVENT_COLUMNS values a row
        self.assets: list[tuple[Any, ...]] = []
        self.completions: list[Any] = []  # _COMPLETION_COLUMNS values a row
        self.build_updates: list[tuple[str, float, str | None, str]] = []
        self.rows = 0
        self.since: float | None = None  # time.monotonic() of the oldest row

    def statements(self, env: int) -> list[Statement]:
        """The batch as statements, in the order they must run.

        Rows of the tables keyed by task id go in key order: ids are random, and rows in
        the order of the index write its pages once each, where random order rewrites
        them at every few rows (a 100k-task build's rows: 18 -> 10 us a task in SQLite,
        1k: 10 -> 8). Events keep their order (their ids are the log's order). Sorts
        are stable: of rows with one key, the first still wins. Task and edge rows are
        all made before they are written, to be sorted (~230 bytes a task for a small
        body)."""
        ids: dict[int, str] = {}  # task UUIDs as text, each converted once
        for (_, i), e in self.build_tasks.items():
            ids[i] = e[_UUID]

        def s(i: int) -> str:  # a task id (as int) as text
            r = ids.get(i)
            if r is None:
                r = ids[i] = str(UUID(int=i))
            return r

        def tasks() -> list[tuple[Any, ...]]:
            # made in the order of registration, then sorted: made in key order, they
            # cost more than the sort (objects visited in random order)
            seen: set[int] = set()
            rows = []
            for task, now in zip(self.tasks, self.task_times, strict=False):
                key = task.id.int
                if key not in seen:
                    seen.add(key)
                    rows.append(_task_row(env, s(key), task, now))
            rows.sort(key=_SECOND)
            return rows

        def edges() -> list[tuple[Any, ...]]:
            # (a layer's tasks share their upstream ids: each set encoded once a batch)
            encoded: dict[tuple[int, ...], tuple[str, str]] = {}
            rows = []
            for d, dyn, ups, now in self.edges:
                pair = encoded.get(ups)
                if pair is None:
                    pair = encoded[ups] = _encode_upstream([s(u) for u in ups])
                rows.append((env, s(d), dyn, *pair, now))
            rows.sort(key=_SECOND)
            return rows

        # keyed (build key, task id as int): a UUID's text sorts as its int does
        ordered = sorted(self.build_tasks.items(), key=_FIRST)
        own = [(b, e) for (b, _), e in ordered if e[_OWN]]
        others = [(b, e) for (b, _), e in ordered if not e[_OWN]]
        out = [
            Statement(_UPSERT_TASKS, tasks()) if self.tasks else None,
            Statement(
                _UPSERT_BUILD_TASK_ROWS,
                ((b, e[_UUID], *e[:_STARTED_SET], e[_UPDATED], e[_CODE_HASH]) for b, e in own),
            ) if own else None,
            Statement(
                _MERGE_BUILD_TASKS, ((b, e[_UUID], *e[:_UUID], e[_CODE_HASH]) for b, e in others)
            ) if others else None,
            Statement(_INSERT_EDGES, edges()) if self.edges else None,
            Statement(_INSERT_EVENTS, _rows_of(self.events, _EVENT_COLUMNS))
            if self.events else None,
            Statement(_UPSERT_ASSET, self.assets) if self.assets else None,
            Statement(
                _INSERT_COMPLETIONS,
                sorted(_rows_of(self.completions, _COMPLETION_COLUMNS), key=_SECOND),
            )
            if self.completions else None,
            Statement(_FINISH_BUILD, self.build_updates) if self.build_updates else None,
        ]  # fmt: skip
        return [st for st in out if st is not None]


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)  # a task, edge or completion row's task id
_EVENT_COLUMNS = 6
_COMPLETION_COLUMNS = 4


def _rows_of(flat: list[Any], columns: int) -> Iterable[tuple[Any, ...]]:
    """The rows of a flat list of ``columns`` values a row (a ValueError, as the rows are
    written, if its length is not a multiple: a bug where rows are appended)."""
    return zip(*[iter(flat)] * columns, strict=True)


def _encode_upstream(upstream: list[str]) -> tuple[str, str]:
    """An edge row's digest (its key) and upstream task ids as compact JSON, in the
    row's order."""
    ids = '["' + '","'.join(upstream) + '"]'
    return hashlib.sha1(ids.encode()).hexdigest(), ids


def _task_row(env: int, tid: str, task: BaseTask, now: float) -> tuple[Any, ...]:
    try:
        body = task._registry_body_json()
    except Exception as exc:  # recorded, not raised: the build must go on
        logger.warning("Cannot serialize %s for the registry: %s", tid, exc)
        body = json.dumps({"__error": f"{type(exc).__name__}: {exc}"})
    return (
        env, tid, task.get_namespace(), task.get_name(), task.version or None, body,
        _output_uri(task), now,
    )  # fmt: skip


class _Writer:
    """The connection and the pending batch, shared with the background flusher thread.

    During a build the caller only appends rows and wakes the flusher, which writes them
    (rows are turned into SQL parameters there, and SQLite runs without the GIL). The
    flusher also refreshes the heartbeat of the builds this registry runs. Explicit
    flushes (a read, a build's end, ``flush()``, ``close()``) write on the calling
    thread, after any write in flight.

    Kept apart from :class:`SQLiteRegistry` so that neither the flusher thread nor the
    exit hook keeps the registry alive. Locks: ``lock`` guards the batch (held only to
    append or swap it out), ``db_lock`` the connection; taken in the order db_lock, lock.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        env: int,
        max_rows: int,
        interval: float,
        heartbeat: float,
        process_rows: int | None,
    ) -> None:
        self.conn = conn
        self.path = path
        # The file for the writer process: it may start in another working directory,
        # and after the file was replaced (it must then fail, not write the new one).
        self.abs_path = os.path.abspath(path)
        stat = os.stat(path)
        self.file_id = (stat.st_dev, stat.st_ino)
        self.env = env
        self.max_rows = max_rows
        self.interval = interval
        self.heartbeat = heartbeat
        # A caller appending past this many pending rows waits (briefly) for the flusher.
        self.backlog_rows = max(_BACKLOG_ROWS, 2 * max(max_rows, _LARGE_BUILD_MAX_ROWS))
        self.json = _has_json(conn)  # rows written beside a build go as JSON (see Bulk)
        self.max_chunk = max_chunk_rows(conn)
        # The writer process (see _start_process): started once the running builds have
        # recorded this many rows (None: never); None until started, or after it failed.
        self.process_rows = process_rows
        self.process: WriterProcess | None = None
        self.process_wanted = False
        self.process_failed = False
        # Reentrant: a garbage collection on a thread inside these locks may close us.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)  # the flusher waits on it
        self.room = threading.Condition(self.lock)  # callers held back by the backlog
        self.db_lock = threading.RLock()
        self.pid = os.getpid()
        self.closed = False
        self.thread: threading.Thread | None = None
        self.batch = _Batch()
        self.failed: list[_Batch] = []  # written batches that hit a transient error
        self.retry_at: float | None = None
        self.urgent = False  # max_rows reached: the flusher writes without waiting
        self.waiting = 0  # callers waiting for db_lock to write (see _json_now)
        self.live: dict[str, None] = {}  # the builds this registry runs (ordered set)
        self.live_rows = 0  # rows written while some of them ran (see _LARGE_BUILD_ROWS)
        # Their tasks' rows as last changed, by task UUID as int: changes need no read.
        self.build_rows: dict[str, dict[int, tuple[Any, ...]]] = {}
        self.beat_at: float | None = None  # time.monotonic() of the next heartbeat
        self.backlog_warned = False

    # -- called by the registry --------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise StardagError(f"The registry {self.path} is closed.")

    def add(self, fill: Callable[[_Batch], int]) -> None:
        """Append rows under the lock (``fill`` adds them to the batch and returns how
        many), then :meth:`added`."""
        with self.lock:
            self.check_open()
            self.added(fill(self.batch))

    def added(self, n: int) -> None:
        """Count ``n`` rows just appended (self.lock held) and wake the flusher when they
        are due; never writes on this thread, but waits while the flusher is
        ``backlog_rows`` rows behind."""
        batch = self.batch
        batch.rows += n
        if batch.since is None:
            batch.since = time.monotonic()
            self._wake()
        elif batch.rows >= self.max_rows and not self.urgent and batch.rows >= self._max_rows_now():
            self.urgent = True
            self.cond.notify()
        if (  # (on every call: the cheapest test first)
            self.process is None
            and self.process_rows is not None
            and batch.rows + self.live_rows >= self.process_rows
            and self.live
            and not (self.process_wanted or self.process_failed)
        ):
            self.process_wanted = True
            self.cond.notify()
        if batch.rows > self.backlog_rows:
            self._wait_for_room()

    def _wake(self) -> None:
        """Start the flusher thread, or wake it (with self.lock held)."""
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._run, name="stardag-registry-flusher", daemon=True
            )
            self.thread.start()
        else:
            self.cond.notify()

    def _wait_for_room(self) -> None:
        """Wait (self.lock held) until the flusher took the batch; give up after the
        busy timeout (the file may be locked by another process), and keep the rows."""
        self.urgent = True
        self.cond.notify()
        deadline = time.monotonic() + schema.BUSY_TIMEOUT_SECONDS
        while self.batch.rows > self.backlog_rows and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0 or os.getpid() != self.pid:
                if not self.backlog_warned:
                    self.backlog_warned = True
                    logger.warning(
                        "The registry %s is writing slowly: %d rows are pending.",
                        self.path, self.batch.rows,
                    )  # fmt: skip
                return
            self.room.wait(min(left, 0.5))

    def bt_entry(self, build: str, task_id: UUID, now: float) -> list[Any]:
        """The pending row of ``(build, task)`` to change, as a list (self.lock held; store
        it back with :meth:`bt_put`): of the builds this registry started, the whole row
        (from the last write's on); of others, the changes since the last write."""
        entry = self.batch.build_tasks.get((build, task_id.int))
        if entry is not None:
            return list(entry)
        rows = self.build_rows.get(build)
        if rows is None:
            return [None, now, None, None, None, 0, 0, now, str(task_id), None, False]
        old = rows.get(task_id.int)
        if old is None:  # a new row: it starts pending
            return ["pending", now, None, None, None, 0, 0, now, str(task_id), None, True]
        return list(old)

    def bt_put(self, build: str, task_id: UUID, entry: list[Any]) -> None:
        """Store a row changed after :meth:`bt_entry` (self.lock held). Rows are kept as
        tuples: a batch being written never changes, and tuples of plain values are not
        tracked by the garbage collector (a large build keeps one row per task)."""
        row = tuple(entry)
        key = (build, task_id.int)
        pending = self.batch.build_tasks
        if key not in pending:
            self.batch.rows += 1
        pending[key] = row
        rows = self.build_rows.get(build)
        if rows is not None:
            rows[key[1]] = row

    def build_started(self, key: str) -> None:
        """Keep the heartbeat of build ``key`` until :meth:`build_finished`."""
        with self.lock:
            if not self.live:
                self.live_rows = 0
            self.live[key] = None
            self.build_rows[key] = {}
            if self.beat_at is None:
                self.beat_at = time.monotonic() + self.heartbeat
            self._wake()

    def build_finished(self, key: str) -> None:
        with self.lock:
            self.live.pop(key, None)
            self.build_rows.pop(key, None)
            if not self.live:
                self.beat_at = None

    # -- writing -----------------------------------------------------------------------

    def flush(self, raise_errors: bool = True, final: bool = False, beside: bool = False) -> None:
        """Write every pending row in one transaction (once closed, only the final
        write runs); ``beside``: while a build runs (rows go as JSON, see Bulk)."""
        if beside:
            with self.db_lock:
                self._flush_locked(raise_errors, final, beside)
            return
        with self.lock:  # a caller waits (see _json_now)
            self.waiting += 1
        try:
            with self.db_lock:
                self._flush_locked(raise_errors, final, beside)
        finally:
            with self.lock:
                self.waiting -= 1

    def _flush_locked(self, raise_errors: bool, final: bool, beside: bool) -> None:
        """:meth:`flush`, self.db_lock held."""
        with self.lock:
            if self.closed and not final:
                return
            batch, self.urgent = self.batch, False
            if batch.rows:
                self.batch = _Batch()
                if self.live:
                    self.live_rows += batch.rows
                self.room.notify_all()
        batches = [*self.failed, batch] if batch.rows else self.failed
        if not batches:
            return

        def statements() -> list[Statement]:  # (rows are made as they are written)
            return [st for b in batches for st in b.statements(self.env)]

        try:
            process = self.process if os.getpid() == self.pid else None
            if process is None:
                self._write(statements(), self._json_now if beside and self.json else never)
            else:
                try:
                    process.write(statements())
                except WriterProcessError as exc:  # written here instead
                    self._stop_process(f"failed: {exc}")
                    self._write(statements())
        except (KeyboardInterrupt, SystemExit):
            # Interrupted (a transaction here was rolled back; a writer process was
            # killed mid-message): the rows are kept and written by the next write, here
            # (those of a writer's write it committed just before, a second time).
            if self.process is not None and self.process.proc.returncode is not None:
                self._stop_process("was interrupted")
            self.failed = batches
            with self.lock:
                self.retry_at = time.monotonic()
                self.cond.notify()
            raise
        except sqlite3.OperationalError as exc:
            # Busy, or trouble with the disk: keep the rows; the flusher retries.
            self.failed = batches
            with self.lock:
                self.retry_at = time.monotonic() + self.interval
                self.cond.notify()
            message = f"Could not write to the registry {self.path} ({exc}); will retry."
            if raise_errors:
                raise StardagError(message) from exc
            logger.warning(message)
            return
        except sqlite3.Error as exc:
            self.failed = []
            rows = sum(b.rows for b in batches)
            message = f"Dropped {rows} registry rows that {self.path} refused: {exc}"
            if raise_errors:
                raise StardagError(message) from exc
            logger.error(message)
            return
        self.failed = []
        self.retry_at = None

    def _json_now(self) -> bool:
        """Whether the next rows of a write beside a build go as JSON: not once a
        caller waits for the write and no build runs any more (a build's last write:
        nothing else runs then). A read during a build waits for the JSON."""
        return not (self.waiting and not self.live)

    def _write(self, statements: list[Statement], as_json: Callable[[], bool] = never) -> None:
        write_statements(self.conn, statements, self.max_chunk, as_json)

    def _start_process(self) -> None:
        """Start the writer process (on the flusher thread), which writes every later
        batch on another core (see :mod:`.sql_writer`): a build's rows then cost its
        process little more than pickling them. Rows gather meanwhile (about 20 ms).
        Should it fail to start, this process keeps writing."""
        try:
            process = WriterProcess.start(
                self.abs_path,
                self.file_id,
                schema.BUSY_TIMEOUT_SECONDS,
                [*schema.CONNECTION_PRAGMAS, f"PRAGMA cache_size = -{_CACHE_KIB}"],
            )
        except Exception as exc:
            logger.info("Writing the registry %s in this process: %s", self.path, exc)
            with self.lock:
                self.process_wanted, self.process_failed = False, True
            return
        with self.db_lock:
            if self.closed or self.process is not None:
                process.close()
            else:
                self.process = process
        with self.lock:
            self.process_wanted = False

    def _stop_process(self, why: str | None = None) -> None:
        """End the writer process (self.db_lock held); ``why``: it failed (this process
        writes from now on)."""
        process, self.process = self.process, None
        if process is None:
            return
        if why is None:
            process.close()
        else:
            logger.warning("The registry writer process of %s %s", self.path, why)
            process.kill()
            self.process_failed = True

    def _beat(self) -> None:
        """Refresh the heartbeat of the live builds (on the flusher thread)."""
        with self.lock:
            keys = list(self.live)
            self.beat_at = time.monotonic() + self.heartbeat if keys else None
        if not keys:
            return
        now = time.time()
        with self.db_lock:
            if self.closed:
                return
            try:
                self._write([Statement(_HEARTBEAT, [(now, key) for key in keys])])
            except sqlite3.Error as exc:  # the next beat tries again
                logger.warning("Could not refresh the builds' heartbeat in %s: %s", self.path, exc)

    def _for_process(self) -> bool:
        """Whether the running builds are large enough for the writer process."""
        rows = self.process_rows
        return rows is not None and self.live_rows + self.batch.rows >= rows

    def _large(self) -> bool:
        return bool(self.live) and self.live_rows >= _LARGE_BUILD_ROWS

    def _interval_now(self) -> float:
        """How old the oldest pending row may get (longer during a large build)."""
        if self.process is not None and self.live and self._for_process():
            return min(self.interval, _PROCESS_INTERVAL)
        if not self._large():
            return self.interval
        grown = _LARGE_BUILD_INTERVAL * self.live_rows / _LARGE_BUILD_ROWS
        return max(self.interval, min(grown, _LARGE_BUILD_MAX_INTERVAL))

    def _max_rows_now(self) -> int:
        """Pending rows that make a write due at once (more during a large build)."""
        return max(self.max_rows, _LARGE_BUILD_MAX_ROWS) if self._large() else self.max_rows

    def _due(self) -> float | None:
        """Seconds until the next write is due (<= 0: now; None: nothing pending)."""
        if self.urgent or (self.process_wanted and self.process is None):
            return 0.0
        now = time.monotonic()
        waits = []
        if self.batch.since is not None:
            waits.append(self.batch.since + self._interval_now() - now)
        if self.retry_at is not None:
            waits.append(self.retry_at - now)
        if self.beat_at is not None:
            waits.append(self.beat_at - now)
        return min(waits) if waits else None

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed:
                    delay = self._due()
                    if delay is not None and delay <= 0:
                        break
                    self.cond.wait(delay)
                closed = self.closed
                beat = self.beat_at is not None and self.beat_at <= time.monotonic()
                start = self.process_wanted and self.process is None and not closed
            if closed:
                self._finish()
                return
            try:
                if start and os.getpid() == self.pid:
                    self._start_process()
                self.flush(raise_errors=False, beside=bool(self.live))
                if beat:
                    self._beat()
            except Exception:  # never let the flusher die
                logger.exception("The registry flusher failed")

    def _finish(self) -> None:
        if os.getpid() != self.pid:
            # A forked child must neither replay its parent's rows nor close the
            # parent's connection (SQLite may then checkpoint and remove the WAL).
            return
        try:
            self.flush(raise_errors=False, final=True)
        finally:
            with self.db_lock:
                self._stop_process()
                self.conn.close()

    def close(self) -> None:
        """Flush and close (idempotent; used by ``close()``, garbage collection and exit)."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
            self.room.notify_all()
            thread = self.thread
        if thread is None or os.getpid() != self.pid:
            self._finish()  # no flusher thread (nothing was ever written), or forked
        elif thread is not threading.current_thread():
            thread.join(timeout=schema.BUSY_TIMEOUT_SECONDS + 5)
        # else: closed from the flusher thread itself (by a garbage collection); its
        # loop sees `closed` and finishes.


# -- the registry ----------------------------------------------------------------------


class SQLiteRegistry(RegistryABC):
    """The embedded registry: one local SQLite file, shared by every process that opens it.

    Args:
        path: The database file (created with its parent directory if needed). Default:
            ``<stardag dir>/registry.sqlite3``, the stardag dir being ``~/.stardag`` or
            ``$STARDAG_HOME``.
        workspace: The workspace builds and tasks are recorded in (created if needed).
        environment: The environment within the workspace (created if needed).
        flush_max_rows: Write the pending rows once this many have accumulated.
        flush_interval_seconds: ... or once the oldest pending row is this old.
        heartbeat_seconds: How often the builds this registry runs say they are alive.
        abandoned_after_seconds: A running build whose heartbeat is older than this is
            abandoned (its process died or hangs); must exceed twice the heartbeat
            interval of every process writing builds to the file.
        writer_process_rows: Once the running builds have recorded this many rows (a
            large build: a task makes about 7), start a writer process, which writes
            this registry's batches from then on (on another core: see below); None:
            write in this process only.

    Writes are buffered: each call appends rows to an in-memory batch, and a background
    thread writes the batch in one ``BEGIN IMMEDIATE`` transaction (a few multi-row
    statements per table) once ``flush_max_rows`` rows are pending or the oldest is
    ``flush_interval_seconds`` old; while it writes, new rows gather for the next batch.
    Once the running builds have written 20,000 rows, batches grow to at least 1 s per
    20,000 rows written (up to 5 s) and up to 500,000 rows: a large build's rows touch
    many index pages, and every write rewrites the pages it touches. During a build the
    calling thread runs no SQL (it waits only if the flusher falls more than 1,000,000
    rows, or twice ``flush_max_rows``, behind). Pending rows are written
    on the calling thread when a build ends, before every read, on :meth:`flush` and
    :meth:`close`; also when the registry is garbage-collected and at interpreter exit.
    Task bodies and output URIs are computed when written, so a call costs a few
    microseconds. Once the running builds have recorded ``writer_process_rows`` rows, a
    writer process (a plain Python running only :mod:`sqlite3`, started in about 20 ms)
    writes the batches instead, each as soon as the last one is written: SQLite's work
    then runs on another core, and the build's process only pickles its rows (a
    10,000-task chain: its registry cost 0.97 s in a 2.3 s build, 0.61 s with the writer
    process). Smaller builds gain nothing from it: their process spends about as much
    on pickling and on more frequent, smaller batches as SQLite would take (once it runs,
    their batches go through it as often as without it). The writer process ends with
    the registry, or when its parent dies; should it fail, this process writes from then
    on (a batch it committed just before dying is then written twice: its events appear
    twice). A hard kill (SIGKILL,
    power loss) loses at most the last ~0.2 s of events (in a large build up to ~5 s,
    plus the time a write of its rows takes) and
    never corrupts the file:
    the database is in WAL mode and each batch is one atomic transaction. Another
    process (or another ``SQLiteRegistry`` on the same file) sees rows once they are
    written.

    ``build_start`` writes at once, with the host, pid and start time of this process;
    the flusher thread refreshes the heartbeat of the builds this registry runs. Listing
    or getting builds, and starting one, first marks the file's abandoned builds
    ``abandoned`` (their process on this host is gone, or their heartbeat is older than
    ``abandoned_after_seconds``) and their unfinished tasks ``cancelled``.

    Task calls must name a build of this file and environment (else
    :class:`BuildNotFoundError`). Thread-safe: calls may come from the event loop and
    from worker threads.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        workspace: str = "default",
        environment: str = "local",
        *,
        flush_max_rows: int = 20_000,
        flush_interval_seconds: float = 0.2,
        heartbeat_seconds: float = 10.0,
        abandoned_after_seconds: float = 60.0,
        writer_process_rows: int | None = _LARGE_BUILD_ROWS,
    ) -> None:
        if not 0 < 2 * heartbeat_seconds < abandoned_after_seconds:
            raise ValueError(
                f"abandoned_after_seconds ({abandoned_after_seconds}) must exceed twice "
                f"heartbeat_seconds ({heartbeat_seconds}), which must be positive: else "
                "live builds would look abandoned."
            )
        self.path = Path(path).expanduser() if path is not None else default_registry_path()
        self.workspace = workspace
        self.environment = environment
        self.abandoned_after_seconds = float(abandoned_after_seconds)
        conn = schema.connect(self.path)
        try:
            self._env_id = schema.ensure_environment(conn, workspace, environment)
            # Large builds touch pages all over the task-id indexes: keep them cached.
            conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        except BaseException:
            conn.close()
            raise
        self._w = _Writer(
            conn, self.path, self._env_id, max(1, flush_max_rows), flush_interval_seconds,
            float(heartbeat_seconds), writer_process_rows,
        )  # fmt: skip
        self._finalizer = weakref.finalize(self, self._w.close)
        self._known_builds: dict[UUID, str] = {}
        self._last_build: tuple[UUID | None, str] = (None, "")

    def __repr__(self) -> str:
        return (
            f"SQLiteRegistry({str(self.path)!r}, workspace={self.workspace!r}, "
            f"environment={self.environment!r})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write the pending rows now.

        Raises:
            StardagError: the file could not be written (the rows are kept, and retried,
                when the failure may be transient, such as a file locked for 30 s).
        """
        self._check_open()
        self._w.flush()

    def close(self) -> None:
        """Write the pending rows and close the file. Later calls raise
        :class:`StardagError`."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._w.closed

    def _check_open(self) -> None:
        if self._w.closed:
            raise StardagError(f"The registry {self.path} is closed.")

    def _build_key(self, build_id: UUID) -> str:
        last = self._last_build
        if last[0] is build_id:  # the engine passes the same UUID object on every call
            return last[1]
        key = self._known_builds.get(build_id)
        if key is not None:
            self._last_build = (build_id, key)
            return key
        key = str(build_id)
        rows = self._read("SELECT 1 FROM builds WHERE id = ? AND environment_id = ?",
                          (key, self._env_id), flush=False)  # fmt: skip
        if not rows:
            raise BuildNotFoundError(
                f"Build {build_id} is not in the registry {self.path} (workspace "
                f"{self.workspace!r}, environment {self.environment!r}): start builds with "
                "this registry's build_start()."
            )
        self._known_builds[build_id] = key
        self._last_build = (build_id, key)
        return key

    # -- builds ------------------------------------------------------------------------

    def _abandon_dead_builds(self) -> None:
        """Mark the file's abandoned builds (see the class docstring) and their unfinished
        tasks; a failure to write is logged, not raised (the read goes on)."""
        w = self._w
        with w.db_lock:
            self._check_open()
            conn = w.conn
            now = time.time()
            with w.lock:
                live = set(w.live)
            found = find_abandoned(conn, now, self.abandoned_after_seconds, live)
            if not found:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    marked = abandon_builds(conn, found, now)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                logger.warning("Could not mark abandoned builds in %s: %s", self.path, exc)
                return
        for build in found:
            if build.build_id in marked:
                logger.info("Build %s is abandoned: %s", build.build_id, build.reason)

    def _check_environment_takes_builds(self) -> None:
        """Raise :class:`EnvironmentUnavailableError` unless the environment is running."""
        rows = self._read(
            "SELECT state, state_reason, deleted_at FROM environments WHERE id = ?",
            (self._env_id,),
            flush=False,
        )
        state, reason, deleted_at = rows[0] if rows else ("deleted", None, None)
        label = f"'{self.workspace}/{self.environment}'"
        if deleted_at is not None or state == "deleted":
            when = f" at {_ts(deleted_at).isoformat(timespec='seconds')}" if deleted_at else ""
            raise EnvironmentUnavailableError(
                f"Environment {label} of the registry {self.path} was deleted{when}; its "
                f"builds and tasks are gone. To record builds under that name again, open a "
                f"new registry: use_environment({self.environment!r}) creates it afresh."
            )
        if state != "running":
            because = f": {reason}" if reason else ""
            raise EnvironmentUnavailableError(
                f"Environment {label} of the registry {self.path} is {state}{because}. "
                f"Run: stardag-nb environment provision {self.environment} "
                f"-w {self.workspace}"
            )

    def environment_target_roots(self) -> dict[str, str]:
        """The target roots configured for this environment (``stardag-nb environment
        target-roots``); empty when it has none, and the configured roots apply."""
        rows = self._read(
            "SELECT name, uri FROM environment_target_roots WHERE environment_id = ? "
            "ORDER BY position, name",
            (self._env_id,),
            flush=False,
        )
        return {name: uri for name, uri in rows}

    def environment_storage_options(self) -> dict[str, dict[str, Any]]:
        """The fsspec storage options of this environment's target roots, by root name."""
        rows = self._read(
            "SELECT name, storage_options FROM environment_target_roots WHERE environment_id = ?"
            " AND storage_options IS NOT NULL",
            (self._env_id,),
            flush=False,
        )
        return {name: json.loads(options) for name, options in rows}

    def apply_target_roots(self) -> bool:
        """Make this process write under the environment's target roots, when it has any
        (done at every build start). True if the roots in use changed."""
        from .._target_roots import apply_target_roots

        roots = self.environment_target_roots()
        if not roots:
            return False
        ids = self._read(
            "SELECT w.uuid, e.uuid FROM environments e JOIN workspaces w ON w.id = e.workspace_id "
            "WHERE e.id = ?",
            (self._env_id,),
            flush=False,
        )
        keys = set()
        if ids and ids[0][0] and ids[0][1]:
            url = "sqlite:///" + str(Path(self.path).expanduser().resolve())
            keys.add((url, str(ids[0][0]), str(ids[0][1])))
        label = f"'{self.workspace}/{self.environment}' of {self.path}"
        return apply_target_roots(label, roots, keys, self.environment_storage_options())

    def build_start(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        """Start a build (recorded at once).

        Raises:
            EnvironmentUnavailableError: the environment was deleted, or is not running.
        """
        self._check_open()
        self._check_environment_takes_builds()
        self.apply_target_roots()
        self._abandon_dead_builds()
        try:
            commit_hash: str | None = get_git_commit_hash()
        except Exception:
            commit_hash = None
        build_id = uuid4()
        key = str(build_id)
        now = time.time()
        roots = json.dumps([str(t.id) for t in root_tasks or ()])
        me = this_process()
        build_row = (key, self._env_id, _build_name(), description, commit_hash, roots, now,
                     now, me.host, me.pid, me.started_at, now)  # fmt: skip
        event_row = (key, None, _E.BUILD_STARTED, now, None, None)
        w = self._w
        with w.db_lock:
            self._check_open()
            try:
                w._write([
                    Statement(_INSERT_BUILD, [build_row]),
                    Statement(_INSERT_EVENT, [event_row]),
                ])  # fmt: skip
            except sqlite3.Error as exc:
                message = f"Cannot start a build in the registry {self.path}: {exc}"
                raise StardagError(message) from exc
        self._known_builds[build_id] = key
        w.build_started(key)
        return build_id

    def _finish_build(
        self, build_id: UUID, status: str, kind: RegistryEventKind, error: str | None
    ) -> None:
        key = self._build_key(build_id)
        now = time.time()
        w = self._w
        with w.lock:
            w.check_open()
            w.batch.build_updates.append((status, now, error, key))
            w.batch.events += (key, None, kind.value, now, error, None)
            w.batch.rows += 2  # written below, on this thread
        w.build_finished(key)
        w.flush(raise_errors=False)  # a locked file must not fail the build

    def build_complete(self, build_id: UUID) -> None:
        self._finish_build(build_id, "completed", RegistryEventKind.BUILD_COMPLETED, None)

    def build_fail(self, build_id: UUID, error_message: str | None = None) -> None:
        self._finish_build(build_id, "failed", RegistryEventKind.BUILD_FAILED, error_message)

    def build_cancel(self, build_id: UUID) -> None:
        self._finish_build(build_id, "cancelled", RegistryEventKind.BUILD_CANCELLED, None)

    def build_exit_early(self, build_id: UUID, reason: str | None = None) -> None:
        self._finish_build(build_id, "exit_early", RegistryEventKind.BUILD_EXIT_EARLY, reason)

    # A build's start and end write to the file (its start also asks git): in a worker
    # thread, so a build on an event loop (a notebook's kernel) does not wait on disk.

    async def build_start_aio(
        self, root_tasks: list[BaseTask] | None = None, description: str | None = None
    ) -> UUID:
        return await asyncio.to_thread(self.build_start, root_tasks, description)

    async def build_complete_aio(self, build_id: UUID) -> None:
        await asyncio.to_thread(self.build_complete, build_id)

    async def build_fail_aio(self, build_id: UUID, error_message: str | None = None) -> None:
        await asyncio.to_thread(self.build_fail, build_id, error_message)

    async def build_cancel_aio(self, build_id: UUID) -> None:
        await asyncio.to_thread(self.build_cancel, build_id)

    async def build_exit_early_aio(self, build_id: UUID, reason: str | None = None) -> None:
        await asyncio.to_thread(self.build_exit_early, build_id, reason)

    # -- tasks -------------------------------------------------------------------------

    def task_register(self, build_id: UUID, task: BaseTask) -> None:
        key = self._build_key(build_id)
        tid = task.id
        now = time.time()
        w = self._w
        with w.lock:
            w.check_open()
            batch = w.batch
            batch.tasks.append(task)
            batch.task_times.append(now)
            entry = w.bt_entry(key, tid, now)
            w.bt_put(key, tid, entry)
            batch.events += (key, entry[_UUID], _E.TASK_REGISTERED, now, None, None)
            w.added(2)

    def task_add_dependencies(
        self,
        build_id: UUID,
        task: BaseTask,
        dependency_ids: Sequence[UUID],
        dynamic: bool = False,
    ) -> None:
        self._build_key(build_id)
        if not dependency_ids:
            return
        upstream = tuple(  # (ids as text too)
            dep.int if isinstance(dep, UUID) else UUID(str(dep)).int for dep in dependency_ids
        )
        row = (task.id.int, int(bool(dynamic)), upstream, time.time())

        def fill(batch: _Batch) -> int:
            batch.edges.append(row)
            return 1

        self._w.add(fill)

    def _task_event(
        self,
        build_id: UUID,
        task: BaseTask,
        kind: str,
        status: str | None,
        phase: int = 0,
        error: str | None = None,
        metadata: str | None = None,
    ) -> None:
        """Record a task event; ``phase`` 1 (re)starts the task, clearing the previous
        attempt's outcome; 2 finishes it (with ``error``)."""
        key = self._build_key(build_id)
        tid = task.id
        now = time.time()
        hashed = code_hash(type(task)) if status == "completed" else None
        w = self._w
        with w.lock:
            w.check_open()
            entry = w.bt_entry(key, tid, now)
            if status is not None:
                entry[_STATUS] = status
                entry[_UPDATED] = now
            if phase == 1:
                entry[_STARTED] = now
                entry[_STARTED_SET] = 1
                entry[_FINISHED] = entry[_ERROR] = None
                entry[_FINISHED_SET] = 1
            elif phase == 2:
                entry[_FINISHED] = now
                entry[_ERROR] = error
                entry[_FINISHED_SET] = 1
            batch = w.batch
            batch.events += (key, entry[_UUID], kind, now, error, metadata)
            if hashed is not None:
                entry[_CODE_HASH] = hashed
            w.bt_put(key, tid, entry)
            if status == "completed" or status == "already_complete":
                batch.completions += (w.env, entry[_UUID], key, now)
                w.added(2)
            else:
                w.added(1)

    def task_already_complete(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_ALREADY_COMPLETE, "already_complete")

    def task_start(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_STARTED, "running", 1)

    def task_suspend(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_SUSPENDED, "suspended")

    def task_resume(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_RESUMED, "running")

    def task_complete(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_COMPLETED, "completed", 2)

    def task_fail(self, build_id: UUID, task: BaseTask, error_message: str | None = None) -> None:
        self._task_event(build_id, task, _E.TASK_FAILED, "failed", 2, error_message)

    def task_cancel(self, build_id: UUID, task: BaseTask) -> None:
        self._task_event(build_id, task, _E.TASK_CANCELLED, "cancelled", 2)

    def task_waiting_for_lock(
        self, build_id: UUID, task: BaseTask, lock_owner: str | None = None
    ) -> None:
        metadata = json.dumps({"lock_owner": lock_owner}) if lock_owner is not None else None
        self._task_event(build_id, task, _E.TASK_WAITING_FOR_LOCK, None, 0, None, metadata)

    def task_upload_assets(
        self, build_id: UUID, task: BaseTask, assets: list[RegistryAsset]
    ) -> None:
        key = self._build_key(build_id)
        if not assets:
            return
        tid = str(task.id)
        now = time.time()
        rows = []
        for asset in assets:
            data = asset.model_dump(mode="json")
            kind, name = data.pop("type"), data.pop("name")
            rows.append((self._env_id, tid, key, kind, name, json.dumps(data), now))

        def fill(batch: _Batch) -> int:
            batch.assets.extend(rows)
            return len(rows)

        self._w.add(fill)

    # -- reads -------------------------------------------------------------------------

    def built_code_hashes(self, task_ids: Sequence[str]) -> dict[str, BuiltCodeRecord]:
        """One query per 500 ids; the newest recorded code hash of each completed task."""
        from .._built_code import BuiltCodeRecord

        out: dict[str, BuiltCodeRecord] = {}
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            rows = self._read(
                "SELECT bt.task_id, bt.code_hash, bt.completed_at, bt.build_id FROM build_tasks bt"
                " JOIN builds b ON b.id = bt.build_id"
                f" WHERE bt.task_id IN ({','.join('?' * len(chunk))})"
                " AND b.environment_id = ? AND bt.status = 'completed'"
                " ORDER BY bt.updated_at",
                (*chunk, self._env_id),
            )
            for task_id, hashed, completed_at, build_id in rows:  # oldest first: newest wins
                previous = out.get(task_id)
                if hashed is None and previous is not None:
                    hashed = previous.code_hash  # keep the newest recorded hash
                out[task_id] = BuiltCodeRecord(hashed, completed_at, build_id)
        return out

    def _read(self, sql: str, params: Sequence[Any] = (), flush: bool = True) -> list[Any]:
        """Write the pending rows, then run a read query."""
        w = self._w
        with w.db_lock:
            self._check_open()
            if flush:
                w.flush()
            return w.conn.execute(sql, params).fetchall()

    def task_get_metadata(self, task_id: UUID | str) -> TaskMetadata:
        """What the registry knows about a task, with its global status: ``completed`` if
        any build of this environment completed it (or a global lock recorded its
        completion), else its status in the build that touched it last.

        Raises:
            TaskNotFoundError: no build in this environment registered the task.
        """
        tid = str(task_id)
        env = self._env_id
        w = self._w
        with w.db_lock:
            self._check_open()
            w.flush()
            conn = w.conn
            task = conn.execute(
                "SELECT namespace, name, version, body, output_uri, created_at FROM tasks"
                " WHERE environment_id = ? AND task_id = ?",
                (env, tid),
            ).fetchone()
            if task is None:
                raise TaskNotFoundError(
                    f"Task {tid} is not in the registry {self.path} (workspace "
                    f"{self.workspace!r}, environment {self.environment!r})."
                )
            completion = conn.execute(
                "SELECT c.completed_at, bt.started_at FROM task_completions c"
                " LEFT JOIN build_tasks bt ON bt.build_id = c.build_id AND bt.task_id = c.task_id"
                " WHERE c.environment_id = ? AND c.task_id = ?",
                (env, tid),
            ).fetchone()
            latest = conn.execute(
                "SELECT bt.status, bt.started_at, bt.completed_at, bt.error_message"
                " FROM build_tasks bt JOIN builds b ON b.id = bt.build_id"
                " WHERE bt.task_id = ? AND b.environment_id = ?"
                " ORDER BY bt.updated_at DESC LIMIT 1",
                (tid, env),
            ).fetchone()
        namespace, name, version, body, output_uri, created_at = task
        if completion is not None:
            status, error = "completed", None
            completed_at, started_at = completion
        elif latest is not None:
            status, started_at, completed_at, error = latest
        else:
            status, started_at, completed_at, error = "pending", None, None, None
        return TaskMetadata(
            id=UUID(tid),
            body=json.loads(body),
            name=name,
            namespace=namespace,
            version=version,
            output_uri=output_uri,
            status=status,
            registered_at=_dt(created_at),
            started_at=_dt(started_at),
            completed_at=_dt(completed_at),
            error_message=error,
        )

    def list_workspaces(self) -> list[WorkspaceRecord]:
        """Every workspace in the file, by name."""
        rows = self._read("SELECT name, created_at FROM workspaces ORDER BY name")
        return [WorkspaceRecord(name, _ts(created)) for name, created in rows]

    def list_environments(self, workspace: str | None = None) -> list[EnvironmentRecord]:
        """The (not deleted) environments of ``workspace`` (default: this registry's), by name."""
        rows = self._read(
            "SELECT w.name, e.name, e.created_at FROM environments e"
            " JOIN workspaces w ON w.id = e.workspace_id WHERE w.name = ?"
            " AND e.deleted_at IS NULL ORDER BY e.name",
            (workspace if workspace is not None else self.workspace,),
        )
        return [EnvironmentRecord(ws, name, _ts(created)) for ws, name, created in rows]

    _BUILD_COLUMNS = (
        "id, name, status, description, commit_hash, root_task_ids, created_at, started_at,"
        " completed_at, error_message, host, pid, heartbeat_at"
    )

    def _build_record(self, row: Sequence[Any]) -> BuildRecord:
        return BuildRecord(
            id=UUID(row[0]),
            name=row[1],
            workspace=self.workspace,
            environment=self.environment,
            status=row[2],
            description=row[3],
            commit_hash=row[4],
            root_task_ids=tuple(UUID(r) for r in json.loads(row[5])),
            created_at=_ts(row[6]),
            started_at=_dt(row[7]),
            completed_at=_dt(row[8]),
            error_message=row[9],
            host=row[10],
            pid=row[11],
            heartbeat_at=_dt(row[12]),
        )

    def list_builds(self, limit: int = 50) -> list[BuildRecord]:
        """The latest ``limit`` builds of this environment, newest first (abandoned builds
        are marked so first)."""
        self._abandon_dead_builds()
        rows = self._read(
            f"SELECT {self._BUILD_COLUMNS} FROM builds WHERE environment_id = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (self._env_id, limit),
        )
        return [self._build_record(row) for row in rows]

    def get_build(self, build_id: UUID | str) -> BuildRecord:
        """One build of this environment.

        Raises:
            BuildNotFoundError: no such build in this environment.
        """
        self._abandon_dead_builds()
        rows = self._read(
            f"SELECT {self._BUILD_COLUMNS} FROM builds WHERE id = ? AND environment_id = ?",
            (str(build_id), self._env_id),
        )
        if not rows:
            raise BuildNotFoundError(
                f"Build {build_id} is not in the registry {self.path} (workspace "
                f"{self.workspace!r}, environment {self.environment!r})."
            )
        return self._build_record(rows[0])

    def list_build_tasks(self, build_id: UUID | str) -> list[BuildTaskRecord]:
        """The tasks a build registered, in registration order, with their in-build status."""
        self.get_build(build_id)
        rows = self._read(
            "SELECT bt.task_id, t.name, t.namespace, bt.status, bt.registered_at, bt.started_at,"
            " bt.completed_at, bt.error_message FROM build_tasks bt"
            " LEFT JOIN tasks t ON t.environment_id = ? AND t.task_id = bt.task_id"
            " WHERE bt.build_id = ? ORDER BY bt.registered_at, bt.task_id",
            (self._env_id, str(build_id)),
        )
        return [
            BuildTaskRecord(
                task_id=UUID(r[0]),
                name=r[1] or "",
                namespace=r[2] or "",
                status=r[3],
                registered_at=_dt(r[4]),
                started_at=_dt(r[5]),
                completed_at=_dt(r[6]),
                error_message=r[7],
            )
            for r in rows
        ]

    def list_events(self, build_id: UUID | str) -> list[EventRecord]:
        """A build's events, oldest first."""
        self.get_build(build_id)
        rows = self._read(
            "SELECT id, build_id, task_id, kind, created_at, error_message, metadata FROM events"
            " WHERE build_id = ? ORDER BY id",
            (str(build_id),),
        )
        return [
            EventRecord(
                id=r[0],
                build_id=UUID(r[1]),
                task_id=UUID(r[2]) if r[2] is not None else None,
                kind=r[3],
                created_at=_ts(r[4]),
                error_message=r[5],
                metadata=json.loads(r[6]) if r[6] is not None else None,
            )
            for r in rows
        ]

    def get_assets(self, task_id: UUID | str) -> list[RegistryAsset]:
        """A task's assets (latest upload of each type and name), in the order the task
        first returned them."""
        from pydantic import TypeAdapter

        from ...registry_asset import RegistryAsset

        rows = self._read(
            "SELECT type, name, body FROM assets WHERE environment_id = ? AND task_id = ?"
            " ORDER BY rowid",
            (self._env_id, str(task_id)),
        )
        adapter: TypeAdapter[Any] = TypeAdapter(RegistryAsset)
        return [
            adapter.validate_python({**json.loads(body), "type": kind, "name": name})
            for kind, name, body in rows
        ]

    def built_code_hash(self, task_id: UUID | str) -> str | None:
        """The code hash (see :func:`stardag_nb._code_hash.code_hash`) of the task's class
        when a build of this environment last completed it, if recorded."""
        rows = self._read(
            "SELECT bt.code_hash FROM build_tasks bt JOIN builds b ON b.id = bt.build_id"
            " WHERE bt.task_id = ? AND b.environment_id = ? AND bt.status = 'completed'"
            " AND bt.code_hash IS NOT NULL ORDER BY bt.updated_at DESC LIMIT 1",
            (str(task_id), self._env_id),
        )
        return rows[0][0] if rows else None

    def get_dependencies(self, task_id: UUID | str) -> list[DependencyRecord]:
        """The recorded edges into ``task_id`` (its static and dynamic dependencies)."""
        rows = self._read(
            "SELECT upstream_task_ids, downstream_task_id, dynamic FROM task_dependencies"
            " WHERE environment_id = ? AND downstream_task_id = ?"
            " ORDER BY created_at",
            (self._env_id, str(task_id)),
        )
        seen: set[tuple[str, bool]] = set()
        records = []
        for ups, down, dyn in rows:
            for up in json.loads(ups):
                if (up, bool(dyn)) not in seen:
                    seen.add((up, bool(dyn)))
                    records.append(DependencyRecord(UUID(up), UUID(down), bool(dyn)))
        return records

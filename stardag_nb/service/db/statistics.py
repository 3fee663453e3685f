"""Planner statistics kept fresh on PostgreSQL while the registry's tables grow.

Without statistics (no row counts, no distinct values) PostgreSQL's planner guesses,
and for a lookup of tasks by id it can pick the environment's other index and read
every task of the environment; a prepared statement keeps its plan until statistics
change. The autovacuum daemon refreshes statistics at most once a minute
(``autovacuum_naptime``), and a new registry under load grows from empty in seconds:
measured, a batch's database time grew from 1 ms to 14 ms within 30 s of a new
database.

:class:`StatisticsKeeper` looks at the busiest tables four times a second (by default) and
analyzes those whose rows changed as many times over as they had at their last
analysis (plus a few hundred): a plan's shape depends on a table's order of magnitude,
and a table that grows from empty to millions of rows is analyzed some twenty times. It
looks often because a prepared statement planned while a table was small keeps its plan
until the table is analyzed: a new registry's lookup of tasks by id took 0.46 ms, not
0.04, on average over its first seconds under load when the first look came after a
second.
One process at a time does it (an advisory lock), so the workers of one server do not
repeat each other's work.

Its analyses sample 3,000 rows (statistics target 10), not PostgreSQL's 30,000: enough
for row counts and the distinct values of the keys the registry's lookups use, and a
tenth of the work. Analyzing the events table of a registry under load took 30-80 ms
of the database's CPU at once, felt by every request then under way; it now takes
about 8 ms. Autovacuum's own analyses, when they come, use the default target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["BUSY_TABLES", "StatisticsKeeper"]

logger = logging.getLogger(__name__)

BUSY_TABLES = ("builds", "tasks", "events", "task_dependencies", "batch_receipts", "assets")
"""The tables every build writes to."""

SAMPLE_TARGET = 10
"""The statistics target of the keeper's analyses (PostgreSQL's default: 100)."""

_SMALL_SAMPLE = text(f"SET LOCAL default_statistics_target = {SAMPLE_TARGET}")
_LOCK_KEY = 0x5D_A9_57A7  # pg_try_advisory_xact_lock key: one keeper at a time per database
_STALE = text(
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables) "
    # rows changed since the last analysis, against the rows there were then
    "AND s.n_mod_since_analyze >= "
    ":rows + :fraction * greatest(s.n_live_tup - s.n_mod_since_analyze, 0) "
    # tables this role may analyze (another's are skipped with a warning, and would be
    # found stale again every time)
    "AND (pg_has_role(c.relowner, 'USAGE') OR pg_has_role("
    "(SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'))"
)


class StatisticsKeeper:
    """Analyze :data:`BUSY_TABLES` of a PostgreSQL database every ``interval`` seconds
    when more of their rows changed since their last ANALYZE than ``rows`` plus
    ``fraction`` of the rows they had then. :meth:`start` runs it in the background,
    :meth:`close` stops it."""

    def __init__(
        self, engine: AsyncEngine, interval: float, rows: int = 200, fraction: float = 1.0
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.rows = rows
        self.fraction = fraction
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        """Run in the background (nothing on SQLite, or with ``interval`` 0)."""
        if self.engine.dialect.name == "postgresql" and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="stardag-statistics")

    async def close(self) -> None:
        """Stop (an ANALYZE under way is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.analyze_stale()
            except Exception as exc:  # never the end of the keeper, nor of the server
                if not self._failing:  # once, not at every look
                    logger.warning("could not refresh table statistics: %s", exc)
                self._failing = True
            else:
                self._failing = False

    async def analyze_stale(self) -> list[str]:
        """Analyze the busy tables that changed enough; their names (a table another
        process holds is skipped, and found again next time; none when another process
        holds the keeper's lock)."""
        async with self.engine.begin() as conn:  # the lock is the transaction's
            locked = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY}
            )
            if not locked:
                return []
            parameters = {"tables": list(BUSY_TABLES), "rows": self.rows, "fraction": self.fraction}
            stale = [
                table for table in (await conn.scalars(_STALE, parameters)) if table in BUSY_TABLES
            ]
            if stale:  # a sample of 3,000 rows, not 30,000 (see the module docstring)
                await conn.execute(_SMALL_SAMPLE)
            for table in stale:  # names of ours only (checked above), quoted; a table
                # autovacuum holds is skipped (waiting, this would cancel autovacuum)
                await conn.execute(text(f'ANALYZE (SKIP_LOCKED) "{table}"'))
            return stale

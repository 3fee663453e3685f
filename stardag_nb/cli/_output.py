"""Rendering for the CLI: aligned text tables, JSON, and the error type commands raise."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import pydantic_core

__all__ = [
    "ELLIPSIS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "Column",
    "api_error",
    "format_datetime",
    "is_tty",
    "print_fields",
    "print_json",
    "print_table",
    "render_table",
    "to_jsonable",
    "truncate",
]

EXIT_OK = 0
EXIT_FAILURE = 1
"""The build failed (or did not finish); an unexpected error."""
EXIT_USAGE = 2
"""Bad arguments or configuration: nothing was run (argparse uses 2 as well)."""

ELLIPSIS = "…"


class CLIError(Exception):
    """An error to report as ``error: <message>`` (plus an optional hint), no traceback."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def report(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        stream.write(f"error: {self.message}\n")
        if self.hint:
            stream.write(f"hint: {self.hint}\n")
        stream.flush()


# -- cells -----------------------------------------------------------------------------


def truncate(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when cut."""
    if width is None or len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return text[: width - 1] + ELLIPSIS


def format_datetime(value: datetime | None) -> str:
    """A datetime in the local timezone, to the second (``-`` for None)."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone()
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_datetime(value)
    # One line per row: collapse newlines and runs of spaces (error messages, tracebacks).
    return " ".join(str(value).split())


# -- tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: its header, the widest it may be (None: never cut), and whether it
    may shrink further to fit a terminal."""

    header: str
    max_width: int | None = None
    shrink: bool = False
    min_width: int = 8


def render_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    width: int | None = None,
    gap: str = "  ",
) -> str:
    """Rows as left-aligned text columns under a header line; cells longer than their
    column are cut with ``…``. ``width`` (e.g. the terminal's) shrinks the shrinkable
    columns, widest first, until the table fits or they reach their minimum."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = []
    for i, col in enumerate(columns):
        natural = max([len(col.header), *(len(r[i]) for r in cells)])
        widths.append(natural if col.max_width is None else min(natural, col.max_width))
    if width is not None:
        excess = sum(widths) + len(gap) * (len(columns) - 1) - width
        while excess > 0:
            candidates = [
                i
                for i, c in enumerate(columns)
                if c.shrink and widths[i] > max(c.min_width, len(c.header))
            ]
            if not candidates:
                break
            i = max(candidates, key=lambda j: widths[j])
            floor = max(columns[i].min_width, len(columns[i].header))
            step = min(excess, widths[i] - floor)
            widths[i] -= step
            excess -= step
    lines = [gap.join(c.header.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append(
            gap.join(truncate(v, w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        )
    return "\n".join(lines)


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Any]], empty: str, indent: str = ""
) -> None:
    """Print ``rows`` as a table fitted to the terminal, or ``empty`` when there are none."""
    if not rows:
        print(empty)
        return
    width = terminal_width()
    table = render_table(columns, rows, width=None if width is None else width - len(indent))
    print("\n".join(indent + line for line in table.splitlines()))


def print_fields(fields: Sequence[tuple[str, Any]], indent: str = "") -> None:
    """``label: value`` lines with the values aligned (``-`` for None)."""
    if not fields:
        return
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        print(f"{indent}{(label + ':').ljust(width)} {_cell(value)}".rstrip())


def is_tty(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stdin) is an interactive terminal."""
    stream = stream or sys.stdin
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # closed stream
        return False


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The terminal's width when ``stream`` (default stdout) is one, else None (no fitting:
    piped output keeps whole columns up to their maximums)."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    return shutil.get_terminal_size().columns


# -- errors from the registry ----------------------------------------------------------


def api_error(exc: Exception) -> CLIError:
    """A registry's refusal (an ``APIError``) as one ``error:`` line with a hint: the
    service's ``detail`` names the bad value and the fix; authentication problems point to
    ``auth login``. Unknown names are usage errors (exit 2), other refusals exit 1."""
    from ..exceptions import AuthenticationError, NotFoundError

    detail = getattr(exc, "detail", None)
    message = str(detail) if detail else str(getattr(exc, "message", None) or exc)
    hint = None
    if isinstance(exc, AuthenticationError):
        hint = (
            "Log in with: stardag-nb auth login --url URL --token TOKEN (or set STARDAG_API_KEY)."
        )
    code = EXIT_USAGE if isinstance(exc, NotFoundError) else EXIT_FAILURE
    return CLIError(message, hint=hint, exit_code=code)


# -- JSON ------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data, the way the service's responses are: datetimes in ISO
    8601, UUIDs and paths as strings, enums as their values, dataclasses and pydantic
    models as objects, tuples and sets as lists; anything else as its ``str()``."""
    return pydantic_core.to_jsonable_python(value, fallback=str)


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """``value`` as indented JSON on ``stream`` (default stdout)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False) + "\n")
    stream.flush()

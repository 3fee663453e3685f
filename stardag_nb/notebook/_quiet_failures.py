"""Task failures of a build shown as a DAG widget are logged in one line each: their
tracebacks belong to the widget's details panel, not to a stderr block in the cell."""

from __future__ import annotations

import contextvars
import logging

__all__ = ["widget_build_context"]

_IN_WIDGET_BUILD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "stardag_nb_widget_build", default=False
)
_ENGINE_LOGGER = "stardag_nb.build"
_NOTE = " (traceback: click the task in the DAG)"


class _TracebackToPanel(logging.Filter):
    """Drops the traceback of the engine's records logged inside a widget build."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _IN_WIDGET_BUILD.get():
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg}{_NOTE}"
        return True


_filter = _TracebackToPanel()


def widget_build_context() -> contextvars.Context:
    """A copy of the current context in which the engine's failure records go without
    their tracebacks; run the build's task in it."""
    logger = logging.getLogger(_ENGINE_LOGGER)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    context = contextvars.copy_context()
    context.run(_IN_WIDGET_BUILD.set, True)
    return context

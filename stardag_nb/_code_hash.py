"""A hash of a task class's code, to notice code changed since an output was built.

Task ids do not depend on code (as in stardag): change a task's body without bumping its
version and the old output is reused. Recording this hash with each completion lets a
front end mark such outputs. The hash covers the class (or the decorated function) as
an AST, so comments, docstrings and formatting do not change it.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import weakref
from typing import Any

__all__ = ["code_hash"]

_cache: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()


def code_hash(cls: type) -> str | None:
    """16 hex digits identifying the code of task class ``cls``; None when its source
    is not available (built-ins, code without a file)."""
    try:
        return _cache[cls]
    except KeyError:
        pass
    value = _compute(cls)
    _cache[cls] = value
    return value


def _compute(cls: type) -> str | None:
    target: Any = getattr(cls, "__stardag_func__", None) or cls
    try:
        source = textwrap.dedent(inspect.getsource(target))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
            ):
                continue
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]  # drop the docstring
        normalised = ast.dump(tree, annotate_fields=False)
    except SyntaxError:
        normalised = source
    return hashlib.sha1(normalised.encode()).hexdigest()[:16]

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
import linecache
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
        tree = _class_in_cell(target) if isinstance(target, type) else None
        if tree is None:
            return None
        return _digest(tree)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return hashlib.sha1(source.encode()).hexdigest()[:16]
    return _digest(tree)


def _class_in_cell(cls: type) -> ast.Module | None:
    """The definition of a class whose module has no file (a notebook cell, where
    ``inspect.getsource`` fails for classes): found through the file its methods' code
    names (a cell's source is in :mod:`linecache`), as the innermost ``class`` statement
    of that name around them."""
    prefix = cls.__qualname__ + "."
    for member in vars(cls).values():
        func = getattr(member, "__func__", member)  # classmethod / staticmethod
        func = getattr(func, "fget", func)  # property
        try:
            func = inspect.unwrap(func)  # the body, not a wrapper (run() is wrapped)
        except ValueError:  # pragma: no cover - a cycle of __wrapped__
            continue
        code = getattr(func, "__code__", None)
        if code is None or not getattr(func, "__qualname__", "").startswith(prefix):
            continue  # not a function written in this class's body
        lines = linecache.getlines(code.co_filename)
        if not lines:
            continue
        try:
            module = ast.parse("".join(lines))
        except SyntaxError:
            continue
        line = code.co_firstlineno
        found: ast.ClassDef | None = None
        for node in ast.walk(module):
            if (
                isinstance(node, ast.ClassDef)
                and node.name == cls.__name__
                and node.lineno <= line <= (node.end_lineno or node.lineno)
                and (found is None or node.lineno >= found.lineno)
            ):
                found = node
        if found is not None:
            return ast.Module(body=[found], type_ignores=[])
    return None


def _digest(tree: ast.AST) -> str:
    """A hash of ``tree`` without docstrings (comments and layout are not in an AST)."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = node.body[1:] or [ast.Pass()]  # drop the docstring
    normalised = ast.dump(tree, annotate_fields=False)
    return hashlib.sha1(normalised.encode()).hexdigest()[:16]

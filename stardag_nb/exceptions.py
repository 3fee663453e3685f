"""Errors raised by stardag_nb.

Every error the library raises on purpose derives from :class:`StardagError`::

    StardagError
    ├── TaskDefinitionError (TypeError)  a task class or function is declared wrongly
    │   ├── TaskImplementationError   a concrete task has neither run() nor run_aio()
    │   └── TypeIdConflictError (ValueError)  two classes claim one (namespace, name)
    ├── ParameterError (ValueError)  a task parameter value is invalid
    ├── TargetError                  targets and their roots
    │   ├── UnknownTargetRootError (KeyError)  no root configured under that key
    │   └── MissingDependencyError (ImportError)  an optional package is needed
    ├── SerializationError           an output cannot be serialized or loaded
    ├── ConfigError (ValueError)     a config file or variable is malformed
    ├── LockWaitTimeoutError (TimeoutError)  a task's global lock stayed taken too long
    ├── BuildCancelled               a build awaited in a notebook was cancelled
    └── APIError                     the registry service answered with an error
        ├── AuthenticationError
        │   ├── TokenExpiredError
        │   ├── InvalidTokenError
        │   ├── InvalidAPIKeyError
        │   └── NotAuthenticatedError
        ├── AuthorizationError
        │   └── EnvironmentAccessError
        ├── NotFoundError
        └── RegistryUnreachableError  the service did not answer (shown as one line)

The API error classes keep the names and constructor signatures of stardag's. Where stardag
raises a builtin exception, the error here derives from that builtin too (a type id claimed
twice is a ``ValueError`` there and here), and messages keep stardag's key phrases.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "AuthorizationError",
    "BuildCancelled",
    "ConfigError",
    "EnvironmentAccessError",
    "InvalidAPIKeyError",
    "InvalidTokenError",
    "LockWaitTimeoutError",
    "MissingDependencyError",
    "NotAuthenticatedError",
    "NotFoundError",
    "ParameterError",
    "RegistryUnreachableError",
    "SerializationError",
    "StardagError",
    "TargetError",
    "TaskDefinitionError",
    "TaskImplementationError",
    "TokenExpiredError",
    "TypeIdConflictError",
    "UnknownTargetRootError",
]


class StardagError(Exception):
    """Root of every error stardag_nb raises on purpose."""


class TaskDefinitionError(StardagError, TypeError):
    """A task class or task function is declared in a way that cannot work."""


class TaskImplementationError(TaskDefinitionError):
    """A concrete task class implements neither ``run()`` nor ``run_aio()``."""


class TypeIdConflictError(TaskDefinitionError, ValueError):
    """Two different task classes (other modules, or other class names) claim the same
    ``(namespace, name)``. A redefinition of the same class is not a conflict."""


class ParameterError(StardagError, ValueError):
    """A task parameter has a value the task cannot accept."""


class TargetError(StardagError):
    """A target cannot be created, located or written."""


class UnknownTargetRootError(TargetError, KeyError):
    """No target root is configured under the requested key."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(TargetError, ImportError):
    """An optional package is needed for what was asked (an fsspec protocol, pandas...)."""


class SerializationError(StardagError, ValueError):
    """A value cannot be serialized to, or loaded from, a target."""


class ConfigError(StardagError, ValueError):
    """A configuration file or environment variable is malformed."""


class LockWaitTimeoutError(StardagError, TimeoutError):
    """A task's global lock stayed held by another build (or the environment's lock limit
    stayed reached) for longer than ``GlobalLockConfig.lock_wait_timeout_seconds``.

    Args:
        task: what to call the task in the message (its repr).
        timeout_seconds: the wait that ran out.
        status: the last answer of the lock manager (``"held_by_other"``, ...).
    """

    def __init__(self, task: str, timeout_seconds: float, status: str = "held_by_other"):
        self.task = task
        self.timeout_seconds = timeout_seconds
        self.status = str(status)
        why = (
            "stayed held by another build"
            if self.status == "held_by_other"
            else f"could not be taken ({self.status})"
        )
        super().__init__(
            f"Lock {self.status}: Timeout after {timeout_seconds}s: the global lock of "
            f"{task:.100} {why} for {timeout_seconds} s. Raise "
            "GlobalLockConfig.lock_wait_timeout_seconds to wait longer."
        )

    def __reduce__(self) -> tuple[object, ...]:  # picklable across processes
        return (type(self), (self.task, self.timeout_seconds, self.status))


class BuildCancelled(StardagError):
    """A build was cancelled (kernel interrupt, Cancel button, ``handle.cancel()``)
    while a cell awaited it. Shown in a notebook as one line, not a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how to show it
        return [f"{type(self).__name__}: {self}"]


class APIError(StardagError):
    """The registry service answered with an error."""

    def __init__(self, message: str, status_code: int | None = None, detail: str | None = None):
        self.message = message
        self.status_code = status_code
        self.detail = detail
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"(HTTP {self.status_code})")
        if self.detail and self.detail not in self.message:
            parts.append(f": {self.detail}")
        return " ".join(parts)


class AuthenticationError(APIError):
    """The caller is not authenticated (HTTP 401)."""

    def __init__(
        self,
        message: str = "Authentication failed",
        status_code: int | None = 401,
        detail: str | None = None,
    ):
        super().__init__(message, status_code, detail)


class TokenExpiredError(AuthenticationError):
    """The access token has expired; log in again or refresh it."""

    def __init__(self, detail: str | None = None):
        super().__init__("Access token has expired; run 'stardag-nb auth login'", 401, detail)


class InvalidTokenError(AuthenticationError):
    """The access token is not valid for this registry."""

    def __init__(self, detail: str | None = None):
        super().__init__("Access token is invalid", 401, detail)


class InvalidAPIKeyError(AuthenticationError):
    """The API key is unknown, revoked or malformed."""

    def __init__(self, detail: str | None = None):
        super().__init__("API key is invalid or revoked; check STARDAG_API_KEY", 401, detail)


class NotAuthenticatedError(AuthenticationError):
    """No credentials were sent."""

    def __init__(self, detail: str | None = None):
        super().__init__(
            "Not authenticated: set STARDAG_API_KEY or run 'stardag-nb auth login'", 401, detail
        )


class AuthorizationError(APIError):
    """The caller may not do this (HTTP 403)."""

    def __init__(self, message: str = "Access denied", detail: str | None = None):
        super().__init__(message, 403, detail)


class EnvironmentAccessError(AuthorizationError):
    """The caller may not use this environment."""

    def __init__(self, environment_id: str | None = None, detail: str | None = None):
        self.environment_id = environment_id
        target = f" {environment_id}" if environment_id else ""
        super().__init__(f"No access to environment{target}", detail)


class NotFoundError(APIError):
    """The requested resource does not exist (HTTP 404)."""

    def __init__(self, message: str = "Resource not found", detail: str | None = None):
        super().__init__(message, 404, detail)


class RegistryUnreachableError(APIError):
    """The registry service could not be reached, or did not answer, within the retry
    window. Shown in a notebook as one line, not a traceback."""

    def __init__(self, message: str, url: str | None = None):
        self.url = url
        super().__init__(message)

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how to show it
        return [f"{type(self).__name__}: {self}"]

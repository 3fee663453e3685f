"""``stardag-nb serve``: run the registry service (needs the ``service`` extra).

    stardag-nb serve [--host 127.0.0.1] [--port 8000] [--database-url URL] [--workers N]
                     [--init [--username admin] [--token-file F]] [--log-level info]
                     [--access-log]

With ``--init`` an empty database gets a first user (an owner), a workspace ``default``
and the environments ``main`` and ``personal-{username}``; the user's token is printed as
``Owner token: st_...`` (and written to ``--token-file``). Once listening the command
prints ``Serving registry on http://HOST:PORT``. FastAPI, SQLAlchemy and uvicorn are
imported only when the command runs.

``--workers N`` (N > 1) runs N uvicorn worker processes on one listening socket, for
PostgreSQL above all (SQLite allows one writer at a time whatever the workers). The
database is migrated once, before the workers start; the workers share the API-key cache
epoch through a file, so a revoked key stops working at once in all of them.

Requests are not logged one line each unless ``--access-log`` is given: a build writes
through the service for every task (the registry records each write anyway), and the
lines cost the server time on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._output import EXIT_FAILURE, EXIT_OK, CLIError

if TYPE_CHECKING:
    from ..service.settings import ServiceSettings

__all__ = ["add_parser"]

_INSTALL_HINT = "Install the service extra: pip install 'stardag_nb[service]'"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``serve`` on the ``stardag-nb`` subcommands."""
    parser = commands.add_parser(
        "serve",  # no --registry: the service's store is --database-url
        help="run the registry service",
        description="Run the registry service (FastAPI + SQLAlchemy; SQLite or PostgreSQL). "
        "The database schema is migrated at start.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB "
        "(default: $STARDAG_SERVICE_DATABASE_URL, else <stardag dir>/service.sqlite3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (default: %(default)s); more than one uses several cores, "
        "best with PostgreSQL",
    )
    parser.add_argument(
        "--init",
        action="store_true",
        help="on an empty database, create the first user, workspace 'default' and "
        "environments 'main' and 'personal-USERNAME', and print the user's token",
    )
    parser.add_argument(
        "--username",
        default="admin",
        help="the first user's name, with --init (default: %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        metavar="F",
        type=Path,
        default=None,
        help="also write the token to F (--init)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="server log level (default: %(default)s)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request, one line each (off by default: a build sends a few "
        "requests per task, and the registry records each write anyway)",
    )
    parser.set_defaults(handler=_cmd_serve)


def _settings(args: argparse.Namespace) -> ServiceSettings:
    from pydantic import ValidationError

    from ..service.settings import ServiceSettings

    try:
        if args.database_url is not None:
            return ServiceSettings(database_url=args.database_url)
        return ServiceSettings()
    except ValidationError as exc:
        messages = "; ".join(str(err.get("msg", err)) for err in exc.errors())
        raise CLIError(
            messages, hint="e.g. --database-url sqlite+aiosqlite:///./registry.sqlite3"
        ) from None


def _write_token(path: Path, token: str) -> None:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


def _database_error(settings: ServiceSettings, doing: str, exc: BaseException) -> CLIError:
    from sqlalchemy.engine import make_url

    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    return CLIError(
        f"Cannot {doing} the database {shown}: {type(exc).__name__}: {exc}",
        hint="Check --database-url and that the database server is running.",
        exit_code=EXIT_FAILURE,
    )


async def _migrate(settings: ServiceSettings) -> None:
    """Reach the database and bring its schema up to date before listening, so that a wrong
    URL or a server that is down is one clear error, not a traceback from the app's start."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..service.db.migrate import upgrade_head
    from ..service.db.session import Database

    db = Database(settings.database_url, echo=settings.echo_sql)
    try:
        await upgrade_head(db)
    except (OSError, SQLAlchemyError) as exc:
        raise _database_error(settings, "migrate", exc) from None
    finally:
        await db.dispose()


async def _init(args: argparse.Namespace, settings: ServiceSettings) -> None:
    from fastapi import HTTPException
    from sqlalchemy.exc import SQLAlchemyError

    from ..service.bootstrap import init_database

    try:
        result = await init_database(settings, args.username)
    except HTTPException as exc:
        raise CLIError(str(exc.detail), hint="e.g. --username admin") from None
    except (OSError, SQLAlchemyError) as exc:
        raise _database_error(settings, "initialise", exc) from None
    if result is None:
        print(
            "The database is already initialised (it has users): --init created nothing.",
            flush=True,
        )
        return
    if args.token_file is not None:
        _write_token(args.token_file, result.token)
    print(
        f"Initialised: user '{result.username}' (owner), workspace '{result.workspace}', "
        f"environments {', '.join(repr(e) for e in result.environments)}",
        flush=True,
    )
    print(f"Owner token: {result.token}", flush=True)


async def _prepare(args: argparse.Namespace, settings: ServiceSettings) -> None:
    if args.init:
        await _init(args, settings)
    else:
        await _migrate(settings)
    if args.workers > 1:  # once for all workers (a single server does it at its start)
        from ..service.db.session import Database
        from ..service.lifecycle import fail_interrupted

        db = Database(settings.database_url, echo=settings.echo_sql)
        try:
            await fail_interrupted(db)
        finally:
            await db.dispose()


async def _serve(args: argparse.Namespace, settings: ServiceSettings) -> int:
    import uvicorn

    from ..service.app import create_app

    await _prepare(args, settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            lifespan="on",
        )
    )
    serving = asyncio.ensure_future(server.serve())
    # uvicorn reports startup only through the ``started`` flag: poll it
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        port = args.port
        for listener in server.servers:
            for sock in listener.sockets:
                port = sock.getsockname()[1]
                break
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Serving registry on http://{host}:{port}", flush=True)
    try:
        await serving
    except SystemExit:  # uvicorn exits when it cannot bind or start the app
        return EXIT_FAILURE
    return EXIT_OK if server.started else EXIT_FAILURE


def _serve_workers(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """Run ``args.workers`` uvicorn worker processes (each builds the app from the
    ``STARDAG_SERVICE_*`` environment) on one socket bound here."""
    import inspect
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..service.app import WORKER_ENV
    from ..service.keycache import EPOCH_FILE_ENV

    with tempfile.TemporaryDirectory(prefix="stardag-nb-serve-") as shared:
        os.environ.update(
            {
                "STARDAG_SERVICE_DATABASE_URL": settings.database_url,
                EPOCH_FILE_ENV: os.path.join(shared, "auth-epoch"),
                WORKER_ENV: str(args.workers),  # (a worker shares out the SDK slots)
            }
        )
        config = uvicorn.Config(
            "stardag_nb.service.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            lifespan="on",
            workers=args.workers,
        )
        sock = config.bind_socket()
        sock.listen(config.backlog)  # connections wait in the backlog until a worker runs
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"Serving registry on http://{host}:{sock.getsockname()[1]} ({args.workers} workers)",
            flush=True,
        )
        options: dict[str, Any] = {"sockets": [sock]}
        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.50
            options["target"] = uvicorn.Server(config).run
        Multiprocess(config, **options).run()
    return EXIT_OK


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``service`` extra has it on Linux and
    macOS): it costs the server less CPU per request than asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CLIError(f"The registry service needs {exc.name}.", hint=_INSTALL_HINT) from None
    if args.workers < 1:
        raise CLIError(f"--workers {args.workers}: give 1 or more", hint="e.g. --workers 2")
    settings = _settings(args)
    if args.workers > 1:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_prepare(args, settings))
        code = _serve_workers(args, settings)
    else:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(_serve(args, settings))
    if code != EXIT_OK:
        sys.stderr.write("error: the registry service did not start (see the log above)\n")
    return code

"""Smoke test of the throwaway PostgreSQL server used by the service tests."""

from __future__ import annotations

import asyncio
import os
import socket

from tests.pg_server import PostgresServer, postgres_bin_dir, require_postgres_server


async def _query(dsn: str) -> tuple[int, str]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval("select 1"), await conn.fetchval("select current_database()")
    finally:
        await conn.close()


def test_databases_connect_and_server_stops_by_pid() -> None:
    """Two fresh databases answer `select 1`; a private cluster stops by its PID."""
    shared = require_postgres_server()
    urls = [shared.new_database_url("smoke a"), shared.new_database_url("smoke-b")]
    assert urls[0] != urls[1]
    for url in urls:
        assert url.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{shared.port}/")
        name = url.rsplit("/", 1)[1]
        assert asyncio.run(_query(shared.dsn_for(name))) == (1, name)

    # A second, private cluster (not the session singleton) so stopping it is safe here.
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    private = PostgresServer(bin_dir)
    private.start()
    pid, port, tmp = private.pid, private.port, private.tmp
    assert pid is not None and private.running()
    private.stop()
    assert not private.running()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, f"postgres PID {pid} still running after stop()"
    assert not tmp.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "port still accepting connections"

"""Tests of the registry service (the real server, SQLite and PostgreSQL)."""

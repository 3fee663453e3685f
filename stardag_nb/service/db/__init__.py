"""The service's database: SQLAlchemy models, engine and sessions, Alembic migrations."""

"""The package version (the single source; pyproject reads it)."""

__version__ = "0.1.0"

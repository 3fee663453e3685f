"""The embedded registry: one local SQLite file per registry path (``store``), its
workspaces and environments (``admin``), its task locks (``locks``), its schema and
migrations (``schema``), and how it recognises builds whose process died (``liveness``).

Imported by :mod:`stardag_nb.registry`, which re-exports the public names."""

"""``python -m stardag_nb.cli``: the same as the ``stardag-nb`` command."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    raise SystemExit(main())

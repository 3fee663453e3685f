"""Names: build names (``bright-comet-94``) and slugs of workspaces and environments."""

from __future__ import annotations

import random
import re

__all__ = ["build_name", "slugify"]

_ADJECTIVES = (
    "amber", "bold", "brave", "bright", "brisk", "calm", "clever", "cosmic", "crisp", "dapper",
    "eager", "fuzzy", "gentle", "golden", "happy", "hasty", "icy", "jolly", "keen", "lucid",
    "lunar", "mellow", "misty", "nimble", "olive", "plucky", "proud", "quiet", "rapid",
    "rosy", "silent", "snowy", "solar", "sunny", "swift", "tidy", "vivid", "witty", "zesty",
)  # fmt: skip
_NOUNS = (
    "badger", "breeze", "canyon", "comet", "delta", "ember", "falcon", "fjord", "glacier",
    "harbor", "heron", "island", "jackal", "kestrel", "lagoon", "maple", "meadow", "nebula",
    "orbit", "otter", "pebble", "pine", "quartz", "raven", "river", "spruce", "summit",
    "thunder", "tundra", "valley", "walrus", "willow", "zephyr",
)  # fmt: skip
_rng = random.SystemRandom()
_NOT_SLUG = re.compile(r"[^a-z0-9_.]+")


def build_name() -> str:
    """A readable build name, ``adjective-noun-NN`` (not unique: the id is)."""
    return f"{_rng.choice(_ADJECTIVES)}-{_rng.choice(_NOUNS)}-{_rng.randrange(100):02d}"


def slugify(name: str) -> str:
    """``"My Team!"`` → ``"my-team"``: lowercase letters, digits, ``_``, ``.`` and dashes.

    Raises:
        ValueError: nothing of ``name`` is left (e.g. only punctuation).
    """
    slug = _NOT_SLUG.sub("-", name.strip().lower()).strip("-.")[:100].strip("-.")
    if not slug:
        raise ValueError(
            f"{name!r} has no letters or digits to make a name from; use e.g. 'team-data'"
        )
    return slug

"""Two pieces of the server's hot path that are pure functions: the JSON depth check of
every request body (now at C speed for large bodies such as batches) and the block
allocation of time-ordered ids a batch's rows take."""

from __future__ import annotations

import json
import random
from typing import Any

from stardag_nb.service.db.ids import new_id, new_ids
from stardag_nb.service.limits import json_depth_exceeds


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_NASTY = ['a"[{\\', "x\\\\", "}]]", '\\"{', "[[[[", "", "\u00e9]", 1, None, 2.5, True]


def _random_json(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(_NASTY)
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f'k"{i}[\\': _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_the_depth_check_agrees_with_the_parsed_depth() -> None:
    """Strings full of brackets, quotes and backslashes do not fool it, at every limit."""
    rng = random.Random(11)
    for _ in range(1500):
        value = [_random_json(rng, rng.randint(1, 12)) for _ in range(rng.randint(1, 40))]
        depth = _depth(value)
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
            body = text.encode()
            for limit in (1, 2, 3, 5, 8, 13):
                assert json_depth_exceeds(body, limit) is (depth > limit), (depth, limit, text)


def test_the_depth_check_at_its_limit_and_on_a_large_body() -> None:
    assert json_depth_exceeds(b"[" * 200 + b"]" * 200, 200) is False
    assert json_depth_exceeds(b"[" * 201 + b"]" * 201, 200) is True
    # a batch: many operations, each shallow (more brackets than the limit, depth 7)
    ops = [{"op": "register", "task": {"task_data": {"xs": [1, [2]]}}} for _ in range(500)]
    body = json.dumps({"ops": ops}).encode()
    assert (json_depth_exceeds(body, 7), json_depth_exceeds(body, 6)) == (False, True)


def test_ids_of_a_block_follow_each_other_and_the_single_ones() -> None:
    ids = [new_id(), *new_ids(300), new_id(), *new_ids(1), *new_ids(0), new_id()]
    assert len(ids) == 304 and len(set(ids)) == 304
    assert ids == sorted(ids)  # time-ordered: insertion order
    assert {(u.version, u.variant) for u in ids} == {(7, "specified in RFC 4122")}
    assert all(str(u) == str(type(u)(str(u))) for u in ids)


def test_the_sdk_slots_are_shared_out_among_the_workers(monkeypatch: Any) -> None:
    """``STARDAG_SERVICE_SDK_SLOTS`` is the server's: each of N workers runs 1/N of the
    calls at once (rounded up, at least two, so that one stuck call leaves it one); a
    server without workers runs them all, as does a worker whose count is not one."""
    from stardag_nb.service.app import WORKER_ENV, worker_slots

    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert worker_slots(4) == 4
    shares = {}
    for workers in ("1", "2", "3", "8", "0", "yes"):
        monkeypatch.setenv(WORKER_ENV, workers)
        shares[workers] = worker_slots(4)
    assert shares == {"1": 4, "2": 2, "3": 2, "8": 2, "0": 4, "yes": 4}
    monkeypatch.setenv(WORKER_ENV, "8")
    assert (worker_slots(1), worker_slots(16)) == (1, 2)

"""Where a stardag user notices the difference: redefined classes, the exception types and
message phrases users match on, the type registry's lookup names, AliasTask's dump form and
the default target root. Each stardag behaviour is read from stardag 0.1.0 (PyPI) run in its
own virtualenv, next to ours."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pytest

import stardag_nb as sd
from stardag_nb.build import GlobalLockConfig
from stardag_nb.exceptions import (
    LockWaitTimeoutError,
    ParameterError,
    TaskDefinitionError,
    TaskImplementationError,
    TypeIdConflictError,
)
from stardag_nb.polymorphic import PolymorphicRoot, TypeId
from stardag_nb.registry import SQLiteGlobalLockManager, SQLiteRegistry
from stardag_nb.target import LoadableTarget
from stardag_nb.utils.testing import isolated_task_registry, target_roots_override
from tests.stardag_venv import stardag_python

REPO = Path(__file__).resolve().parents[2]


def _run(python: Path | str, code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` with ``python`` (no STARDAG_* or venv variables leak in); its stdout."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    base = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STARDAG_")}
    result = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=os.getcwd(),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --------------------------------------------------------------------------------------------
# What stardag 0.1.0 raises and warns (read once per module)

STARDAG_PROBE = r"""
import asyncio, json, warnings
from typing import Annotated
import stardag as sd
from stardag.build import GlobalLockConfig, LockAcquisitionResult, LockAcquisitionStatus
from stardag.target import LoadableTarget

out = {}

def caught(fn):
    try:
        fn()
    except BaseException as exc:
        return {"types": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
    return None

def no_run():
    class NoRun(sd.AutoTask[int]):
        pass
out["no_run"] = caught(no_run)

class Versioned(sd.AutoTask[int]):
    __version__ = "2"
    def run(self):
        self.output().save(2)
out["version"] = caught(lambda: Versioned().run())

class AsyncOnly(sd.AutoTask[int]):
    async def run_aio(self):
        self.output().save(1)
async def in_loop():
    return caught(lambda: AsyncOnly().run())
out["run_in_loop"] = asyncio.run(in_loop())

class Words(sd.AutoTask[str]):
    def run(self):
        self.output().save("x")
class WantsInt(sd.AutoTask[int]):
    x: sd.TaskLoads[int]
    def run(self):
        self.output().save(1)
out["mismatch"] = caught(lambda: WantsInt(x=Words()))
class WarnsInt(sd.AutoTask[int]):
    x: Annotated[sd.Task[LoadableTarget[int]], sd.Polymorphic(on_generic_type_mismatch="warn")]
    def run(self):
        self.output().save(1)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    WarnsInt(x=Words())
out["mismatch_warning"] = [
    {"category": w.category.__name__, "message": str(w.message)} for w in seen
]

def first():
    class MockTask(sd.AutoTask[int]):
        def run(self):
            self.output().save(1)
    return MockTask
def second():
    class MockTask(sd.AutoTask[int]):
        def run(self):
            self.output().save(2)
    return MockTask
out["redefined_in_two_functions"] = caught(lambda: (first(), second()))

class HeldElsewhere:  # stardag 0.1.0 has no embedded lock manager: a stand-in answer
    async def acquire(self, task_id):
        return LockAcquisitionResult(status=LockAcquisitionStatus.HELD_BY_OTHER, acquired=False)
    async def release(self, task_id, task_completed=False):
        return True
class Locked(sd.AutoTask[int]):
    def run(self):
        self.output().save(1)
config = GlobalLockConfig(
    enabled=True, lock_wait_initial_interval_seconds=0.05, lock_wait_timeout_seconds=0.2)
summary = sd.build(Locked(), global_lock_manager=HeldElsewhere(), global_lock_config=config)
out["lock_timeout"] = {"types": [c.__name__ for c in type(summary.error).__mro__],
                       "message": str(summary.error)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stardag_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("stardag-home")
    env = {"HOME": str(home), "STARDAG_TARGET_ROOTS__DEFAULT": str(home / "root")}
    return json.loads(_run(stardag_python(), STARDAG_PROBE, env))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Redefining a task class


def _first_mock() -> type:
    class ParityMockTask(sd.AutoTask[int]):
        def run(self) -> None:
            self.output().save(1)

    return ParityMockTask


def _second_mock() -> type:
    class ParityMockTask(sd.AutoTask[int]):
        flag: bool = False

        def run(self) -> None:
            self.output().save(2)

    return ParityMockTask


def test_a_class_redefined_in_two_functions_is_accepted_and_the_newest_wins(
    stardag_says: dict[str, Any],
) -> None:
    assert stardag_says["redefined_in_two_functions"] is None  # stardag accepts it too
    with isolated_task_registry(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the same module: not even a warning
        first = _first_mock()
        second = _second_mock()  # qualified names differ: _first_mock.<locals>... vs _second_...
        loaded = sd.BaseTask.model_validate(
            {"__namespace": "", "__name": "ParityMockTask", "version": "", "flag": True}
        )
        assert type(loaded) is second and type(loaded) is not first
        assert sd.BaseTask._registry().get_class(TypeId("", "ParityMockTask")) is second


def _module_with_task(module_name: str, value: int) -> types.ModuleType:
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module
    source = (
        "import stardag_nb as sd\n\n"
        "class Shared(sd.AutoTask[int]):\n"
        "    def run(self) -> None:\n"
        f"        self.output().save({value})\n"
    )
    exec(compile(source, f"<{module_name}>", "exec"), module.__dict__)
    return module


def test_two_modules_claiming_one_type_id_is_an_error_naming_both() -> None:
    with isolated_task_registry():
        _module_with_task("parity_mod_a", 1)
        with pytest.raises(TypeIdConflictError) as raised:
            _module_with_task("parity_mod_b", 2)
    for name in ("parity_mod_a", "parity_mod_b"):
        sys.modules.pop(name, None)
    message = str(raised.value)
    assert "parity_mod_a.Shared" in message and "parity_mod_b.Shared" in message
    assert "name_override" in message  # how to fix it
    # stardag raises ValueError here; ours is also a ValueError (and a TaskDefinitionError)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TaskDefinitionError)


def test_a_class_rebuilt_in_the_same_module_replaces_the_old_one_in_a_script(
    tmp_path: Path,
) -> None:
    """A module-level class and a function's local class of the same name (a script that
    re-declares a task, as a notebook cell run twice does): no error, the newest wins."""
    script = tmp_path / "redefine.py"
    script.write_text(
        "import warnings\nwarnings.simplefilter('error')\nimport stardag_nb as sd\n\n"
        "class Step(sd.AutoTask[int]):\n    def run(self) -> None:\n"
        "        self.output().save(1)\n\n"
        "def again():\n    class Step(sd.AutoTask[int]):\n        n: int = 0\n"
        "        def run(self) -> None:\n            self.output().save(2)\n    return Step\n\n"
        "New = again()\n"
        "loaded = sd.BaseTask.model_validate({'__namespace': '', '__name': 'Step', 'n': 1})\n"
        "print(type(loaded) is New, type(loaded) is not Step)\n"
    )
    assert _run(sys.executable, script.read_text()).split() == ["True", "True"]


# --------------------------------------------------------------------------------------------
# Exception types and phrases


def test_a_task_without_run_names_stardags_phrase(stardag_says: dict[str, Any]) -> None:
    phrase = "must implement either run() or run_aio()"
    assert phrase in stardag_says["no_run"]["message"]
    assert "TaskImplementationError" in stardag_says["no_run"]["types"]
    with pytest.raises(TaskImplementationError) as raised:

        class NoRunHere(sd.AutoTask[int]):
            pass

    assert phrase in str(raised.value)
    assert "NoRunHere implements neither run() nor run_aio()" in str(raised.value)
    assert "Implement run() for synchronous tasks" in str(raised.value)


def test_version_mismatch_is_a_value_error_with_stardags_phrase(
    stardag_says: dict[str, Any],
) -> None:
    assert stardag_says["version"]["types"][0] == "ValueError"
    assert stardag_says["version"]["message"].startswith("Task version mismatch")

    class VersionedHere(sd.AutoTask[int]):
        __version__ = "2"

        def run(self) -> None:
            self.output().save(2)

    with pytest.raises(ValueError, match=r"^Task version mismatch") as raised:
        VersionedHere().run()
    assert isinstance(raised.value, ParameterError)
    assert "version: str = '2'" in str(raised.value)  # our fix stays in the message


def test_an_async_only_task_run_inside_a_loop_says_implement_run(
    stardag_says: dict[str, Any],
) -> None:
    assert stardag_says["run_in_loop"]["types"][0] == "RuntimeError"
    assert "Implement run()" in stardag_says["run_in_loop"]["message"]

    class AsyncOnlyHere(sd.AutoTask[int]):
        async def run_aio(self) -> None:
            self.output().save(1)

    async def call_run() -> None:
        AsyncOnlyHere().run()

    with pytest.raises(RuntimeError, match=r"Implement run\(\)") as raised:
        asyncio.run(call_run())
    assert "await `task.run_aio()`" in str(raised.value).replace("Await", "await")


class LockedStep(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


def test_a_lock_wait_timeout_fails_the_task_with_a_timeout_error(
    tmp_path: Path, stardag_says: dict[str, Any]
) -> None:
    assert "Timeout after 0.2s" in stardag_says["lock_timeout"]["message"]
    registry = SQLiteRegistry(tmp_path / "locks.sqlite3")
    other = SQLiteGlobalLockManager(registry, owner_id="another-build", ttl_seconds=60)
    ours = SQLiteGlobalLockManager(registry, owner_id="this-build")
    task = LockedStep(n=7)
    assert asyncio.run(other.acquire(str(task.id))).acquired
    config = GlobalLockConfig(
        enabled=True, lock_wait_initial_interval_seconds=0.05, lock_wait_timeout_seconds=0.2
    )
    with target_roots_override({"default": str(tmp_path / "root")}):
        summary = sd.build(
            task, registry=registry, global_lock_manager=ours, global_lock_config=config,
            progress=False,
        )  # fmt: skip
    assert summary.status.value == "failure"
    assert isinstance(summary.error, LockWaitTimeoutError)
    assert isinstance(summary.error, TimeoutError)
    message = str(summary.error)
    assert "Lock held_by_other: Timeout after 0.2s" in message  # stardag's words
    assert "lock_wait_timeout_seconds" in message  # and what to change
    assert not task.complete()


class WordsTask(sd.AutoTask[str]):
    def run(self) -> None:
        self.output().save("x")


class PlainWords(sd.Task[LoadableTarget[str]]):
    """A task declared with the bare target protocol (no file-system target)."""

    def output(self) -> LoadableTarget[str]:
        raise NotImplementedError

    def run(self) -> None:
        pass


class WantsInt(sd.AutoTask[int]):
    x: sd.TaskLoads[int]

    def run(self) -> None:
        self.output().save(1)


class WarnsInt(sd.AutoTask[int]):
    x: Annotated[sd.Task[LoadableTarget[int]], sd.Polymorphic(on_generic_type_mismatch="warn")]

    def run(self) -> None:
        self.output().save(1)


def test_task_loads_type_mismatch_names_both_target_types(stardag_says: dict[str, Any]) -> None:
    theirs = stardag_says["mismatch"]["message"]
    assert "not compatible" in theirs and "LoadableTarget[int]" in theirs
    with pytest.raises(pydantic.ValidationError) as raised:
        WantsInt(x=PlainWords())
    message = str(raised.value)
    assert "not compatible" in message
    assert "expected LoadableTarget[int], got LoadableTarget[str]" in message
    assert "produces str, but a task producing int is expected" in message  # ours, kept

    with pytest.raises(pydantic.ValidationError) as raised:
        WantsInt(x=WordsTask())
    message = str(raised.value)
    assert "not compatible with expected type Task[LoadableTarget[int]]" in message
    assert "expected LoadableTarget[int], got LoadableSaveableFileSystemTarget[str]" in message


def test_task_loads_mismatch_warning_names_both_target_types(stardag_says: dict[str, Any]) -> None:
    [theirs] = stardag_says["mismatch_warning"]
    assert theirs["category"] == "UserWarning" and "not compatible" in theirs["message"]
    with pytest.warns(UserWarning, match="not compatible") as seen:
        task = WarnsInt(x=PlainWords())
    assert isinstance(task.x, PlainWords)  # accepted
    [warning] = [w for w in seen if "not compatible" in str(w.message)]
    assert "expected LoadableTarget[int], got LoadableTarget[str]" in str(warning.message)


# --------------------------------------------------------------------------------------------
# The type registry under stardag's names

REGISTRY_SNIPPET = """
from {package}.polymorphic import PolymorphicRoot, TypeId

class Animal(PolymorphicRoot):
    pass

class Dog(Animal):
    bark: int = 1

class Cat(Animal):
    mood: str = "ok"

registry = Animal._registry()
assert Dog._registry() is registry and Cat._registry() is registry
assert registry._type_id_to_class == {{TypeId("", "Dog"): Dog, TypeId("", "Cat"): Cat}}
assert registry.get_class(TypeId("", "Cat")) is Cat
assert registry.get_type_id(Dog) == TypeId("", "Dog")
assert Animal.__registry__ is registry
try:
    registry.get_class(TypeId("", "Bird"))
except KeyError as exc:
    print("KeyError", "No class registered for type id" in str(exc))
"""


def test_the_type_registry_answers_to_stardags_names() -> None:
    theirs = _run(stardag_python(), REGISTRY_SNIPPET.format(package="stardag"))
    ours = _run(sys.executable, REGISTRY_SNIPPET.format(package="stardag_nb"))
    assert theirs.split() == ours.split() == ["KeyError", "True"]


def test_get_class_finds_task_classes() -> None:
    registry = sd.BaseTask._registry()
    assert registry.get_class(TypeId("", "WordsTask")) is WordsTask
    assert registry._type_id_to_class[TypeId("", "WantsInt")] is WantsInt
    assert sd.BaseTask.__registry__ is registry

    class Pet(PolymorphicRoot):
        pass

    class Fish(Pet):
        fins: int = 2

    assert Pet._registry().get_class(TypeId("", "Fish")) is Fish
    with pytest.raises(KeyError, match="Fish2"):
        Pet._registry().get_class(TypeId("", "Fish2"))


# --------------------------------------------------------------------------------------------
# AliasTask in stardag's form


class ParityOrig(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


class ParityDown(sd.AutoTask[int]):
    x: sd.TaskLoads[int]

    def requires(self) -> sd.BaseTask:
        return self.x

    def run(self) -> None:
        self.output().save(self.x.output().load() + 1)


# The same two classes, for stardag
ALIAS_TASKS = """
class ParityOrig(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


class ParityDown(sd.AutoTask[int]):
    x: sd.TaskLoads[int]

    def requires(self):
        return self.x

    def run(self) -> None:
        self.output().save(self.x.output().load() + 1)
"""

STARDAG_ALIAS_SCRIPT = (
    "import json, sys\nimport stardag as sd\n"
    + ALIAS_TASKS
    + """
ours = json.loads(sys.stdin.read())
orig = ParityOrig(n=3)
loaded = ParityDown.model_validate(ours["down"])
alias = sd.AliasTask[int](aliased=sd.AliasedMetadata.from_task(orig))
print(json.dumps({
    "loaded_is_alias": type(loaded.x).__name__,
    "loaded_alias_id": str(loaded.x.id),
    "loaded_uri": loaded.x.aliased.uri,
    "loaded_value": loaded.x.output().load(),
    "loaded_down_id": str(loaded.id),
    "down_id": str(ParityDown(x=orig).id),
    "alias": alias.model_dump(mode="json"),
    "down": ParityDown(x=alias).model_dump(mode="json"),
}))
"""
)


def test_alias_dumps_in_stardags_form_and_round_trips_with_stardag(tmp_path: Path) -> None:
    root = tmp_path / "root"
    orig = ParityOrig(n=3)
    with target_roots_override({"default": str(root)}):
        orig.run()
        alias = sd.AliasTask[int](aliased=sd.AliasedMetadata.from_task(orig))
    dump = alias.model_dump(mode="json")
    assert set(dump["__aliased"]) == {"id", "uri", "loads_type"}
    assert dump["__aliased"]["id"] == str(orig.id)
    assert {k: v for k, v in dump.items() if k != "__aliased"} == orig.model_dump(mode="json")
    down = ParityDown(x=alias)
    assert down.id == ParityDown(x=orig).id

    env = {"HOME": str(tmp_path), "STARDAG_TARGET_ROOTS__DEFAULT": str(root)}
    result = subprocess.run(
        [str(stardag_python()), "-c", STARDAG_ALIAS_SCRIPT],
        input=json.dumps({"down": down.model_dump(mode="json")}),
        capture_output=True, text=True, timeout=180,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("STARDAG_")}, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    # stardag read our alias: the same id, URI and value, and the same downstream id
    assert theirs["loaded_is_alias"] == "AliasTask[int]"
    assert theirs["loaded_alias_id"] == str(orig.id)
    assert theirs["loaded_uri"] == alias.aliased.uri
    assert theirs["loaded_value"] == 3
    assert theirs["loaded_down_id"] == theirs["down_id"] == str(down.id)
    # ... and we read stardag's
    assert theirs["alias"].keys() == dump.keys()
    with target_roots_override({"default": str(root)}):
        from_stardag = ParityDown.model_validate(theirs["down"])
        assert type(from_stardag.x) is sd.AliasTask[int]
        assert from_stardag.x.aliased.id == orig.id
        assert from_stardag.x.output().load() == 3
        assert from_stardag.id == down.id
        top_level = sd.BaseTask.model_validate(theirs["alias"])
        assert type(top_level) is sd.AliasTask[int] and top_level.id == orig.id
        assert top_level.aliased.body == orig.model_dump(mode="json")
    assert from_stardag.model_dump(mode="json") == down.model_dump(mode="json")


def test_an_alias_round_trips_through_our_registry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    registry = SQLiteRegistry(tmp_path / "registry.sqlite3")
    with target_roots_override({"default": str(root)}):
        orig = ParityOrig(n=4)
        orig.run()
        alias = sd.AliasTask[int](aliased=sd.AliasedMetadata.from_task(orig))
        down = ParityDown(x=alias)
        summary = sd.build(down, registry=registry, progress=False)
        assert summary.status.value == "success"
        rebuilt = sd.BaseTask.from_registry(down.id, registry=registry)
        assert rebuilt == down and type(rebuilt.x) is sd.AliasTask[int]
        assert rebuilt.output().load() == 5


def test_aliases_in_the_older_form_still_load(tmp_path: Path) -> None:
    orig = ParityOrig(n=5)
    uri = str(tmp_path / "out.json")
    older = {
        "__namespace": "",
        "__name": "AliasTask[int]",
        "version": "",
        "aliased": {"id": str(orig.id), "uri": uri, "body": orig.model_dump(mode="json")},
    }
    loaded = ParityDown.model_validate({"x": older})
    assert type(loaded.x) is sd.AliasTask[int] and loaded.x.aliased.uri == uri
    assert loaded.id == ParityDown(x=orig).id
    named_elsewhere = {**older, "__name": "AliasTask[SomeModel]"}  # T from the aliased class
    assert type(sd.BaseTask.model_validate(named_elsewhere)) is sd.AliasTask[int]


def test_a_pickled_loads_type_cannot_run_code(tmp_path: Path) -> None:
    import base64
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    orig = ParityOrig(n=6)
    evil = {
        "__aliased": {
            "id": str(orig.id),
            "uri": str(tmp_path / "x.json"),
            "loads_type": base64.b64encode(pickle.dumps(Payload())).decode(),
        },
        **orig.model_dump(mode="json"),
    }
    with pytest.raises(pydantic.ValidationError, match="not a type; refused"):
        ParityDown.model_validate({"x": evil})
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# DEFAULT_TARGET_ROOT and the configured default root

HOME_SCRIPT = """
import importlib, json, os, sys
home_a, home_b, home_c = sys.argv[1:4]
os.environ["HOME"] = home_a
import {package}.config as config

def both():
    return [config.DEFAULT_TARGET_ROOT, config.get_config().target.roots["default"]]

seen = {{"start": both()}}
os.environ["HOME"] = home_b
seen["home_changed"] = both()
os.environ["HOME"] = home_c
config = importlib.reload(config)
seen["reloaded"] = both()
print(json.dumps(seen))
"""


def test_default_target_root_and_configured_root_agree_when_home_changes(
    tmp_path: Path,
) -> None:
    """stardag computes DEFAULT_TARGET_ROOT at import and its default root from it, so the
    two always agree (a reload reads a new HOME); ours agree too, and follow HOME at once."""
    homes = [str(tmp_path / name) for name in ("a", "b", "c")]
    prelude = "import sys\nsys.argv[1:] = " + repr(homes) + "\n"
    for package, python in (("stardag", stardag_python()), ("stardag_nb", sys.executable)):
        seen = json.loads(_run(python, prelude + HOME_SCRIPT.format(package=package)))
        for step, (constant, configured) in seen.items():
            assert constant == configured, (package, step, seen)
        assert seen["start"][0].startswith(homes[0])
        assert seen["reloaded"][0].startswith(homes[2])  # a reload reads the new HOME
    assert seen["home_changed"][0].startswith(homes[1])  # ours follows HOME without a reload


def test_configured_root_follows_home_after_it_was_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stardag_nb import config

    first = config.get_config().target.roots["default"]
    assert first == config.DEFAULT_TARGET_ROOT
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    assert config.get_config().target.roots["default"] == config.DEFAULT_TARGET_ROOT
    elsewhere = tmp_path / "elsewhere" / ".stardag" / "local-target-roots" / "default"
    assert str(elsewhere / "default") == config.DEFAULT_TARGET_ROOT
    assert config.config_provider.get().target.roots["default"] == config.DEFAULT_TARGET_ROOT

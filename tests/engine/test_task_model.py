"""Task classes, ids, polymorphic round trips and task-definition errors."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from unittest.mock import ANY

import pydantic
import pytest

import stardag_nb as sd
from stardag_nb.exceptions import ParameterError, TaskDefinitionError, TaskImplementationError

NS = uuid.UUID("9ca26b27-f7ee-4044-8b3c-e335dc5778dc")


class Leaf(sd.AutoTask[int]):
    n: int

    def run(self) -> None:
        self.output().save(self.n)


class Chain(sd.AutoTask[int]):
    prev: sd.TaskLoads[int] | None = None
    i: int = 0

    def run(self) -> None:
        self.output().save(self.i)


class Layer(sd.AutoTask[int]):
    parents: list[sd.TaskLoads[int]] = []
    layer: int
    j: int

    def run(self) -> None:
        self.output().save(self.j)


def test_id_is_uuid5_of_compact_sorted_json() -> None:
    task = Leaf(n=3)
    payload = json.dumps(
        {"__namespace": "", "__name": "Leaf", "version": "", "n": 3},
        separators=(",", ":"),
        sort_keys=True,
    )
    assert task.id == uuid.uuid5(NS, payload)


def test_nested_task_enters_id_through_its_own_id() -> None:
    leaf = Leaf(n=1)
    parent = Chain(prev=leaf, i=1)
    expected = uuid.uuid5(
        NS,
        json.dumps(
            {
                "__namespace": "",
                "__name": "Chain",
                "version": "",
                "prev": {"id": str(leaf.id)},
                "i": 1,
            },
            separators=(",", ":"),
            sort_keys=True,
        ),
    )
    assert parent.id == expected
    # stardag's public hash-mode dump of a task is its id reference
    assert parent.model_dump(mode="json", context={"mode": "hash"}) == {"id": str(parent.id)}


def test_ten_thousand_deep_param_chain_constructs_and_has_ids() -> None:
    task = Chain()
    for i in range(1, 10_000):
        task = Chain(prev=task, i=i)
    ids = set()
    node: Chain | None = task
    while node is not None:
        ids.add(node.id)
        node = node.prev  # type: ignore[assignment]
    assert len(ids) == 10_000
    # equality and hashing do not recurse through the chain
    assert task == task.model_copy() and hash(task) == hash(task.model_copy())


def test_layered_fully_connected_dag_ids() -> None:
    previous: list[Layer] = []
    for layer in range(10):
        previous = [Layer(parents=previous, layer=layer, j=j) for j in range(50)]
    sink = Layer(parents=previous, layer=10, j=0)
    assert len({t.id for t in previous}) == 50
    assert isinstance(sink.id, uuid.UUID)


def test_equal_params_give_equal_tasks_and_ids() -> None:
    assert Leaf(n=1) == Leaf(n=1)
    assert Leaf(n=1).id == Leaf(n=1).id
    assert Leaf(n=1) != Leaf(n=2)
    assert len({Leaf(n=1), Leaf(n=1), Leaf(n=2)}) == 2


def test_tasks_are_frozen() -> None:
    task = Leaf(n=1)
    with pytest.raises(pydantic.ValidationError):
        task.n = 2  # type: ignore[misc]


def test_model_copy_with_update_gets_a_new_id() -> None:
    a = Leaf(n=1)
    b = a.model_copy(update={"n": 2})
    assert b.n == 2 and b.id == Leaf(n=2).id != a.id


def test_dump_round_trips_polymorphically() -> None:
    task = Chain(prev=Chain(prev=Leaf(n=4), i=1), i=2)
    dump = task.model_dump(mode="json")
    assert dump["prev"]["prev"] == {"__namespace": "", "__name": "Leaf", "version": "", "n": 4}
    again = Chain.model_validate_json(json.dumps({k: v for k, v in dump.items()}))
    assert again == task and again.id == task.id
    assert isinstance(again.prev.prev, Leaf)  # type: ignore[union-attr]


def test_any_task_is_rebuilt_from_its_json_through_the_base_class() -> None:
    task = Chain(prev=Leaf(n=4), i=2)
    text = task.model_dump_json()
    for rebuilt in (
        sd.BaseTask.model_validate_json(text),
        sd.BaseTask.model_validate(json.loads(text)),
    ):
        assert type(rebuilt) is Chain and rebuilt == task and rebuilt.id == task.id
    with pytest.raises(TypeError, match="not a Chain"):
        Chain.model_validate(Leaf(n=1).model_dump(mode="json"))


def test_auto_namespace_uses_the_module_path() -> None:
    import types as _types

    module = _types.ModuleType("pkg_for_test.sub")
    sd.auto_namespace("pkg_for_test")
    try:
        exec(
            "import stardag_nb as sd\n"
            "class Named(sd.AutoTask[int]):\n"
            "    def run(self):\n"
            "        self.output().save(1)\n",
            module.__dict__,
        )
    finally:
        from stardag_nb.polymorphic import _module_namespaces

        _module_namespaces.pop("pkg_for_test", None)
    assert module.__dict__["Named"].get_namespace() == "pkg_for_test"


def test_task_loads_checks_the_loaded_type() -> None:
    class Words(sd.AutoTask[str]):
        def run(self) -> None:
            self.output().save("x")

    with pytest.raises(pydantic.ValidationError, match="produces str"):
        Chain(prev=Words())


def test_task_loads_rejects_unknown_type_id_with_a_hint() -> None:
    with pytest.raises(pydantic.ValidationError, match="Import the module"):
        Chain.model_validate({"prev": {"__namespace": "", "__name": "NoSuchTask", "version": ""}})


def test_hash_exclude_and_compat_default() -> None:
    class Fetch(sd.AutoTask[str]):
        url: str
        retries: Annotated[int, sd.StardagField(hash_exclude=True)] = 3
        strict: Annotated[bool, sd.StardagField(compat_default=False)] = False

        def run(self) -> None:
            self.output().save(self.url)

    base = Fetch(url="u")
    assert Fetch(url="u", retries=9).id == base.id
    assert Fetch(url="u", retries=9) != base  # equal ids, different excluded field
    assert Fetch(url="u", strict=True).id != base.id
    old_body = {"url": "u", "retries": 3}  # saved before `strict` existed
    assert Fetch.model_validate(old_body, context={"mode": "compat"}).id == base.id


def test_hashable_set_id_is_order_free() -> None:
    class Tags(sd.AutoTask[int]):
        tags: sd.HashableSet[str]

        def run(self) -> None:
            self.output().save(len(self.tags))

    assert Tags(tags={"b", "a", "c"}).id == Tags(tags=frozenset(["c", "b", "a"])).id
    assert Tags(tags={"a"}).id != Tags(tags={"b"}).id


def test_namespace_precedence() -> None:
    sd.namespace("mod.level", __name__)
    try:

        class InModule(sd.AutoTask[int]):
            def run(self) -> None:
                self.output().save(1)

        class WithAttr(sd.AutoTask[int]):
            __namespace__ = "attr.level"

            def run(self) -> None:
                self.output().save(1)

        class WithKwarg(sd.AutoTask[int], namespace_override="kw.level"):
            __namespace__ = "attr.level"

            def run(self) -> None:
                self.output().save(1)

        class Inherits(WithAttr):
            pass

    finally:
        from stardag_nb.polymorphic import _module_namespaces

        _module_namespaces.pop(__name__, None)
    assert InModule.get_namespace() == "mod.level"
    assert WithAttr.get_namespace() == "attr.level"
    assert WithKwarg.get_namespace() == "kw.level"
    assert Inherits.get_namespace() == "attr.level"
    assert InModule()._relpath.startswith("mod/level/InModule/")


def test_redefining_a_class_replaces_it_for_deserialization() -> None:
    def define(value: int) -> type[sd.AutoTask[int]]:
        class Redefined(sd.AutoTask[int]):
            x: int = 0

            def run(self) -> None:
                self.output().save(value)

        return Redefined

    first = define(1)
    second = define(2)
    loaded = Chain.model_validate(
        {"prev": {"__namespace": "", "__name": "Redefined", "version": "", "x": 0}}
    )
    assert type(loaded.prev) is second and type(loaded.prev) is not first


def test_two_classes_claiming_one_type_id_is_a_clear_error() -> None:
    class Clash(sd.AutoTask[int]):
        def run(self) -> None:
            self.output().save(1)

    with pytest.raises(TaskDefinitionError, match="name_override"):

        class Other(sd.AutoTask[int], name_override="Clash"):
            def run(self) -> None:
                self.output().save(2)


def test_concrete_task_without_run_is_rejected() -> None:
    with pytest.raises(TaskImplementationError, match="neither run"):

        class NoRun(sd.AutoTask[int]):
            pass


def test_run_as_classmethod_is_rejected() -> None:
    with pytest.raises(TaskDefinitionError, match="plain method"):

        class BadRun(sd.AutoTask[int]):
            @classmethod
            def run(cls) -> None:  # type: ignore[override]
                pass


def test_version_mismatch_refuses_to_run() -> None:
    class Versioned(sd.AutoTask[int]):
        __version__ = "2"
        version: str = "2"

        def run(self) -> None:
            self.output().save(2)

    assert Versioned()._relpath.startswith("Versioned/v2/")
    with pytest.raises(ParameterError, match="__version__='2'"):
        Versioned(version="1").run()


def test_dynamic_deps_detection() -> None:
    class Gen(sd.AutoTask[int]):
        def run(self):  # type: ignore[no-untyped-def]
            yield Leaf(n=1)
            self.output().save(1)

    class AGen(sd.AutoTask[int]):
        async def run_aio(self):  # type: ignore[no-untyped-def]
            yield Leaf(n=1)

    assert Gen.has_dynamic_deps() and AGen.has_dynamic_deps() and not Leaf.has_dynamic_deps()


def test_flatten_task_struct() -> None:
    a, b, c = Leaf(n=1), Leaf(n=2), Leaf(n=3)
    assert sd.flatten_task_struct({"x": [a, (b,)], "y": c}) == [a, b, c]
    assert sd.flatten_task_struct(None) == []
    with pytest.raises(TypeError, match="string"):
        sd.flatten_task_struct([a, "oops"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="int"):
        sd.flatten_task_struct([a, 3])  # type: ignore[list-item]


def test_task_ref_slug() -> None:
    ref = sd.TaskRef.from_task(Leaf(n=1))
    assert ref.slug == f"Leaf--{str(ref.id)[:8]}"


def test_non_json_parameter_is_a_clear_error() -> None:
    class Opaque:
        pass

    class TakesObject(sd.AutoTask[int]):
        thing: Opaque

        def run(self) -> None:
            self.output().save(1)

    with pytest.raises(pydantic.ValidationError, match="JSON-serializable.*hash_exclude"):
        TakesObject(thing=Opaque())


def test_registry_body_is_shallow_and_rebuilds_a_deep_chain() -> None:
    from stardag_nb._task import rebuild_from_bodies

    task = Chain()
    for i in range(1, 2_000):
        task = Chain(prev=task, i=i)
    bodies = {}
    node = task
    while node is not None:
        bodies[node.id] = node._registry_body()
        node = node.prev  # type: ignore[assignment]
    assert bodies[task.id]["prev"] == {"__task_ref": str(task.prev.id)}  # type: ignore[union-attr]
    assert bodies[task.id]["__name"] == "Chain"
    rebuilt = rebuild_from_bodies(task.id, bodies.__getitem__)
    assert rebuilt == task and rebuilt.id == task.id
    # a full nested dump (what stardag's registry stores) rebuilds too
    small = Chain(prev=Leaf(n=2), i=1)
    assert rebuild_from_bodies(small.id, lambda _: small.model_dump(mode="json")) == small


def test_registry_body_json_is_the_registry_body_as_compact_json() -> None:
    """The embedded registry stores ``_registry_body_json()``: the same document as
    ``_registry_body()``, nested tasks as references, floats and dates as JSON has them."""
    import datetime

    class Mixed(sd.AutoTask[int]):
        x: float
        when: datetime.date
        tags: tuple[str, ...]
        up: sd.BaseTask | None = None

        def run(self) -> None:
            self.output().save(1)

    cases = [
        Leaf(n=3),
        Chain(prev=Chain(prev=Leaf(n=1), i=2), i=3),
        Mixed(x=0.1, when=datetime.date(2026, 12, 7), tags=("a", "é"), up=Leaf(n=4)),
        Mixed(x=-0.0, when=datetime.date(1999, 1, 2), tags=()),
    ]
    for task in cases:
        text = task._registry_body_json()
        assert json.loads(text) == task._registry_body()
        assert text == json.dumps(task._registry_body(), separators=(",", ":"), ensure_ascii=False)


def test_fast_uuid5_equals_the_standard_library() -> None:
    import random
    import string

    from stardag_nb._task import _uuid5

    rng = random.Random(7)
    for _ in range(2000):
        name = "".join(rng.choice(string.printable + "éü✓") for _ in range(rng.randint(0, 80)))
        for namespace in (NS, uuid.uuid4()):
            ours, theirs = _uuid5(namespace, name), uuid.uuid5(namespace, name)
            assert ours == theirs and str(ours) == str(theirs) and hash(ours) == hash(theirs)
            assert ours.version == 5


def test_equal_calls_return_one_interned_instance() -> None:
    assert Leaf(n=1) is Leaf(n=1)
    assert Chain(prev=Leaf(n=1), i=0) is Chain(prev=Leaf(n=1), i=0)

    class Num(sd.AutoTask[int]):
        x: int | float | bool

        def run(self) -> None:
            self.output().save(1)

    # equal-but-different-type values never alias: 1, 1.0 and True give other tasks
    assert len({Num(x=1).id, Num(x=1.0).id, Num(x=True).id}) == 3
    assert Num(x=1) is not Num(x=1.0)


def test_interned_instances_are_forgotten_once_gone_and_keys_never_alias() -> None:
    """The intern table holds instances weakly: tasks nobody references any more leave
    it (a notebook making millions of tasks must not keep them), and a new call after
    that makes a fresh, equal task."""
    import gc

    from stardag_nb import _task

    class Point(sd.AutoTask[int]):
        x: int | float | bool | None = None
        name: str | float = ""

        def run(self) -> None:
            self.output().save(1)

    def interned() -> int:  # (this class's entries only: other tests' may come and go)
        return sum(1 for key in list(_task._interned) if key[0] is Point)

    made = [Point(x=i, name=str(i)) for i in range(2000)]
    assert interned() == 2000
    first_id = made[7].id
    del made
    gc.collect()
    assert interned() == 0
    assert Point(x=7, name="7").id == first_id

    # values of other kinds that compare equal never share an instance
    kinds = [Point(x=1), Point(x=1.0), Point(x=True), Point(x=None, name="1")]
    assert len({t.id for t in kinds}) == 4
    again = [Point(x=1), Point(x=1.0), Point(x=True)]
    assert all(a is b for a, b in zip(again, kinds[:3], strict=True))
    # a float's key is its hex text: that text as a string is another task
    as_float, as_text = Point(name=1.0), Point(name=(1.0).hex())
    assert (
        as_float is not as_text and as_float.name == 1.0 and as_text.name == "0x1.0000000000000p+0"
    )
    # another argument order is a cache miss, not another task
    assert Point(name="a", x=2).id == Point(x=2, name="a").id


def test_zero_and_negative_zero_are_other_tasks() -> None:
    """0.0 == -0.0, but the ids differ (their JSON differs, as in stardag): a task made
    with one while the other is alive must not be the other's interned instance."""

    class Shift(sd.AutoTask[float]):
        x: float

        def run(self) -> None:
            self.output().save(self.x)

    plus = Shift(x=0.0)
    minus = Shift(x=-0.0)
    assert minus is not plus
    assert minus.id == Shift.model_construct(x=-0.0).id != plus.id
    assert str(minus.x) == "-0.0"


def test_a_parameter_named_id_is_a_definition_error_naming_it() -> None:
    # a task's id is computed from its parameters; a parameter named 'id' would be
    # silently replaced by it
    with pytest.raises(TaskDefinitionError, match=r"WithId has a parameter named 'id'.*rename"):

        class WithId(sd.AutoTask[int]):
            id: int  # type: ignore[assignment]

            def run(self) -> None:
                self.output().save(self.id)

    with pytest.raises(TaskDefinitionError, match=r"parameter named 'id'"):

        @sd.task
        def by_id(id: int) -> int:
            return id


def _serializer_id_json(task: sd.BaseTask) -> str:
    """The id's JSON as the pydantic serializer's dict gives it (the general path)."""
    from stardag_nb._task import _HASH_ROOT_KEY

    context = {"mode": "hash", _HASH_ROOT_KEY: task}
    data = type(task).__pydantic_serializer__.to_python(task, mode="json", context=context)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _id_json(task: sd.BaseTask) -> str:
    return json.dumps(task._hash_jsonable(), separators=(",", ":"), sort_keys=True)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # unvalidated
def test_plain_classes_build_the_id_dict_directly_and_equal_the_serializer() -> None:
    """Tasks whose fields are plain scalars get their id dict without the serializer;
    it must be the serializer's dict for every value (or the class must not qualify)."""
    from unittest.mock import Mock

    class Scalars(sd.AutoTask[int]):
        a: int
        b: str = "x"
        c: bool = False
        d: float = 0.5

        def run(self) -> None:
            self.output().save(1)

    @sd.task
    def scalars(a: int, b: str = "x", c: bool = False, d: float = 0.5) -> int:
        return a  # parameters are T | TaskLoads[T]: a value, or a task producing one

    values = [
        {"a": 1},
        {"a": -(2**70), "b": 'é\n\x00\u2028"\\', "c": True, "d": 1e16},
        {"a": True, "d": 3},  # lax input: a bool for an int, an int for a float
        {"a": 0, "d": -0.0},
        {"a": 0, "d": float("nan")},  # not finite: the serializer decides
        {"a": 0, "d": float("inf")},
        {"a": 0, "d": 1e-7, "version": "2"},
    ]
    values.append({"a": Leaf(n=1), "b": "y"})  # a task for a value: the serializer's path
    for cls in (Scalars, scalars):
        for kwargs in values:
            if cls is Scalars and isinstance(kwargs["a"], sd.BaseTask):
                continue
            task = cls(**kwargs)  # type: ignore[operator]
            assert _id_json(task) == _serializer_id_json(task), (cls, kwargs)
            fresh = cls.model_construct(**kwargs)  # type: ignore[attr-defined]
            assert _id_json(fresh) == _serializer_id_json(fresh), (cls, kwargs)
        owner, _, fields = cls.__stardag_plain_id__  # type: ignore[attr-defined]
        assert owner is cls and [name for name, _ in fields] == ["version", *"abcd"]
    # model_construct may leave a field out: the serializer leaves it out of the id too
    partial = Scalars.model_construct(b="y")
    assert _id_json(partial) == _serializer_id_json(partial)
    # a value that only claims to be an int (its __class__) is not taken as one
    with pytest.raises(ParameterError):
        Scalars.model_construct(a=Mock(spec=int)).id  # noqa: B018


def test_a_rebuilt_plain_class_is_decided_again() -> None:

    class Rebuilt(sd.AutoTask[int]):
        a: int = 1

        def run(self) -> None:
            self.output().save(1)

    assert "a" in Rebuilt(a=5)._hash_jsonable()
    Rebuilt.model_fields["a"].exclude = True
    Rebuilt.model_rebuild(force=True)
    task = Rebuilt(a=6)
    assert _id_json(task) == _serializer_id_json(task)
    assert "a" not in task._hash_jsonable()


@pytest.mark.filterwarnings("ignore:.*json_encoders.*:DeprecationWarning")
def test_classes_that_change_their_id_dict_take_the_serializer_path() -> None:
    from pydantic import Field, field_serializer

    from stardag_nb.base_model import StardagBaseModel

    class Options(sd.AutoTask[int]):
        a: Annotated[int, sd.StardagField(hash_exclude=True)] = 1
        b: int = 2

        def run(self) -> None:
            self.output().save(1)

    class Aliased(sd.AutoTask[int]):
        a: int = Field(1, serialization_alias="A")

        def run(self) -> None:
            self.output().save(1)

    class Serialized(sd.AutoTask[int]):
        a: int = 1

        @field_serializer("a")
        def _a(self, value: int) -> int:
            return value * 10

        def run(self) -> None:
            self.output().save(1)

    class Optional_(sd.AutoTask[int]):
        a: int | None = None

        def run(self) -> None:
            self.output().save(1)

    class Upstream(sd.AutoTask[int]):
        up: sd.TaskLoads[int]

        def run(self) -> None:
            self.output().save(1)

    class Encoded(sd.AutoTask[int]):
        model_config = pydantic.ConfigDict(json_encoders={int: lambda v: v * 100})
        a: int = 1

        def run(self) -> None:
            self.output().save(1)

    class OwnSchema(sd.AutoTask[int]):
        a: int = 1

        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
            from pydantic_core import core_schema

            schema = handler(source)
            schema["serialization"] = core_schema.plain_serializer_function_ser_schema(
                lambda value: {"custom": 1}
            )
            return schema

        def run(self) -> None:
            self.output().save(1)

    class OwnReference(sd.AutoTask[int]):
        a: int = 1

        def _hash_reference(self, context: Any) -> dict[str, str] | None:
            return {"id": "fixed"}

        def run(self) -> None:
            self.output().save(1)

    class Salted(StardagBaseModel):  # a mixin whose hook runs after the library's
        def _serialize(self, handler: Any, info: Any, mode: str | None) -> Any:
            data = super()._serialize(handler, info, mode)
            if mode == "hash":
                data["salt"] = "m"
            return data

    class WithMixin(sd.AutoTask[int], Salted):
        a: int = 1

        def run(self) -> None:
            self.output().save(1)

    tasks = [
        *(Options(), Aliased(), Serialized(), Optional_(), Upstream(up=Leaf(n=1)), Encoded()),
        *(OwnSchema(), OwnReference(), WithMixin()),
    ]
    for task in tasks:
        assert type(task).__stardag_plain_id__ == (type(task), ANY, None), type(task)
        assert _id_json(task) == _serializer_id_json(task)
    assert "a" not in Options()._hash_jsonable()
    assert Serialized()._hash_jsonable()["a"] == 10
    assert WithMixin()._hash_jsonable()["salt"] == "m"


def test_a_class_that_claims_to_equal_int_is_not_plain() -> None:
    from stardag_nb._task import _plain_kind

    class ClaimsInt(type):
        def __eq__(cls, other: object) -> bool:
            return other is int or type.__eq__(cls, other)

        __hash__ = type.__hash__

    class Odd(metaclass=ClaimsInt):
        pass

    assert Odd == int  # noqa: E721 (the point: it claims to)
    assert _plain_kind(Odd) is None and _plain_kind(Odd | sd.TaskLoads[int]) is None
    assert _plain_kind(int) is int and _plain_kind(int | sd.TaskLoads[int]) is int
